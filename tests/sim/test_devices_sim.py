"""Issue 17, item 3, on the sim: device channels whose drivers run unchanged against the
sim's models. A DS18B20 on a 1-Wire bus (boards/sim/rom/_onewire.py: byte-level protocol,
conversion time, CRC, faults) measures the oven; a time-proportioned output (slow PWM on a
digital pin, as for an SSR) drives its heater; the loop holds its setpoint with both, and
the sensor's faults (missing, CRC errors) are sensor faults that take the heater safe and
clear when the sensor is back."""

from __future__ import annotations

import json

import pytest
from benchnode import booted, get_after

ROM = "28ff641e0f160390"
BENCH = {
    "plant": {"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12, "ambient": 20.0},
    "wiring": [
        {"pin": 4, "kind": "onewire", "devices": [
            {"signal": "temperature", "rom": ROM,
             "faults": [{"at_s": 1500, "fault": "missing"}, {"at_s": 1530, "fault": "none"},
                        {"at_s": 1700, "fault": "crc"}, {"at_s": 1730, "fault": "none"}]}]},
        {"pin": 26, "kind": "dout", "signal": "heater", "range": [0, 100]}],
    "seed": 1,
}
CONFIG = {"name": "oven-ds", "comms_timeout_ms": 0, "channels": [
    {"name": "temp", "pin": 4, "kind": "ds18b20", "rom": ROM, "valid": [0, 120]},
    {"name": "ssr", "pin": 26, "kind": "tpo", "period_s": 2, "failsafe": 0}],
    "loops": [{"name": "oven", "rate_hz": 1, "sensor": "temp", "actuator": "ssr",
               "controller": {"type": "pid", "kp": 4.9, "ki": 0.034, "setpoint": 60}}]}


@pytest.fixture
def oven(sim_nodes):
    with booted(sim_nodes, "oven-ds", BENCH, CONFIG) as con:
        yield con


def state(con, t_s):
    return get_after(con, t_s, ("oven", "temp", "ssr"))


def test_a_ds18b20_and_a_time_proportioned_heater_hold_the_oven(oven):
    loop, temp, ssr = state(oven, 1400)
    print("after 1400 s:", loop, temp, ssr)
    assert loop["faults"] == [] and abs(loop["measurement"] - 60.0) < 0.5
    assert temp["status"] == "ok" and temp["errors"] == 0 and temp["age_ms"] <= 1000
    # the reading is in 1/16 degC steps (12 bits; in milli-degC, 0.0625 -> 62 or 63)
    assert abs(temp["value"] * 16 - round(temp["value"] * 16)) < 0.01
    assert 0 < ssr["value"] < 100 and ssr["period_ms"] == 2000


def test_a_missing_sensor_and_crc_errors_are_sensor_faults(oven):
    state(oven, 1490)
    loop, temp, ssr = state(oven, 15)                 # t = 1505: missing since 1500
    assert temp["status"] == "missing" and "sensor" in loop["faults"]
    assert ssr["value"] == 0 and ssr["on"] == 0       # the heater off at once (fail-safe)
    loop, temp, ssr = state(oven, 35)                 # t = 1540: back since 1530
    assert temp["status"] == "ok" and loop["faults"] == []
    loop, temp, ssr = state(oven, 165)                # t = 1705: CRC errors since 1700
    assert temp["status"] == "crc error" and "sensor" in loop["faults"]
    loop, temp, ssr = state(oven, 35)                 # t = 1740
    assert temp["status"] == "ok" and loop["faults"] == [] and temp["errors"] >= 6
    recs = json.loads(oven.run("import json\nprint(json.dumps(node.faults()))"))
    assert [r[1:3] for r in recs].count(["oven", "sensor"]) == 2
