"""The cyphy CLI against a sim node running the real firmware: set, get, monitor, plot,
discover, repl; exit codes; no traceback for a user's error."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pexpect
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import cyphy, tool  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402


@pytest.fixture
def node(sim_nodes, monkeypatch):
    boot(sim_nodes, "cli")
    monkeypatch.setenv("CYPHY_KEY", KEY_HEX)
    return "sim://cli"


def no_traceback(p) -> None:
    assert "Traceback" not in p.stdout + p.stderr, p.stderr


def test_set_get_and_exit_codes(node):
    p = cyphy("set", node, "oven.setpoint=45", "oven.kp=3.5")
    assert "oven.setpoint = 45.0: acknowledged" in p.stdout
    assert cyphy("get", node, "oven.setpoint").stdout.strip() == "45.0"
    state = json.loads(cyphy("get", node, "oven", "--json").stdout)
    assert state["kp"] == 3.5 and state["mode"] == "auto"
    p = cyphy("set", node, "oven.setpoint=1000", ok=False)     # outside the sensor's range
    assert p.returncode == 3 and "rejected by the node: out of range" in p.stderr
    no_traceback(p)
    p = cyphy("set", node, "setpoint60", ok=False)
    assert p.returncode == 2 and "LOOP.KEY=VALUE" in p.stderr
    p = cyphy("get", node, "oven.colour", ok=False)
    assert p.returncode == 3 and "no parameter oven.colour" in p.stderr
    p = cyphy("get", "sim://nobody", "oven", ok=False)
    assert p.returncode == 1 and "not running" in p.stderr
    no_traceback(p)
    env_less = {k: v for k, v in os.environ.items() if k != "CYPHY_KEY"}
    from helpers import run
    p = run([tool("cyphy"), "get", node, "oven"], ok=False, env=env_less)
    assert p.returncode == 1 and "no key for it was found" in p.stderr
    no_traceback(p)


def test_monitor_records_and_plot_draws(node, tmp_path):
    rec = tmp_path / "run.csv"
    p = cyphy("monitor", node, "--seconds", "2", "--period-ms", "50", "--csv", str(rec))
    assert "oven: sp 60" in p.stdout and "link: frames" in p.stdout
    rows = list(csv.DictReader(rec.open()))
    assert len(rows) > 10 and rows[0]["loop"] == "oven" and float(rows[-1]["setpoint"]) == 60.0
    p = cyphy("plot", str(rec))
    png = rec.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "1 loop(s): oven" in p.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    p = cyphy("plot", str(bad), ok=False)
    assert p.returncode == 1 and "not a cyphy monitor recording" in p.stderr
    no_traceback(p)


def test_discover_lists_sim_nodes(node):
    found = json.loads(cyphy("discover", "--json", "--timeout", "0.3").stdout)
    assert [s["url"] for s in found["sim"]] == ["sim://cli"]
    assert found["serial"] == [] or all("vid_pid" in s for s in found["serial"])


def test_repl_keeps_the_loops_running(node):
    t0 = int(cyphy("get", node, "oven.ticks").stdout)
    child = pexpect.spawn(tool("cyphy"), ["repl", node], timeout=10, env=dict(os.environ))
    child.expect_exact("Ctrl-] leaves")
    child.send("\r")
    child.expect_exact(">>> ")
    child.send("print(6*7)\r")
    child.expect_exact("42")
    child.sendcontrol("]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert int(cyphy("get", node, "oven.ticks").stdout) > t0


def test_every_command_has_help():
    from click.testing import CliRunner

    from cyphy.cli import cli

    def walk(group, path):
        for name, cmd in group.commands.items():
            yield path + [name], cmd
            if hasattr(cmd, "commands"):
                yield from walk(cmd, path + [name])

    runner = CliRunner()
    for path, _ in walk(cli, []):
        r = runner.invoke(cli, [*path, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, path


def test_shell_completion_script():
    p = cyphy("completion", "bash")
    assert "_CYPHY_COMPLETE=bash_complete" in p.stdout and "complete -o nosort -F" in p.stdout
