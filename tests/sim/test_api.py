"""cyphy.connect(): the Python API over serial (sim://) and UDP, against the real firmware."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from protonode import KEY_HEX, boot  # noqa: E402

import cyphy  # noqa: E402
from cyphy.api import CommandRejected, LinkError, ProtocolError  # noqa: E402


@pytest.fixture
def node(sim_nodes):
    boot(sim_nodes, "api")
    return "sim://api"


def test_connect_set_get_telemetry_exec(node, monkeypatch):
    monkeypatch.setenv("CYPHY_KEY", KEY_HEX)
    with cyphy.connect(node) as n:
        assert n.name == "oven-1" and n.loops == ["oven"]
        n.set("oven.setpoint", 42.5)
        assert n.get("oven.setpoint") == 42.5
        assert n.get("oven")["mode"] == "auto"
        samples = n.telemetry(period_ms=50)
        first = next(samples)
        assert first["loops"]["oven"]["setpoint"] == 42.5
        assert n.exec("print(node.loop('oven').setpoint)").strip() == "42.5"
        assert n.get("oven.setpoint") == 42.5          # a new session after exec
        with pytest.raises(LinkError, match="ZeroDivisionError"):
            n.exec("1/0")
        with pytest.raises(CommandRejected, match="loop.key"):
            n.set("setpoint", 1)
        assert n.link_stats.bad_tag == 0


def test_errors_are_clear(node, monkeypatch, tmp_path):
    monkeypatch.delenv("CYPHY_KEY", raising=False)
    with pytest.raises(ProtocolError, match="no key for it was found"):
        cyphy.connect(node)
    bad = tmp_path / "k"
    bad.write_text("zz")
    with pytest.raises(LinkError, match="hex digits"):
        cyphy.connect(node, key_file=str(bad))
    with pytest.raises(LinkError, match="not running"):
        cyphy.connect("sim://nobody")
    with pytest.raises(LinkError, match="unknown link"):
        cyphy.connect("ftp://x")
    with pytest.raises(LinkError, match="no such serial port"):
        cyphy.connect("serial:///dev/ttyNOPE0")
