"""Safety on the node under test: comms loss, sensor faults and the watchdog all leave the
outputs at their fail-safe values, and the node recovers."""

import copy
import time

import pytest

from cyphy.hil.defaults import THERMAL_CONFIG

WATCHED = copy.deepcopy(THERMAL_CONFIG)
WATCHED["comms_timeout_ms"] = 2000
WATCHED["loops"][0]["controller"]["setpoint"] = 60.0


def heater(node) -> float:
    return float(node.exec("print(node.loop('oven').output)"))


@pytest.mark.cyphy(config=WATCHED)
def test_comms_loss_takes_outputs_to_failsafe_in_time(node):
    with node.connect() as n:                 # a host talks to the node...
        n.set("oven.setpoint", 60.0)
        assert n.get("oven")["mode"] == "auto"
        deadline = time.monotonic() + 2
        while n.get("oven.output") == 0:      # heating from the next tick on
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t_last = time.monotonic()
    # ...and goes away (its last frame: the BYE as it closed)
    while heater(node) > 0:
        assert time.monotonic() - t_last < 2.0 + 1.0, "not fail-safe within the timeout"
        time.sleep(0.1)
    assert time.monotonic() - t_last >= 1.9   # and not before it
    st = node.state()["oven"]
    assert st["mode"] == "failsafe" and "comms" in st["faults"]
    with node.connect() as n:                 # contact again: the loop resumes
        deadline = time.monotonic() + 3
        while n.get("oven")["faults"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert n.get("oven")["mode"] == "auto"


@pytest.mark.sim_only
@pytest.mark.cyphy(config=WATCHED | {"comms_timeout_ms": 0})
def test_sensor_fault_goes_safe_and_is_recorded(node, plant):
    plant.sensor_fault("temperature", "stuck", value=-10)    # the ADC reads 0 V
    deadline = time.monotonic() + 5
    while "sensor" not in node.state()["oven"]["faults"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert heater(node) == 0.0
    assert plant.true("heater") == 0.0                       # the actuator itself, not a report
    kinds = [r[2] for r in eval(node.exec("print(node.faults())"))]
    assert "sensor" in kinds
    plant.clear_faults()
    deadline = time.monotonic() + 5
    while node.state()["oven"]["faults"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.sim_only  # on a board it works the same, but hangs your REPL for a second
def test_watchdog_recovers_a_hung_node(node):
    import serial

    s = serial.serial_for_url(node.port, 115200, timeout=0.05)
    s.write(b"\r\x03\x02")
    time.sleep(0.1)
    # A busy REPL does not hang a node: soft timer callbacks run between its bytecodes
    # (as on ESP32). A callback that never returns does: soft callbacks never nest, so no
    # control pass runs and nobody feeds the watchdog.
    s.write(b"import micropython\r")
    time.sleep(0.1)
    s.write(b"micropython.schedule(lambda _: exec('while 1: pass'), 0)\r")  # never returns
    seen = bytearray()
    deadline = time.monotonic() + 15
    while b"running 1 loop" not in seen or not seen.endswith(b">>> "):  # main.py done
        assert time.monotonic() < deadline, bytes(seen[-300:])
        seen += s.read(s.in_waiting or 1)
    s.close()
    assert b"task_wdt:  - mpy_machine_wdt" in seen  # ESP-IDF task watchdog panic (machine.WDT)
    assert node.exec("import machine\nprint(machine.reset_cause())").strip() == "3"
    assert node.state()["oven"]["mode"] == "auto"
