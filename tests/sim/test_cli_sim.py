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
