"""The sim's ADC is ESP32's, not a perfect line (boards/esp32/pins.py, boards/sim/rom/_hw.py),
and the firmware reads it calibrated (read_uv through the HAL) at the config's atten_db.

- machine.ADC: read_u16()/read() are the raw conversion, non-linear as on the chip (0 below
  about 75 mV on ESP32 at 11 dB, compressed and saturating above the documented range);
  read_uv() is calibrated (mV resolution) and close to the pin's voltage inside the
  documented range only (ESP-IDF's ADC pages: ESP32 150-2450 mV at 11 dB, S3 0-3100, C3
  0-2500).
- A sensor configured as docs/config.md says (THERMAL_CONFIG: 0..150 degC on 0..2450 mV,
  11 dB, valid [10, 149]) reads within 1 % of its span of the plant's true value, read
  through the test equipment, while the plant's true temperature sweeps the valid range;
  outside it the reading is a sensor fault; the read allocates nothing.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from cyphy.hil.defaults import THERMAL_CONFIG
from cyphy.sim.bench_control import SimBench
from cyphy.sim.nodes import Node
from serial_console import Console

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "firmware" / "lib"))
from cyphy_node import config as node_config  # noqa: E402

# The ADC pin and the PWM pin of each chip's DevKit (ADC1, so Wi-Fi does not matter).
PINS = {"esp32": (34, 25), "esp32s3": (4, 5), "esp32c3": (2, 6)}
FILES = [("boards/hal.py", "lib/boards/hal.py"),
         ("boards/esp32/board.py", "lib/boards/esp32/board.py"),
         ("boards/esp32/pins.py", "lib/boards/esp32/pins.py"),
         ("boards/esp32/chip_esp32.py", "lib/boards/esp32/chip_esp32.py"),
         ("boards/esp32/chip_esp32s3.py", "lib/boards/esp32/chip_esp32s3.py"),
         ("boards/esp32/chip_esp32c3.py", "lib/boards/esp32/chip_esp32c3.py"),
         ("boards/sim/board.py", "lib/boards/sim/board.py"),
         ("firmware/lib/cyphy_node/__init__.py", "lib/cyphy_node/__init__.py"),
         ("firmware/lib/cyphy_node/fixed.py", "lib/cyphy_node/fixed.py"),
         ("firmware/lib/cyphy_node/io.py", "lib/cyphy_node/io.py")]
SPAN = 150.0  # degC: the sensor's 0..2450 mV


def bench(chip: str) -> dict:
    adc, pwm = PINS[chip]
    return {"plant": {"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12, "ambient": 20.0},
            "wiring": [{"pin": adc, "kind": "adc", "signal": "temperature", "range": [0, 150],
                        "volts": [0.0, 2.45]},
                       {"pin": pwm, "kind": "pwm", "signal": "heater", "range": [0, 100]}],
            "seed": 3}


def start(sim_nodes, cyphy_home, name: str, chip: str):
    n = Node.named(name, cyphy_home)
    n.create()
    n.set_chip(chip)
    return sim_nodes(name, virtual_time=True, bench=bench(chip))


def install(con: Console) -> None:
    con.run("import os\nfor d in ('/lib', '/lib/boards', '/lib/boards/esp32', '/lib/boards/sim', "
            "'/lib/cyphy_node'):\n    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n")
    for src, dst in FILES:
        data = (REPO / src).read_bytes()
        for i in range(0, max(len(data), 1), 2048):
            mode = "ab" if i else "wb"
            con.run(f"with open({'/' + dst!r}, {mode!r}) as f:\n    f.write({data[i:i + 2048]!r})\n")


def channel_setup(chip: str) -> str:
    """The THERMAL_CONFIG sensor, validated on the host, as the node's io.Input."""
    cfg = copy.deepcopy(THERMAL_CONFIG)
    cfg["name"] = "adc-test"
    cfg["channels"][0]["pin"], cfg["channels"][1]["pin"] = PINS[chip]
    ch = node_config.validate(cfg).to_dict()["channels"][0]
    return (
        "import gc, json, time, micropython\ngc.collect()\n"
        "from boards.sim.board import Board\nfrom cyphy_node.io import Input\n"
        "class S:\n    def __init__(self, d):\n        for k in d:\n"
        "            setattr(self, k, S(d[k]) if isinstance(d[k], dict) else d[k])\n"
        f"ch = S(json.loads({json.dumps(json.dumps(ch))}))\n"
        "b = Board()\ninp = Input(ch, b)\n"
    )


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3"])
def test_configured_sensor_reads_the_true_value_within_1_percent(sim_nodes, cyphy_home, chip):
    node = start(sim_nodes, cyphy_home, "adc-" + chip, chip)
    with Console(node.port) as con, SimBench.connect(node.name, node.home) as eq:
        con.raw()
        install(con)
        out = con.run(channel_setup(chip) + "print(json.dumps([b.chip, b.mcu, inp.hw.atten_db, "
                      "inp.hw.min_mv, inp.hw.range_mv]))\n")
        lo_mv, hi_mv = {"esp32": (150, 2450), "esp32s3": (0, 3100), "esp32c3": (0, 2500)}[chip]
        assert json.loads(out.splitlines()[-1])[:1] + json.loads(out.splitlines()[-1])[2:] == \
            [chip, "11", lo_mv, hi_mv]
        worst = worst_raw = 0.0
        for target in (10.5, 20, 35, 50, 65, 80, 95, 110, 125, 140, 148.5):
            # the plant's true temperature settles on the ambient (heater off, ~19 tau)
            eq.set_input("ambient", target)
            con.run("time.sleep(3000)\n")
            true = eq.true("temperature")
            assert true == pytest.approx(target, abs=0.01)
            v, ok, u16 = json.loads(con.run(
                "v = inp.read()\nprint(json.dumps([v, inp.ok(v), inp.hw.read_u16()]))\n"))
            assert ok, (target, v)
            err = abs(v / 1000 - true)
            worst = max(worst, err)
            worst_raw = max(worst_raw, abs(u16 / 65535 * SPAN - true))  # a raw, linear reading
            assert err <= 0.01 * SPAN, f"{chip}: {v / 1000} degC read for a true {true}"
        # the calibrated reading is much better than 1 %; the raw one is useless as a line
        assert worst < 0.4 and worst_raw > 0.03 * SPAN, (worst, worst_raw)

        # outside the valid range the reading is a sensor fault
        for target in (2.0, 155.0):
            eq.set_input("ambient", target)
            con.run("time.sleep(3000)\n")
            v, ok = json.loads(con.run("v = inp.read()\nprint(json.dumps([v, inp.ok(v)]))\n"))
            assert not ok, (chip, target, v)

        # the control tick's read allocates nothing: not a byte (mem_total also counts the
        # frames a heap_lock would push onto the stack), and it runs under heap_lock
        assert con.run("def mem(f, n):\n    f()\n    m0 = micropython.mem_total()\n"
                       "    for k in range(n):\n        f()\n    return micropython.mem_total() - m0\n"
                       "print(mem(inp.read, 1000))\n").strip() == "0"
        assert con.run("def many(n):\n    for k in range(n):\n        inp.read()\n"
                       "micropython.heap_lock()\ntry:\n    many(500)\n"
                       "finally:\n    micropython.heap_unlock()\nprint('ok')\n").strip() == "ok"


def test_esp32_raw_is_non_linear_and_read_uv_calibrated(sim_nodes, cyphy_home):
    """machine.ADC on an ESP32 sim node, the pin's voltage set through a stuck sensor."""
    node = start(sim_nodes, cyphy_home, "raw", "esp32")
    with Console(node.port) as con, SimBench.connect(node.name, node.home) as eq:
        con.raw()
        con.run("import machine, json, time\nadc = machine.ADC(machine.Pin(34))\n"
                "a0 = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_0DB)\n")
        rows = []
        for mv in (0, 50, 100, 150, 500, 1000, 2000, 2450, 2800, 3300):
            eq.sensor_fault("temperature", "stuck", value=mv / 2450 * 150)
            con.run("time.sleep_ms(10)\n")
            rows.append([mv] + json.loads(con.run(
                "print(json.dumps([adc.read_u16(), adc.read(), adc.read_uv(), a0.read_uv()]))\n")))
        by = {r[0]: r[1:] for r in rows}
        # [MP-ADC]: read_u16 = raw << 4 | raw >> 8 on 12 bits; the default attenuation is 11 dB
        for u16, raw, _uv, _ in by.values():
            assert u16 == (raw << 4) | (raw >> 8)
        assert by[0][1] == 0 and by[50][1] == 0  # nothing below ~75 mV
        assert by[3300][1] > by[2800][1] > by[2450][1]
        # inside 150..2450 mV the calibrated reading holds to a few mV
        for mv in (150, 500, 1000, 2000, 2450):
            assert abs(by[mv][2] - mv * 1000) <= 8000, (mv, by[mv])
            assert by[mv][2] % 1000 == 0  # millivolt resolution
        # outside it, it does not: too high below, too low above (compression)
        assert by[0][2] >= 90_000 and by[3300][2] < 3_250_000
        # raw is not a line through 0 and the 11 dB range: the slope is ~0.75 mV per count
        assert abs(by[2450][1] / 4095 * 2450 - 2450) > 300
        # 0 dB saturates (950 mV is its documented top)
        assert by[1000][3] <= 1_100_000 and by[2000][3] == by[3300][3]
