"""The `cyphy sim` command line, run as a subprocess."""

from __future__ import annotations

import json
import os

import pytest

from cyphy.sim import control
from helpers import cyphy, mpremote


@pytest.fixture
def home(cyphy_home):
    yield cyphy_home
    for row in control.listing(cyphy_home):  # power off whatever the CLI started
        control.stop(row["name"], home=cyphy_home)


def test_start_list_stop(home):
    p = cyphy("sim", "start", "cli-node", "--baud", "0")
    port = p.stdout.splitlines()[-1]
    assert port == str(home / "sim" / "cli-node" / "tty")
    assert os.path.exists(port) and os.path.realpath(port).startswith("/dev/pts/")
    assert mpremote(port, "exec", "print('up')") == "up\n"

    assert cyphy("sim", "list").stdout.split() == ["cli-node", "running", port]
    [row] = json.loads(cyphy("sim", "list", "--json").stdout)
    assert (row["name"], row["running"], row["port"], row["baud"]) == ("cli-node", True, port, 0)

    again = cyphy("sim", "start", "cli-node", "--baud", "0")  # idempotent: same port
    assert again.stdout.splitlines()[-1] == port

    cyphy("sim", "stop", "cli-node")
    assert cyphy("sim", "list").stdout.split() == ["cli-node", "stopped"]
    [row] = json.loads(cyphy("sim", "list", "--json").stdout)
    assert row["running"] is False and row["port"] is None
    assert "not running" in cyphy("sim", "stop", "cli-node").stdout


def test_list_when_empty(home):
    assert json.loads(cyphy("sim", "list", "--json").stdout) == []
    assert "no sim nodes" in cyphy("sim", "list").stdout


@pytest.mark.parametrize("cmd", [[], ["sim"], ["sim", "start"], ["sim", "stop"], ["sim", "list"]])
def test_help(home, cmd):
    out = cyphy(*cmd, "--help").stdout
    assert out.startswith("Usage: cyphy") and "--help" in out


@pytest.mark.parametrize("args, words", [
    (["start", "bad/name", "--baud", "0"], "invalid node name 'bad/name'"),
    (["start", "has space", "--baud", "0"], "invalid node name"),
    (["start", "--baud", "0", "--", "-dash"], "invalid node name"),
    (["start", "ok", "--baud", "-1"], "--baud must be 0"),
    (["stop", "../escape"], "invalid node name"),
])
def test_bad_input_is_a_one_line_error(home, args, words):
    p = cyphy("sim", *args, ok=False)
    assert p.returncode != 0 and p.stdout == ""
    [line] = p.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("Error: ") and words in line
    assert not (home / "sim" / "ok").exists()  # nothing was created


def test_non_numeric_baud_is_a_usage_error(home):
    p = cyphy("sim", "start", "ok", "--baud", "fast", ok=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--baud'")


def one_line(p) -> str:
    assert "Traceback" not in p.stderr and p.returncode in (1, 2), (p.returncode, p.stderr)
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


@pytest.mark.parametrize("heap", ["abc", "1K", "1.5M", "-5", "512KB"])
def test_heap_is_checked_up_front(home, heap):
    """Issue 14: `--heap abc` or `1K` crash-looped for 20 s, then timed out."""
    import time

    t0 = time.monotonic()
    line = one_line(cyphy("sim", "start", "h", "--heap", heap, "--baud", "0", ok=False))
    assert "--heap" in line and ("512K" in line or "192K" in line), line
    assert time.monotonic() - t0 < 5 and not (home / "sim" / "h").exists()


def test_a_heap_too_small_to_boot_is_said_at_once(home):
    import time

    t0 = time.monotonic()
    line = one_line(cyphy("sim", "start", "h", "--psram", "--heap", "110000", "--baud", "0", ok=False))
    assert "did not boot" in line and "110000 bytes" in line and "192K" in line, line
    assert time.monotonic() - t0 < 10
    out = cyphy("sim", "start", "h", "--heap", "256k", "--baud", "0").stdout  # K or k, as bytes
    assert "booted" in out


def test_bench_must_be_a_bench(home, tmp_path):
    """Issue 14: a node config given as --bench was taken, and every input read 0."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "firmware" / "config.example.json"
    line = one_line(cyphy("sim", "start", "b", "--bench", str(config), ok=False))
    assert "looks like a node config" in line and '"wiring"' in line and "cyphy flash --config" in line
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)))
    assert "binary" in one_line(cyphy("sim", "start", "b", "--bench", str(binary), ok=False))
    assert not (home / "sim" / "b").exists()


def test_a_boot_timeout_shows_only_this_boot(home):
    """Issue 14: `--timeout 0.01` printed an earlier boot's log lines as if they were its own."""
    cyphy("sim", "start", "t", "--baud", "0")
    cyphy("sim", "stop", "t")
    earlier = (home / "sim" / "t" / "supervisor.log").read_text()
    assert "reset=power" in earlier
    line = one_line(cyphy("sim", "start", "t", "--baud", "0", "--timeout", "0.01", ok=False))
    assert "did not boot" in line and "--timeout 0.01" in line, line
    assert "reset=" not in line and "power on" not in line
    assert cyphy("sim", "list").stdout.split() == ["t", "stopped"]  # powered off again


def test_the_python_api_checks_the_same_things(home):
    """cyphy.sim.control.start (what the HIL plugin and scripts call) refuses a bad heap
    and a node config as a bench before it makes anything, and a boot failure's message
    holds only this boot's log."""
    from pathlib import Path

    from cyphy.sim.nodes import SimError

    config = json.loads((Path(__file__).resolve().parents[2] / "firmware" / "config.example.json").read_text())
    with pytest.raises(SimError, match="--heap"):
        control.start("api", heap="abc", home=home)
    with pytest.raises(SimError, match="looks like a node config"):
        control.start("api", bench=config, home=home)
    assert not (home / "sim" / "api").exists()
    control.start("api", baud=0, home=home)
    control.stop("api", home=home)
    with pytest.raises(SimError) as e:
        control.start("api", baud=0, timeout=0.01, home=home)
    assert "reset=" not in str(e.value) and "power on" not in str(e.value), str(e.value)


def test_delete(home):
    cyphy("sim", "start", "d", "--baud", "0")
    line = one_line(cyphy("sim", "delete", "d", ok=False))
    assert "running" in line and "--force" in line
    assert (home / "sim" / "d" / "flash.bin").exists()
    cyphy("sim", "stop", "d")
    assert cyphy("sim", "delete", "d").stdout.strip() == "node d: deleted"
    assert not (home / "sim" / "d").exists()
    cyphy("sim", "start", "d", "--baud", "0")
    assert "deleted" in cyphy("sim", "delete", "d", "--force").stdout
    assert json.loads(cyphy("sim", "list", "--json").stdout) == []
    assert "no sim node named 'd'" in one_line(cyphy("sim", "delete", "d", ok=False))
