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
    assert cyphy("get", node, "oven.setpoint").stdout.strip() == "45 degC"   # the config's units
    assert cyphy("get", node, "oven.setpoint", "--json").stdout.strip() == "45.0"
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


def test_set_is_all_or_none(node):
    """Issue 14: `set a.setpoint=120 a.kp=-5` used to apply the setpoint and refuse kp."""
    before = json.loads(cyphy("get", node, "oven", "--json").stdout)
    p = cyphy("set", node, "oven.setpoint=50", "oven.kp=-5", ok=False)
    assert p.returncode == 3 and p.stdout == ""
    [line] = p.stderr.splitlines()
    assert "oven.kp" in line and "nothing was applied" in line, line
    state = json.loads(cyphy("get", node, "oven", "--json").stdout)
    assert state["kp"] == before["kp"] > 0
    assert state["setpoint"] == before["setpoint"] == 60.0, state  # not applied either
    for bad, why in (("oven.setpoint=abc", "not a number"), ("oven.setpoint=", "no value"),
                     ("oven.mode=fast", "auto or manual")):
        p = cyphy("set", node, "oven.kp=2", bad, ok=False)
        assert p.returncode == 2 and why in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    assert json.loads(cyphy("get", node, "oven", "--json").stdout)["kp"] != 2.0
    cyphy("set", node, "oven.setpoint=55", "oven.kp=2.5", "oven.mode=auto")
    state = json.loads(cyphy("get", node, "oven", "--json").stdout)
    assert (state["setpoint"], state["kp"], state["mode"]) == (55.0, 2.5, "auto")


def test_get_prints_tables_with_units(node):
    info = cyphy("get", node, "info").stdout
    assert "units" in info and "measurement degC, output %" in info and "{" not in info
    assert json.loads(cyphy("get", node, "info", "--json").stdout)["units"] == {
        "oven": {"measurement": "degC", "output": "%"}}
    state = cyphy("get", node, "state").stdout.splitlines()
    assert state[0].split()[:5] == ["loop", "mode", "setpoint", "measurement", "output"]
    assert "60 degC" in state[1] and "%" in state[1]
    loop = cyphy("get", node, "oven").stdout
    assert "setpoint" in loop and "60 degC" in loop and "{" not in loop
    stats = cyphy("get", node, "stats").stdout.splitlines()
    assert "jitter p99 us" in stats[0] and stats[1].startswith("oven ")
    faults = cyphy("get", node, "faults").stdout
    records = json.loads(cyphy("get", node, "faults", "--json").stdout)
    if records:
        assert "time" in faults and "kind" in faults and "[" not in faults
    else:
        assert faults.strip() == "no faults recorded"


def test_fault_records_read_for_people():
    """A record's time: the wall clock when the node knew it, else its ticks; a sensor
    fault's value in the sensor's units (milli-units on the wire)."""
    import time as _time
    from datetime import datetime

    from cyphy.cli.node import format_get

    wall = int(_time.time() * 1000)
    out = format_get("faults", [[5148, "-", "comms", 5100], [7000, "oven", "sensor", 7041, None],
                                [9000, "oven", "sensor", -10000, wall]],
                     {"oven": {"measurement": "degC", "output": "%"}})
    lines = out.splitlines()
    assert "t+5.148 s" in lines[2] and "5.1 s without a host" in lines[2]
    assert "t+7.000 s" in lines[3] and "7.041 degC" in lines[3]
    assert datetime.fromtimestamp(wall / 1000).strftime("%Y-%m-%d %H:%M:%S") in lines[4]
    assert "-10 degC" in lines[4] and "[" not in out


def test_monitor_records_and_plot_draws(node, tmp_path):
    rec = tmp_path / "run.csv"
    p = cyphy("monitor", node, "--seconds", "2", "--period-ms", "50", "--csv", str(rec))
    assert "oven: sp 60" in p.stdout and "link: frames" in p.stdout
    assert "oven: sp 60 degC y " in p.stdout and " %" in p.stdout   # the config's units
    assert "signal" not in p.stdout          # a node without blocks or device channels
    rows = list(csv.DictReader(rec.open()))
    assert len(rows) > 10 and rows[0]["loop"] == "oven" and float(rows[-1]["setpoint"]) == 60.0
    assert (rows[0]["measurement_units"], rows[0]["output_units"]) == ("degC", "%")
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
