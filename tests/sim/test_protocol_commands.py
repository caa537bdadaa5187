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


def test_set_applies_all_or_none(node):
    """Several assignments in one SET: a refusal of any leaves every one unapplied (the
    node checks all before it applies any, between two control passes), and the refusal
    names the assignment in the config's words and engineering units."""
    with Session(SerialLink(node), KEY) as s:
        s.open()
        before = s.read("oven")
        with pytest.raises(CommandRejected) as e:
            s.set_many([("oven", "setpoint", 120.0), ("oven", "kp", -5.0)])
        assert e.value.reason == P.R_OUT_OF_RANGE
        assert e.value.text.startswith("oven.kp = -5.0 refused, nothing was applied: gains must")
        assert '"direction": "reverse"' in e.value.text and "reverse=True" not in e.value.text
        after = s.read("oven")
        assert (after["setpoint"], after["kp"]) == (before["setpoint"], before["kp"]) == (60.0, 4.9)
        # out of the sensor's valid range: said in degC, with the channel's name, not milli-units
        with pytest.raises(CommandRejected) as e:
            s.set_many([("oven", "kp", 2.0), ("oven", "setpoint", 250.0)])
        assert "250.0 is outside 10.0..149.0 degC" in e.value.text and '"temp"' in e.value.text
        assert "000" not in e.value.text.replace("250.0", "")
        assert s.read("oven.kp") == 4.9
        # a gain after another gain of the same loop: both checked together, both applied
        s.set_many([("oven", "kp", 2.0), ("oven", "ki", 0.5), ("oven", "setpoint", 70.0),
                    ("oven", "mode", "manual"), ("oven", "output", 12.5)])
        st = s.read("oven")
        assert (st["kp"], st["ki"], st["setpoint"], st["mode"]) == (2.0, 0.5, 70.0, "manual")
        assert wait(lambda: s.read("oven.output") == 12.5, 3)
        # the host refuses what it can see is wrong before anything is sent
        with pytest.raises(CommandRejected, match=r"oven.mode = turbo: .*nothing was applied"):
            s.set_many([("oven", "setpoint", 65.0), ("oven", "mode", "turbo")])
        with pytest.raises(CommandRejected, match="finite"):
            s.set_many([("oven", "setpoint", float("nan"))])
        assert s.read("oven.setpoint") == 70.0


def test_info_gives_units_and_fault_records_carry_wall_time(sim_nodes):
    port = boot(sim_nodes, bench=STUCK)
    with Session(SerialLink(port), KEY) as s:
        s.open()
        assert s.read("info")["units"] == {"oven": {"measurement": "degC", "output": "%"}}
        t0 = time.time() * 1000
        s.sync_time()                     # what cyphy.connect() does at session start
        assert wait(lambda: any(r[2] == "sensor" for r in s.read("faults")), 15)
        rec = [r for r in s.read("faults") if r[2] == "sensor"][-1]
        ticks, loop, kind, value, wall_ms = rec
        assert (loop, kind) == ("oven", "sensor") and value < 10000
        assert t0 < wall_ms < time.time() * 1000 + 1000
