"""Issue 17, item 3: device channels in the firmware (devices.py, ds18b20.py, tpo.py).

The time-proportioned output against the sim's plant in virtual time (plantboard.py); the
pass's work for device channels (the TPO's switching, a DS18B20's read and ok()) under
heap_lock on the Unix and 32-bit MicroPython; the config's lists of kinds agree. The
DS18B20 driver against the sim's byte-level 1-Wire model, with its faults, is in
tests/sim/test_devices_sim.py."""

from __future__ import annotations

import copy
import json

import pytest
from plantboard import Rig, adc, patch_time
from test_32bit import fw  # noqa: F401 - the 32-bit port's firmware files (fixture)

from cyphy_node import cfgdev, config

FOTD_WIRING = [{"pin": 34, "signal": "temperature", "range": [0, 150]},
               {"pin": 26, "signal": "heater", "range": [0, 100]}]
OVEN = {"name": "oven", "comms_timeout_ms": 0, "channels": [
    adc("temp", 34, 0, 150, "degC", [10, 148]),
    {"name": "ssr", "pin": 26, "kind": "tpo", "period_s": 2.0, "failsafe": 0,
     "min_pulse_ms": 50}],
    "loops": [{"name": "oven", "rate_hz": 1, "sensor": "temp", "actuator": "ssr",
               "controller": {"type": "pid", "kp": 4.9, "ki": 0.034, "setpoint": 60}}]}


@pytest.fixture
def rig(tmp_path, monkeypatch):
    now = [0]
    patch_time(monkeypatch, now)

    def make(cfg, plant, wiring=FOTD_WIRING):
        return Rig(copy.deepcopy(cfg), plant, wiring, tmp_path, now)
    return make


def test_the_kinds_lists_agree():
    assert config.DEV_INPUTS == cfgdev.INPUTS and config.DEV_OUTPUTS == cfgdev.OUTPUTS


def test_a_time_proportioned_output_gives_the_exact_average_and_goes_safe_at_once(rig):
    r = rig(OVEN, {"type": "fotd", "initial": {"temperature": 20}})
    node = r.node
    ssr = node.channels["ssr"]
    assert node.period_us == 20000        # the pass runs every 1 % of the TPO's period
    for want in (37.3, 2.0, 1.0, 99.0, 0.0, 100.0, 61.7):
        node.set("oven.output", want)
        r.run(2.0)                         # the window in progress ends
        on = r.run(200.0, 0.001, lambda t: ssr.raw)
        share = 100.0 * sum(on) / len(on)
        print(f"{want:5.1f} % asked: on {share:6.2f} % of 100 windows")
        assert abs(share - want) < 0.1, (want, share)
    # pulses shorter than min_pulse_ms (50 ms of 2 s: 2.5 %) are never given; 1 % comes as
    # a 50 ms pulse every other window or so (its average above, exact)
    node.set("oven.output", 1.0)
    r.run(2.0)
    edges = r.run(40.0, 0.001, lambda t: ssr.raw)            # one sample per 20 ms pass
    runs = [20 * len(x) for x in "".join(map(str, edges)).split("0") if x]
    assert runs and min(runs) >= 50, runs
    # the fail-safe value at once, not at the end of the window
    node.set("oven.output", 100.0)
    r.run(2.5)
    assert ssr.raw == 1
    node.safe_all()
    r.run(0.05)
    assert ssr.raw == 0 and ssr.value == 0


def test_a_tpo_heater_holds_the_oven(rig):
    r = rig(OVEN, {"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12, "ambient": 20,
                   "initial": {"temperature": 20}})
    lp = r.node.loop("oven")
    ys = r.run(1800, 1.0, lambda t: lp.y / 1000)
    print(f"TPO heater: peak {max(ys):.2f} degC, last {ys[-1]:.2f} degC")
    assert max(ys) < 60.0 + 0.1 * 40 and abs(ys[-1] - 60.0) < 0.3
    late = r.run(300, 1.0, lambda t: lp.y / 1000)
    assert max(late) - min(late) < 0.6           # the 2 s windows' ripple, small


DEVICES_CODE = """
class _OW:
    def __init__(self):
        self.pad = bytearray((0x90, 0x01, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10, 0))
        self.pad[8] = self.crc8(self.pad[:8])
    def reset(self, required=False):
        return True
    def writebyte(self, b):
        pass
    def write(self, buf):
        pass
    def select_rom(self, rom):
        pass
    def readinto(self, buf):
        i = 0
        while i < len(buf):
            buf[i] = self.pad[i]
            i += 1
    def crc8(self, data):
        crc = 0
        for b in data:
            for _ in range(8):
                mix = (crc ^ b) & 1
                crc >>= 1
                if mix:
                    crc ^= 0x8C
                b >>= 1
        return crc
def _onewire(self, pin):
    return _OW()
Board.onewire = _onewire
import time
from cyphy_node import config
from cyphy_node.node import Node
CFG = {cfg!r}
def main():
    node = Node(config.validate(json.loads(CFG)), Board(SMALL_MAX - 2999999),
                fault_path="/faults.log", tune_path="/autotune.json")
    node._prepare()
    UV[0] = 1200000
    lp = node.loops[0]
    for i in range(50):
        node.run_once()
        node.board.sleep_us(20000)
    temp = node.channels["temp"]
    ssr = node.channels["ssr"]
    # the TPO switched here on the board's virtual clock (the node's own _switch reads
    # time.ticks_ms, this port's wall clock, which barely moves in this run)
    node._timed = ()
    res = array("i", bytearray(4 * 4))
    try:
        import micropython
        total = micropython.mem_total
    except (ImportError, AttributeError):
        total = None
    def passes():
        # mem_total read here, inside: this function's own frame is not the pass's
        m0 = total() if total is not None else 0
        k = 0
        while k < 500:                 # the pass: loop ticks, the TPO's switching, ok()
            node.run_once()
            node.board.sleep_us(20000)
            res[2] += 20
            ssr.update(res[2])
            if temp.ok(temp.read()):
                res[0] += 1
            res[1] += ssr.raw
            k += 1
        res[3] = (total() - m0) if total is not None else 0
    locked(passes)
    out = [res[0], res[1], temp.value]
    passes()                            # counted by mem_total where the port has it
    return out + [res[3]]
"""


def _devices_code() -> str:
    from test_32bit import BOARD
    cfg = {"name": "d32", "comms_timeout_ms": 0, "channels": [
        {"name": "temp", "pin": 4, "kind": "ds18b20", "valid": [-55, 125], "stale_ms": 10000000},
        {"name": "ssr", "pin": 26, "kind": "tpo", "period_s": 2.0, "failsafe": 0}],
        "loops": [{"name": "oven", "rate_hz": 50, "sensor": "temp", "actuator": "ssr",
                   "controller": {"type": "pid", "kp": 4.9, "ki": 0.034, "setpoint": 60}}]}
    return BOARD + DEVICES_CODE.replace("{cfg!r}", repr(json.dumps(cfg)))


def test_device_channels_in_the_pass_allocate_nothing_on_32_bit_micropython(fw, monkeypatch):
    from test_32bit import on32
    ok, on, value, grew = on32(fw, _devices_code())
    assert ok == 500 and 0 < on < 500 and value == 25000 and grew == 0


def test_device_channels_in_the_pass_allocate_nothing_on_micropython(mpy):
    from test_32bit import PRELUDE
    out = mpy(PRELUDE + _devices_code() + "\nprint(json.dumps(main()))\n", heap="1M")
    ok, on, value, grew = json.loads(out.strip().splitlines()[-1])
    assert ok == 500 and value == 25000
    assert grew == 0, f"the passes allocated {grew} bytes"


BASE = {"name": "n", "comms_timeout_ms": 0, "channels": [
    {"name": "t1", "pin": 4, "kind": "ds18b20", "rom": "28ff641e0f160390"},
    {"name": "t2", "pin": 4, "kind": "ds18b20", "rom": "28ff641e0f160391"},
    {"name": "ssr", "pin": 26, "kind": "tpo", "period_s": 2, "failsafe": 0}], "loops": []}


@pytest.mark.parametrize("i, key, value, want", [
    (0, "rom", "28FF641E0F16039", 'channels[0].rom: must be the sensor\'s 64-bit ROM code as 16 hex '
     'digits, family 28 first (cyphy get URL devices lists them), got "28FF641E0F16039"'),
    (0, "rom", None, 'channels[0].rom: is required: pin 4 has more than one DS18B20 ("t1", "t2"); '
     'give each its ROM code'),
    (1, "rom", "28ff641e0f160390", 'channels[1].rom: is channel "t1"\'s too'),
    (0, "resolution", 13, "channels[0].resolution: must be an integer from 9 to 12, got 13"),
    (0, "period_ms", 500, "channels[0].period_ms: must be an integer from 750 to 3600000, got 500"),
    (0, "valid", [-60, 100], "channels[0].valid[0]: must be within the DS18B20's range [-55, 125], "
     "got -60"),
    (0, "units", "degF", 'channels[0].units: must be one of degC; got "degF"'),
    (2, "period_s", 0, "channels[2].period_s: must be > 0 and <= 3600, got 0"),
    (2, "min_pulse_ms", 1500, "channels[2].min_pulse_ms: must be at most half the period "
     "(2000 ms), got 1500"),
    (2, "pin", 4, 'channels[2].pin: pin 4 is already used by channel "t2"'),
    (2, "failsafe", 150, "channels[2].failsafe: must be within range [0, 100], got 150"),
])
def test_device_channel_mistakes_are_named(i, key, value, want):
    d = copy.deepcopy(BASE)
    if value is None:
        del d["channels"][i][key]
    else:
        d["channels"][i][key] = value
    with pytest.raises(config.ConfigError) as e:
        config.validate(d)
    assert str(e.value) == want


def test_the_chip_check_knows_which_pins_can_drive_a_bus(tmp_path):
    from cyphy import chips
    d = copy.deepcopy(BASE)
    d["channels"] = d["channels"][:1]
    d["channels"][0]["pin"] = 34                    # input-only on ESP32
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(d, "esp32")
    assert e.value.path == "channels[0].pin" and "cannot be dout" in e.value.reason


BUS_BASE = {"name": "n", "comms_timeout_ms": 0, "channels": [
    {"name": "air", "kind": "sht3x", "sda": 21, "scl": 22, "quantity": "temperature"},
    {"name": "rh", "kind": "sht3x", "sda": 21, "scl": 22, "quantity": "humidity"},
    {"name": "tc", "kind": "max31855", "sck": 18, "miso": 19, "cs": 5},
    {"name": "tc2", "kind": "max31855", "sck": 18, "miso": 19, "cs": 4}], "loops": []}


@pytest.mark.parametrize("i, key, value, want", [
    (1, "quantity", "temperature", 'channels[1].quantity: channel "air" reads the temperature '
     'of that sht3x already'),
    (1, "freq", 400000, 'channels[1].freq: must be 100000, as for channel "air" on the same bus'),
    (0, "addr", 0x40, "channels[0].addr: must be an integer from 68 to 69, got 64"),
    (1, "units", "degC", 'channels[1].units: must be one of %RH; got "degC"'),
    (0, "valid", [-50, 100], "channels[0].valid[0]: must be within the SHT3x's range [-40, 125], "
     "got -50"),
    (3, "cs", 5, 'channels[3].quantity: channel "tc" reads the thermocouple of that max31855 '
     'already'),
    (3, "spi", 1, 'channels[3].spi: must be 2, as for channel "tc" on the same bus'),
    (2, "baud", 8000000, "channels[2].baud: must be an integer from 100000 to 5000000, got 8000000"),
    (2, "period_ms", 50, "channels[2].period_ms: must be an integer from 100 to 3600000, got 50"),
    (0, "sda", 18, 'channels[2].sck: pin 18 is already used by channel "air"'),
])
def test_bus_channel_mistakes_are_named(i, key, value, want):
    d = copy.deepcopy(BUS_BASE)
    d["channels"][i][key] = value
    with pytest.raises(config.ConfigError) as e:
        config.validate(d)
    assert str(e.value) == want


def test_two_quantities_of_one_converter_share_its_chip_select():
    d = copy.deepcopy(BUS_BASE)
    d["channels"].append({"name": "cj", "kind": "max31855", "sck": 18, "miso": 19, "cs": 5,
                          "quantity": "internal"})
    assert config.validate(d).channel("cj").cs == 5


def test_counters_get_the_next_free_pcnt_unit_and_refuse_a_shared_one():
    d = {"name": "n", "comms_timeout_ms": 0, "channels": [
        {"name": "a", "kind": "counter", "pin": 13, "unit": 0},
        {"name": "b", "kind": "encoder", "pin_a": 14, "pin_b": 15},
        {"name": "c", "kind": "counter", "pin": 16}], "loops": []}
    cfg = config.validate(copy.deepcopy(d))
    assert [cfg.channel(n).unit for n in "abc"] == [0, 1, 2]
    d["channels"][2]["unit"] = 0
    with pytest.raises(config.ConfigError) as e:
        config.validate(d)
    assert str(e.value) == "channels[2].unit: PCNT unit 0 is another counter's too"
    d["channels"][2]["unit"] = 3
    d["channels"][1]["phases"] = 3
    with pytest.raises(config.ConfigError) as e:
        config.validate(d)
    assert str(e.value) == ("channels[1].phases: must be 1, 2 or 4 (counts per quadrature "
                            "cycle), got 3")
