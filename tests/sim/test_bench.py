"""The sim board's pins wired to a plant: the firmware sees physics through ESP32's API."""

from __future__ import annotations

import math

import pytest

from serial_console import Console
from benches import THERMAL





@pytest.fixture
def thermal(sim_nodes):
    node = sim_nodes("oven", virtual_time=True, bench=THERMAL)
    with Console(node.port) as con:
        con.raw()
        yield con


def test_open_loop_step_follows_the_plant(thermal):
    out = thermal.run((
        "import machine, time\n"
        "adc = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)\n"
        "pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=0)\n"
        "before = adc.read_uv()\n"
        "pwm.duty_u16(32768)\n"
        "time.sleep(600)\n"
        "print(before, adc.read_uv())\n"
    ))
    before, after = (int(v) for v in out.split())
    to_degc = 150 / 2_450_000
    heater = 100 * 32768 / 65535  # percent
    expected = 20 + 0.9 * heater * (1 - math.exp(-(600 - 12) / 160))
    assert before * to_degc == pytest.approx(20, abs=0.2)
    assert after * to_degc == pytest.approx(expected, abs=0.3)


def test_reads_and_writes_in_a_tick_allocate_nothing(thermal):
    out = thermal.run((
        "import machine, micropython, time\n"
        "adc = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)\n"
        "pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=0)\n"
        "acc = 0\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    for i in range(2000):\n"
        "        acc += adc.read_u16() & 1\n"
        "        pwm.duty_u16(i * 30)\n"
        "finally:\n"
        "    micropython.heap_unlock()\n"
        "print('ok')\n"
    ))
    assert out.strip() == "ok"


def test_esp32_pin_rules(thermal):
    for src, msg in (
        ("machine.ADC(machine.Pin(5))", "invalid pin"),  # machine_adc.c's words
        ("machine.DAC(machine.Pin(4))", "invalid Pin for DAC"),
        ("machine.Pin(34, machine.Pin.OUT)", "pin can only be input"),
        ("machine.Pin(7)", "invalid pin"),
    ):
        _, err = thermal.raw_exec(b"import machine\n" + src.encode())
        assert msg.encode() in err, src


def test_a_bad_bench_is_refused_with_a_clear_error(cyphy_home, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "bench.json"
    bad.write_text('{"wiring": []}')
    cyphy = str(Path(sys.executable).with_name("cyphy"))
    r = subprocess.run([cyphy, "sim", "start", "b", "--bench", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert 'a bench needs a "plant" object' in r.stderr
    assert "Traceback" not in r.stderr


def test_the_plant_pauses_while_user_code_holds_the_heap_locked(thermal):
    out = thermal.run((
        "import micropython, time\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    time.sleep_ms(500)\n"
        "finally:\n"
        "    micropython.heap_unlock()\n"
        "print('ok')\n"
    ))
    assert out.strip() == "ok"


def test_a_pin_wired_to_a_signal_the_plant_lacks_is_refused(cyphy_home):
    from cyphy.sim import control
    from cyphy.sim.nodes import SimError

    bad = {"plant": {"type": "fotd"}, "wiring": [{"pin": 27, "kind": "pwm", "signal": "fan"}]}
    with pytest.raises(SimError, match="wiring\\[0\\].signal: 'fan' is not one of the plant's inputs"):
        control.start("x", bench=bad, home=cyphy_home)
