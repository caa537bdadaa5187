"""Issue 17, item 3, on the sim: a Modbus RTU master over a UART (cyphy_node/modbus.py)
running unchanged against the sim's machine.UART and a Modbus RTU slave model on the
bench's wiring (boards/sim/rom/_uart.py: character times at the baud rate, 3.5-character
frame gaps, CRC-16, RS-485 driver enable, exceptions, faults at plant times). The loop's
sensor is an input register of the slave (the oven's temperature in tenths of a degree) and
its actuator a holding register that drives the heater (tenths of a percent): the loop
holds its setpoint; a silent slave, CRC errors and exception answers are sensor faults that
take the output safe and clear; the output's fail-safe value reaches the slave."""

from __future__ import annotations

import json

import pytest
from benchnode import booted, get_after

FAULTS = [{"at_s": 150, "fault": "silent"}, {"at_s": 160, "fault": "none"},
          {"at_s": 180, "fault": "crc"}, {"at_s": 190, "fault": "none"},
          {"at_s": 210, "fault": "exception", "code": 4}, {"at_s": 220, "fault": "none"}]
BENCH = {
    "plant": {"type": "fotd", "gain": 0.9, "tau_s": 20, "dead_time_s": 1, "ambient": 20.0},
    "wiring": [
        {"kind": "modbus", "tx": 17, "rx": 16, "de": 4, "baud": 9600, "parity": "even",
         "slave": 7, "latency_ms": 5, "faults": FAULTS,
         "registers": [{"type": "input", "address": 100, "signal": "temperature", "scale": 0.1},
                       {"type": "holding", "address": 200, "drives": "heater", "scale": 0.1}]}],
    "seed": 1,
}
BUS = {"uart": 2, "tx": 17, "rx": 16, "de": 4, "baud": 9600, "slave": 7}
CONFIG = {"name": "oven-mb", "comms_timeout_ms": 0, "channels": [
    dict(BUS, name="temp", kind="modbus_in", function=4, register=100, scale=0.1,
         valid=[0, 120], units="degC", period_ms=250),
    dict(BUS, name="heater", kind="modbus_out", register=200, scale=0.1, range=[0, 100],
         failsafe=0, units="%", period_ms=1000)],
    "loops": [{"name": "oven", "rate_hz": 4, "sensor": "temp", "actuator": "heater",
               "controller": {"type": "pid", "kp": 3.0, "ki": 0.2, "setpoint": 60}}]}


@pytest.fixture
def oven(sim_nodes):
    with booted(sim_nodes, "oven-mb", BENCH, CONFIG) as con:
        yield con


def state(con, t_s):
    return get_after(con, t_s, ("oven", "temp", "heater"))


def test_a_modbus_sensor_and_actuator_hold_the_oven(oven):
    loop, temp, heater = state(oven, 140)
    print("after 140 s:", loop, temp, heater)
    assert loop["faults"] == [] and abs(loop["measurement"] - 60.0) < 0.5
    assert temp["status"] == "ok" and temp["errors"] == 0 and temp["age_ms"] <= 600
    assert abs(temp["value"] * 10 - round(temp["value"] * 10)) < 1e-6   # 0.1 degC steps
    assert heater["status"] == "ok" and 0 < heater["value"] < 100
    assert heater["raw"] == round(heater["value"] * 10)                 # what the slave has


def test_no_answer_crc_errors_and_exceptions_are_sensor_faults_that_clear(oven):
    state(oven, 145)
    t = 145
    for until, status in ((155, "no answer"), (165, "ok"), (185, "crc error"), (195, "ok"),
                          (215, "exception"), (225, "ok")):
        loop, temp, heater = state(oven, until - t)
        t = until
        print(until, temp, loop["faults"], heater)
        if status == "ok":
            assert temp["status"] == "ok" and loop["faults"] == [], (until, temp, loop)
        else:
            assert temp["status"] == status and "sensor" in loop["faults"], (until, temp, loop)
            assert heater["value"] == 0                  # the output at its fail-safe value
        if status == "exception":
            assert temp["exception"] == 4
    assert temp["errors"] >= 3
    recs = json.loads(oven.run("import json\nprint(json.dumps(node.faults()))"))
    assert [r[1:3] for r in recs].count(["oven", "sensor"]) == 3


def test_the_fail_safe_value_reaches_the_slave_at_the_next_bus_step(oven):
    loop, temp, heater = state(oven, 120)
    assert heater["raw"] > 0
    got = json.loads(oven.run(
        "import time, json\n"
        "node.safe_all(8)\n"                       # F_STOP: the loops stay safe
        "t0 = time.ticks_ms()\n"
        "h = node.channels['heater']\n"
        "while h.sent != 0 and time.ticks_diff(time.ticks_ms(), t0) < 1000:\n"
        "    time.sleep_ms(1)\n"
        "print(json.dumps([time.ticks_diff(time.ticks_ms(), t0), node.get('heater')]))\n"))
    ms, heater = got
    print("fail-safe written after", ms, "ms:", heater)
    # a request in flight ends first (its answer, at most ~30 ms at 9600 baud), then the
    # fail-safe write goes out at the next step: well within a few bus steps of 20 ms
    assert heater["raw"] == 0 and heater["status"] == "ok" and ms <= 100
    loop, temp, heater = state(oven, 3)
    assert heater["raw"] == 0 and "stopped" in loop["faults"]
