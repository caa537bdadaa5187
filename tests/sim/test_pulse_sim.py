"""Issue 17, item 3, on the sim: a motor's speed from its quadrature encoder (ESP32's PCNT
through machine.Encoder; boards/sim/rom/_pulse.py counts the edges the plant's speed gives),
a revolution counter (machine.Counter) and a position, in a speed loop; a broken encoder
wire shows as a speed of 0 while the counter goes on."""

from __future__ import annotations

import json
import math

import pytest
from benchnode import booted, get_after

CPR = 1000                                    # encoder cycles per revolution
BENCH = {
    "plant": {"type": "dcmotor", "J": 0.0005, "b": 0.001, "K": 0.05, "R": 1.0, "L": 0.001,
              "vmin": 0.0, "vmax": 12.0},
    "wiring": [
        {"kind": "quadrature", "pin_a": 14, "pin_b": 15, "signal": "speed",
         "per_unit": CPR / (2 * math.pi), "faults": [{"at_s": 30, "fault": "stopped"},
                                                      {"at_s": 31, "fault": "none"}]},
        {"kind": "quadrature", "pin_a": 16, "pin_b": 17, "signal": "speed",
         "per_unit": CPR / (2 * math.pi)},
        {"kind": "pulses", "pin": 13, "signal": "speed", "per_unit": 1 / (2 * math.pi)},
        {"pin": 25, "kind": "dac", "signal": "voltage", "range": [0, 12]}],
    "seed": 1,
}
CONFIG = {"name": "spindle", "comms_timeout_ms": 0, "channels": [
    {"name": "speed", "kind": "encoder", "pin_a": 14, "pin_b": 15, "phases": 4,
     "scale": 2 * math.pi / (4 * CPR), "window_ms": 50, "units": "rad/s", "valid": [-10, 300]},
    {"name": "angle", "kind": "encoder", "pin_a": 16, "pin_b": 17, "phases": 4,
     "quantity": "position", "scale": 360 / (4 * CPR), "units": "deg"},
    {"name": "revs", "kind": "counter", "pin": 13, "quantity": "count"},
    {"name": "drive", "pin": 25, "kind": "dac", "range": [0, 12], "units": "V", "failsafe": 0}],
    "loops": [{"name": "spindle", "rate_hz": 50, "sensor": "speed", "actuator": "drive",
               "controller": {"type": "pid", "kp": 0.1, "ki": 0.7, "setpoint": 100}}]}


NAMES = ("spindle", "speed", "angle", "revs")


@pytest.fixture
def spindle(sim_nodes):
    with booted(sim_nodes, "spindle", BENCH, CONFIG) as con:
        yield con


def state(con, t_s):
    return dict(zip(NAMES, get_after(con, t_s, NAMES)))


def test_a_speed_loop_on_an_encoder(spindle):
    s = state(spindle, 20)
    print({k: (v.get("value", v.get("measurement")), v.get("status")) for k, v in s.items()})
    assert s["spindle"]["faults"] == [] and abs(s["spindle"]["measurement"] - 100.0) < 1.5
    assert abs(s["speed"]["value"] - 100.0) < 1.5
    # the revolution counter and the angle agree with each other: rev = angle / 360
    revs, angle = s["revs"]["value"], s["angle"]["value"]
    assert abs(revs - angle / 360) < 1.01 and revs > 200
    s = state(spindle, 10.2)                  # t = 30.2: the encoder's wire is broken
    assert abs(s["speed"]["value"]) < 0.5 and s["spindle"]["output"] > 11
    s = state(spindle, 5)                     # back since 31 s: the loop recovers
    assert abs(s["speed"]["value"] - 100.0) < 5


# The ESP32-C3 has no PCNT: its machine module has no Counter or Encoder, and the HAL counts
# with soft Pin IRQs (each edge one scheduled call; the 8-deep queue drops edges when the
# code cannot keep up), documented for up to a few hundred Hz.
C3_BENCH = {
    "plant": BENCH["plant"],
    "wiring": [
        {"kind": "pulses", "pin": 6, "signal": "speed", "per_unit": 1 / (2 * math.pi)},
        {"kind": "quadrature", "pin_a": 4, "pin_b": 5, "signal": "speed",
         "per_unit": 1 / (2 * math.pi)},
        {"pin": 7, "kind": "pwm", "signal": "voltage", "range": [0, 12]}],
    "seed": 1,
}
C3_CONFIG = {"name": "spindle-c3", "comms_timeout_ms": 0, "channels": [
    {"name": "revs", "kind": "counter", "pin": 6, "quantity": "count"},
    {"name": "turns", "kind": "encoder", "pin_a": 4, "pin_b": 5, "quantity": "position",
     "phases": 1},
    {"name": "drive", "pin": 7, "kind": "pwm", "range": [0, 12], "failsafe": 0}],
    "loops": []}


def test_without_pcnt_the_counters_fall_back_to_pin_irqs(sim_nodes, cyphy_home):
    from cyphy.sim.nodes import Node

    node = Node.named("spindle-c3", cyphy_home)
    node.create()
    node.set_chip("esp32c3")
    with booted(sim_nodes, "spindle-c3", C3_BENCH, C3_CONFIG) as con:
        lines = con.run(
            "import time, json, machine\n"
            "print(json.dumps([hasattr(machine, 'Counter'), type(node.channels['revs'].hw).__name__]))\n"
            "node.channels['drive'].write(6000)\n"
            "time.sleep(20)\n"
            "print(json.dumps([node.get('revs'), node.get('turns')]))\n",
            timeout=120).splitlines()
        assert json.loads(lines[0]) == [False, "IrqCounter"]
        revs, turns = json.loads(lines[-1])
        print("C3 fallback:", revs, turns)
        # 6 V: about 86 rad/s, 13.7 rev/s: 270 revolutions in 20 s, counted edge by edge
        assert 200 < revs["value"] < 300 and abs(turns["value"] - revs["value"]) <= 2
