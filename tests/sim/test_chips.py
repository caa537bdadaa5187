"""`cyphy sim start --chip esp32|esp32s3|esp32c3`: one description per chip
(boards/esp32/pins.py) gives the sim node that chip's peripherals and limits, the HAL its
DevKit map, esptool the chip's identity, and `cyphy provision` a chip-aware check."""

from __future__ import annotations

import json
import re

import pytest

from cyphy import chips
from cyphy.hil.defaults import THERMAL_CONFIG
from cyphy.sim.nodes import Node
from helpers import cyphy, run, tool
from serial_console import Console

CHIP_NAMES = {"esp32": "ESP32", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3"}


def esptool(port: str, *args: str, stub: bool = True) -> str:
    opts = ["--port", port, "--before", "no-reset", "--after", "no-reset"] + ([] if stub else ["--no-stub"])
    p = run([tool("esptool"), *opts, *args])
    return p.stdout + p.stderr


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3"])
def test_esptool_detects_each_chip(cyphy_home, chip):
    cyphy("sim", "start", "dl-" + chip, "--chip", chip, "--download", "--baud", "0")
    try:
        n = Node.named("dl-" + chip, cyphy_home)
        port = str(n.tty)
        mac = ":".join(re.findall("..", n.config()["mac"]))
        for stub in (False, True):
            out = esptool(port, "chip-id", stub=stub)
            assert f"Chip type:          {CHIP_NAMES[chip]}" in out or f"Detecting chip type... {CHIP_NAMES[chip]}" in out, out
            assert f"MAC:                {mac}" in out or f"MAC: {mac}" in out, out
        out = esptool(port, "flash-id")
        assert "Manufacturer: ef" in out and "Device: 4016" in out and "4MB" in out, out
        # the wrong --chip is refused with esptool's own words
        other = "esp32c3" if chip != "esp32c3" else "esp32"
        p = run([tool("esptool"), "--chip", other, "--port", port, "--before", "no-reset",
                 "--after", "no-reset", "--no-stub", "chip-id"], ok=False)
        assert p.returncode != 0 and f"This chip is {CHIP_NAMES[chip]}" in p.stdout + p.stderr
        rows = json.loads(cyphy("sim", "list", "--json").stdout)
        assert [r["chip"] for r in rows if r["name"] == "dl-" + chip] == [chip]
    finally:
        cyphy("sim", "stop", "dl-" + chip)


def test_chip_peripherals_on_sim_nodes(sim_nodes, cyphy_home):
    """The machine module of each chip: ADC pins, DAC only on ESP32, PWM's lowest
    frequency (no REF_TICK on S3/C3), timers; the HAL detects the chip."""
    results = {}
    for chip in ("esp32", "esp32s3", "esp32c3"):
        name = "c-" + chip
        n = Node.named(name, cyphy_home)
        n.create()
        n.set_chip(chip)
        node = sim_nodes(name)
        with Console(node.port) as con:
            con.raw()
            results[chip] = json.loads(con.run(
                "import machine, json, os\n"
                "def ok(f):\n"
                "    try:\n        f()\n        return 'ok'\n"
                "    except Exception as e:\n        return type(e).__name__\n"
                "print(json.dumps([\n"
                "  ok(lambda: machine.ADC(machine.Pin(34))), ok(lambda: machine.ADC(machine.Pin(4))),\n"
                "  ok(lambda: machine.ADC(machine.Pin(2))), ok(lambda: machine.DAC(25)),\n"
                "  ok(lambda: machine.PWM(machine.Pin(5), freq=1)), ok(lambda: machine.PWM(machine.Pin(5), freq=9)),\n"
                "  ok(lambda: machine.PWM(machine.Pin(5), freq=10)),\n"
                "  ok(lambda: machine.Timer(1)), ok(lambda: machine.Pin(12)),\n"
                "  ok(lambda: machine.Timer(2)), hasattr(machine, 'DAC'), os.uname().machine]))\n").splitlines()[-1])
        node.stop()
    #                adc34   adc4   adc2   dac25  pwm1Hz  pwm9Hz  pwm10Hz timer1 pin12
    #                timer2, machine.DAC exists, os.uname().machine
    assert results["esp32"] == ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok",
                                "ok", True, "cyphy-sim with ESP32"]
    assert results["esp32s3"] == ["ValueError", "ok", "ok", "AttributeError", "OSError", "OSError", "ok", "ok", "ok",
                                  "ok", False, "cyphy-sim with ESP32S3"]
    assert results["esp32c3"] == ["ValueError", "ok", "ok", "AttributeError", "OSError", "OSError", "ok", "ok",
                                  "ValueError", "ValueError", False, "cyphy-sim with ESP32C3"]


def test_provision_refuses_what_the_chip_cannot_run():
    cfg = json.loads(json.dumps(THERMAL_CONFIG))
    cfg["name"] = "oven"
    chips.check_config(cfg, "esp32")  # the DevKitC oven runs on an ESP32
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(cfg, "esp32c3")  # GPIO34 does not exist on a C3
    assert e.value.path == "channels[0].pin" and "ESP32-C3" in e.value.reason
    cfg["channels"][0]["pin"], cfg["channels"][1]["pin"] = 2, 6
    chips.check_config(cfg, "esp32c3")
    cfg["channels"][1]["freq_hz"] = 5
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(cfg, "esp32c3")
    assert e.value.path == "channels[1].freq_hz" and "10 Hz" in e.value.reason
    chips.check_config(dict(cfg, channels=[dict(cfg["channels"][0], pin=34),
                                           dict(cfg["channels"][1], pin=25)]), "esp32")  # 5 Hz: REF_TICK
    dac = dict(cfg, channels=[cfg["channels"][0], {"name": "heater", "pin": 6, "kind": "dac",
                                                   "range": [0, 100], "failsafe": 0}])
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(dac, "esp32s3")
    assert e.value.path == "channels[1].pin" and "no DAC" in e.value.reason
    low = dict(cfg, channels=[dict(cfg["channels"][0], valid=[1, 149]), cfg["channels"][1]])
    low["channels"][1] = dict(low["channels"][1], pin=25, freq_hz=1000)
    low["channels"][0]["pin"] = 34
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(low, "esp32")  # 16 mV: below what ESP32 measures at 11 dB
    assert e.value.path == "channels[0].valid" and "150..2450 mV" in e.value.reason


def test_cyphy_provision_checks_the_chip_before_writing(sim_nodes, cyphy_home, tmp_path):
    n = Node.named("prov", cyphy_home)
    n.create()
    n.set_chip("esp32c3")
    node = sim_nodes("prov")
    cfg = json.loads(json.dumps(THERMAL_CONFIG))
    cfg["name"] = "oven"
    path = tmp_path / "oven.json"
    path.write_text(json.dumps(cfg))
    p = cyphy("provision", "--port", f"sim://prov", "--config", str(path), ok=False)
    assert p.returncode != 0
    assert "channels[0].pin" in p.stderr + p.stdout and "ESP32-C3" in p.stderr + p.stdout
    with Console(node.port) as con:
        con.raw()
        assert con.run("import os\nprint('config.json' in os.listdir('/'))\n").strip() == "False"
