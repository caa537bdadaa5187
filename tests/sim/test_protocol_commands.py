"""Commands and events over the protocol against the real firmware: config patch, reboot,
fault events, clear; rejected commands name their reason."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402

from cyphy.client import CommandRejected, ProtocolError, Session  # noqa: E402
from cyphy.links import SerialLink  # noqa: E402
from cyphy import codec as P  # noqa: E402

KEY = P.key_from_hex(KEY_HEX)

# The thermal bench whose temperature sensor reads 0 V (below the valid range) from
# t = 6 s to t = 9 s of the node's (real) time.
STUCK = copy.deepcopy(THERMAL)
STUCK["plant"]["disturbances"] = [
    {"at_s": 6, "sensor": "temperature", "fault": "stuck", "value": -10},
    {"at_s": 9, "sensor": "temperature", "fault": "none"}]


def wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_fault_events_reach_the_host(sim_nodes):
    port = boot(sim_nodes, bench=STUCK)
    with Session(SerialLink(port), KEY) as s:
        s.open()
        s.subscribe(100)
        assert wait(lambda: any(e["kind"] == P.EV_FAULT for e in s.events), 15)
        ev = [e for e in s.events if e["kind"] == P.EV_FAULT][0]
        assert ev["text"] == "sensor" and ev["loop"] == 0 and ev["value"] < 10000  # below valid
        # the loop went fail-safe (telemetry status), and recovers when the sensor does
        assert wait(lambda: s.telemetry.get(timeout=1)["loops"]["oven"]["status"] >> 2 & 1, 5)
        assert wait(lambda: not s.telemetry.get(timeout=1)["loops"]["oven"]["status"] >> 2 & 1, 10)


@pytest.fixture
def node(sim_nodes):
    return boot(sim_nodes)


def test_config_patch_is_checked_and_atomic(node):
    with Session(SerialLink(node), KEY) as s:
        s.open()
        with pytest.raises(CommandRejected) as e:
            s.command(P.cmd_config('{"loops": [{"name": "oven", "rate_hz": 0}]}'))
        assert e.value.reason == P.R_OUT_OF_RANGE and "loops[0]" in e.value.text
        with pytest.raises(CommandRejected, match="JSON"):
            s.command(P.cmd_config("{not json"))
        assert s.command(P.cmd_config('{"node_id": 7, "name": "oven-2"}')) == b"applied at the next boot"
        assert s.read("info")["node_id"] == 1   # applied at the next boot, not now
        s.command(P.cmd_reboot(50))
    time.sleep(3)
    with Session(SerialLink(node), KEY) as s:
        h = s.open()
        assert (h.node_id, h.name) == (7, "oven-2")
        assert s.read("oven.setpoint") == 60.0


def test_rejections_say_why(node):
    with Session(SerialLink(node), KEY) as s:
        s.open()
        with pytest.raises(CommandRejected, match="no loop 'fan'"):
            s.set("fan", "setpoint", 1.0)
        with pytest.raises(CommandRejected, match="no parameter oven.colour"):
            s.read("oven.colour")
        with pytest.raises(CommandRejected) as e:
            s.command(bytes((99,)))
        assert e.value.reason == P.R_UNKNOWN_COMMAND
        with pytest.raises(CommandRejected) as e:
            s.command(P.cmd_set(5, 0, 1.0))
        assert e.value.reason == P.R_UNKNOWN_TARGET
        with pytest.raises(CommandRejected, match="mode"):
            s.set("oven", "mode", "turbo")
        s.set("oven", "mode", "manual")
        s.set("oven", "output", 25.0)
        assert s.read("oven")["mode"] == "manual"
        assert wait(lambda: s.read("oven.output") == 25.0, 3)   # from the next tick on
        s.command(bytes((P.CMD_CLEAR,)))
        assert s.read("info")["counters"]["applied"] >= 3


def test_no_firmware_is_a_clear_error(sim_node):
    # a MicroPython board without cyphy's firmware: the REPL says NameError
    with pytest.raises(ProtocolError, match="node"):
        with Session(SerialLink(sim_node.port), KEY, timeout=1.0) as s:
            s.open()
