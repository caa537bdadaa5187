"""Issue 14, items 1 and 6 for `cyphy flash` on a sim node: Ctrl-C at any moment ends it
within 2 s with one line saying what state the node is in (untouched; or blank, and the
exact command to run again), and the node's console answers the next command; options that
do not apply to a sim node are refused in one line; flash says what it erases and what to
run next; bad inputs are one line, exit 1 or 2, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from helpers import cyphy, tool, wait_for_log  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

from cyphy import flashimage  # noqa: E402
from cyphy.device import Device  # noqa: E402


@pytest.fixture
def node(sim_nodes, tmp_path):
    n = sim_nodes("fi", baud=0, bench=THERMAL)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    cyphy("flash", "--port", "sim://fi", "--config", str(cfg))
    return n, cfg


def start(cfg: Path) -> subprocess.Popen:
    # its own session, as a shell's foreground job: a terminal's Ctrl-C reaches the group
    return subprocess.Popen([tool("cyphy"), "flash", "--port", "sim://fi", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def wait_stderr_line(p: subprocess.Popen, prefix: bytes, timeout: float = 30) -> bytes:
    line = b""
    end = time.monotonic() + timeout
    while not line.startswith(prefix):
        assert time.monotonic() < end and p.poll() is None, f"no {prefix!r} line"
        line = p.stderr.readline()
    return line


def wait_child(p: subprocess.Popen, timeout: float = 30) -> None:
    """Until p runs esptool (its child process)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        try:
            kids = [c for t in os.listdir(f"/proc/{p.pid}/task")
                    for c in Path(f"/proc/{p.pid}/task/{t}/children").read_text().split()]
            if any(b"-m\x00esptool\x00" in Path(f"/proc/{c}/cmdline").read_bytes() for c in kids):
                return
        except OSError:
            pass
        time.sleep(0.002)
    raise AssertionError("no esptool")


def read_at(path: Path, off: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def interrupt(p: subprocess.Popen, group: bool) -> tuple[int, float, str]:
    t0 = time.monotonic()
    (os.killpg if group else os.kill)(p.pid, signal.SIGINT)
    rc = p.wait(timeout=10)
    took = time.monotonic() - t0
    err = p.stderr.read().decode()
    return rc, took, err


def answers(n) -> bool:
    with Device.open(n.port, timeout=10) as dev:
        return dev.exec("print(6 * 7)").strip() == "42"


def test_ctrl_c_before_esptool_writes_leaves_the_node_untouched(node):
    n, cfg = node
    log = n.node.console_log
    at = log.stat().st_size
    p = start(cfg)
    wait_child(p)                               # esptool started: it is still loading
    rc, took, err = interrupt(p, group=False)   # `kill -INT`: esptool must be stopped by cyphy
    lines = err.strip().splitlines()
    assert rc == 130 and took < 2.0, (rc, took, err)
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted: ") and "as it was" in lines[0], err
    assert "esptool had not begun to write" in lines[0], err
    assert "Traceback" not in err
    wait_for_log(log, b"running 1 loop", after=min(at, log.stat().st_size))  # booted as before
    n.port = n.node.state()["port"]
    assert answers(n)


def test_ctrl_c_while_esptool_writes_says_blank_and_the_command_again(node):
    n, cfg = node
    p = start(cfg)
    wait_stderr_line(p, b"flash: sim://fi: erasing the whole flash")
    # esptool has erased the chip once the filesystem's first block reads erased (it is
    # written last, in about a second and a half)
    end = time.monotonic() + 20
    while read_at(n.node.image, 0x200000, 32) != b"\xff" * 32:
        assert time.monotonic() < end and p.poll() is None, "the erase never began"
        time.sleep(0.002)
    rc, took, err = interrupt(p, group=True)      # a terminal's Ctrl-C: esptool gets it too
    lines = err.strip().splitlines()
    assert rc == 130 and took < 2.0, (rc, took, err)
    assert len(lines) == 1 and "blank or partly written" in lines[0] and lines[0].startswith(
        "Error: interrupted: esptool was writing: sim://fi's flash"), err
    m = re.search(r"run `(cyphy flash [^`]*)` again", lines[0])
    assert m, err
    # the node waits in its ROM loader; the command it names brings it back
    again = shlex.split(m.group(1))
    p2 = subprocess.run([tool("cyphy"), *again[1:]], capture_output=True, text=True, timeout=60)
    assert p2.returncode == 0, p2.stderr
    n.port = n.node.state()["port"]
    assert answers(n)


def test_flash_says_what_it_erases_and_refuses_options_a_sim_ignores(node, tmp_path):
    n, cfg = node
    cyphy("provision", "--port", "sim://fi", "--new-key")
    with Device.open(n.node.state()["port"]) as dev:
        dev.write_atomic("/autotune.json", b'{"oven": {"kp": 5.0}}')
    for opts in (["--baud", "921600"], ["--before", "no-reset"], ["--after", "no-reset"]):
        p = cyphy("flash", "--port", "sim://fi", "--config", str(cfg), *opts, ok=False)
        assert p.returncode == 2 and p.stdout == "", p
        assert p.stderr.count("\n") == 1 and f"{opts[0]} does not apply to sim://fi" in p.stderr, p.stderr
    assert flashimage.read_vfs(n.node.image).get("/autotune.json")   # refused: nothing touched
    p = cyphy("flash", "--port", "sim://fi", "--config", str(cfg))
    assert ("flash: sim://fi: erasing the whole flash: the node loses its key and Wi-Fi credentials "
            "(/secrets.json), its persisted tuning (autotune results) (/autotune.json) and its config "
            "(/config.json)") in p.stderr, p.stderr
    assert "next, `cyphy provision --port sim://fi --reset`" in p.stdout, p.stdout
    files = flashimage.read_vfs(n.node.image)
    assert "/secrets.json" not in files and "/autotune.json" not in files


@pytest.mark.parametrize("kind", ["missing", "dir", "binary", "bench", "list", "not-config", "bad-name",
                                  "bad-baud", "not-running"])
def test_bad_input_is_one_line(sim_nodes, tmp_path, kind):
    cfg = tmp_path / "c.json"
    port = "sim://nobody"
    args = ["--config", str(cfg)]
    if kind == "missing":
        cfg = tmp_path / "nope.json"
        args = ["--config", str(cfg)]
    elif kind == "dir":
        args = ["--config", str(tmp_path)]
    elif kind == "binary":
        cfg.write_bytes(bytes(range(256)))
    elif kind == "bench":
        cfg.write_text(json.dumps(THERMAL))
    elif kind == "list":
        cfg.write_text("[1, 2]")
    elif kind == "not-config":
        cfg.write_text('{"schema": 1}')
    elif kind == "bad-name":
        cfg.write_text(json.dumps(CONFIG))
        args += ["--name", "9oven"]
    elif kind == "bad-baud":
        port = "/dev/ttyNOPE0"
        cfg.write_text(json.dumps(CONFIG))
        args += ["--baud", "-5"]
    elif kind == "not-running":
        cfg.write_text(json.dumps(CONFIG))
    for cmd in (["flash"], ["provision"]):
        p = cyphy(*cmd, "--port", port, *args, ok=False)
        err = p.stderr.strip().splitlines()
        assert p.returncode in (1, 2), (cmd, kind, p)
        assert "Traceback" not in p.stderr and err and err[-1].startswith("Error: "), (cmd, kind, p.stderr)
        if p.returncode == 1:
            assert len(err) == 1, (cmd, kind, p.stderr)
