"""Issue 17, item 3: the Modbus RTU master (cyphy_node/modbus.py) in the firmware.

CRC-16/MODBUS against the spec's and the catalogue's vectors; request frames and the
parsing of answers (good, exception, bad CRC, another slave's, wrong byte count, a wrong
echo); the bus against a slave that answers at once, late, never or wrongly; the tick path
(a register's read/ok, an output's write, the loop's pass) under heap_lock on the Unix and
the 32-bit MicroPython; the config's Modbus mistakes, each named by its field. The driver
against the sim's UART and slave model, in a closed loop: tests/sim/test_modbus_sim.py."""

from __future__ import annotations

import copy
import json

import pytest
from test_32bit import fw  # noqa: F401 - the 32-bit port's firmware files (fixture)

from cyphy_node import config, modbus


def test_crc16_modbus_vectors():
    # the serial-line spec's CRC example: the frame 02 07 carries the CRC 0x1241, sent
    # low byte first (41 12); the CRC catalogue's CRC-16/MODBUS check of "123456789": 0x4B37
    assert modbus.crc16(b"\x02\x07", 2) == 0x1241
    assert modbus.crc16(b"123456789", 9) == 0x4B37
    assert modbus.crc16(b"\x02\x07\x41\x12", 4) == 0     # a whole good frame: 0
    assert modbus.crc16(b"", 0) == 0xFFFF


def test_request_frames():
    b = bytearray(8)
    modbus.request(b, 1, 3, 0, 10)          # read 10 holding registers from 0 of slave 1
    assert bytes(b) == bytes.fromhex("01030000000AC5CD")
    modbus.request(b, 17, 6, 1, 3)          # the application protocol's example (6.6)
    assert bytes(b[:6]) == bytes.fromhex("110600010003") and modbus.crc16(b, 8) == 0
    modbus.request(b, 247, 4, 0xFFFF, 0xABCD)
    assert b[:6] == bytes((247, 4, 0xFF, 0xFF, 0xAB, 0xCD)) and modbus.crc16(b, 8) == 0


def _frame(hexdata):
    b = bytearray(bytes.fromhex(hexdata))
    c = modbus.crc16(b, len(b))
    return b + bytes((c & 0xFF, c >> 8))


def test_answers_are_parsed_and_bad_ones_named():
    req = bytearray(8)
    modbus.request(req, 1, 4, 8, 1)
    good = _frame("010402FF38")             # one register, -200
    assert modbus.answer(good, len(good), req, 7) == modbus.OK
    assert modbus.answer(good, 4, req, 7) == -1                # incomplete
    assert modbus.answer(good, 1, req, 7) == -1
    bad = bytearray(good)
    bad[3] ^= 1
    assert modbus.answer(bad, len(bad), req, 7) == modbus.CRC
    exc = _frame("018402")                  # illegal data address
    assert modbus.answer(exc, 5, req, 7) == modbus.EXCEPTION
    other = _frame("020402FF38")            # another slave's answer
    assert modbus.answer(other, 7, req, 7) == modbus.BAD
    fn = _frame("010302FF38")               # another function's
    assert modbus.answer(fn, 7, req, 7) == modbus.BAD
    count = _frame("010404FF38")            # a byte count that is not the request's
    assert modbus.answer(count, 7, req, 7) == modbus.BAD
    w = bytearray(8)
    modbus.request(w, 1, 6, 10, 300)
    assert modbus.answer(bytearray(w), 8, w, 8) == modbus.OK   # the echo
    echo = bytearray(w)
    echo[5] ^= 1
    c = modbus.crc16(echo, 6)
    echo[6], echo[7] = c & 0xFF, c >> 8
    assert modbus.answer(echo, 8, w, 8) == modbus.BAD          # a wrong echo


class _Ch:
    def __init__(self, **kw):
        self.__dict__.update(dict(uart=1, tx=17, rx=16, de=None, baud=9600, parity="even",
                                  stop=1, slave=1, function=4, register=0, type="int16",
                                  word_order="high_first", scale=1, offset=0, valid=[-100, 100],
                                  range=[0, 100], failsafe=0, units="", period_ms=100,
                                  stale_ms=300, timeout_ms=50, name="r", kind="modbus_in"))
        self.__dict__.update(kw)


class _Slave:
    """A UART whose slave answers every request at once (or as told)."""

    def __init__(self):
        self.rx = bytearray()
        self.regs = {0: 0xFF38, 1: 0x0001, 2: 0x1234, 10: 0}
        self.mode = "ok"
        self.sent = []

    def write(self, req):
        self.sent.append(bytes(req))
        if self.mode == "silent":
            return 8
        if self.mode == "exception":
            a = bytes((req[0], req[1] | 0x80, 2))
        elif req[1] == 6:
            self.regs[(req[2] << 8) | req[3]] = (req[4] << 8) | req[5]
            a = bytes(req[:6])
        else:
            reg, n = (req[2] << 8) | req[3], req[5]
            a = bytes((req[0], req[1], 2 * n)) + b"".join(
                self.regs[reg + k].to_bytes(2, "big") for k in range(n))
        f = _frame(a.hex())
        if self.mode == "crc":
            f[-1] ^= 0xFF
        self.rx += f
        return 8

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n=-1):
        if not self.rx:
            return None
        n = min(len(buf) if n < 0 else n, len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def flush(self):
        pass


class _Board:
    def __init__(self):
        self.slave = _Slave()

    def uart(self, *a):
        return self.slave

    def digital_out(self, pin, v=0):
        return None


class _Time:
    """MicroPython's ms clock, on CPython."""

    def __init__(self):
        self.now = 0

    def ticks_ms(self):
        return self.now

    @staticmethod
    def ticks_diff(a, b):
        return a - b

    @staticmethod
    def ticks_add(a, b):
        return a + b

    def sleep_ms(self, ms):
        self.now += ms


@pytest.fixture(autouse=True)
def _clock(monkeypatch):
    t = _Time()
    monkeypatch.setattr(modbus, "time", t)
    return t


def _bus(*chs):
    b = _Board()
    bus = modbus.Bus(chs[0], b)
    units = []
    for c in chs:
        u = modbus.Holding(c) if c.kind == "modbus_out" else modbus.Register(c)
        bus.add(u)
        units.append(u)
    return bus, b.slave, units


def test_the_bus_reads_writes_in_turn_and_names_faults():
    bus, sl, (a, b, w) = _bus(_Ch(name="a", register=0, scale=0.5, offset=10),
                              _Ch(name="b", register=1, type="int32", scale=1, valid=[0, 500000]),
                              _Ch(name="w", kind="modbus_out", register=10, scale=0.1,
                                  failsafe=5, range=[0, 100]))
    t = 1000
    for _ in range(12):                     # request, answer, gap: a few steps each
        bus.step(t)
        t += 5
    # the fail-safe write first (5 % -> 50), then the registers in turn
    assert sl.sent[0][1] == 6 and sl.regs[10] == 50 and w.sent == 50 and w.status == modbus.OK
    assert a.value == 10000 - 100000 and a.status == modbus.OK     # -200 * 0.5 + 10
    assert b.raw == 0x00011234 and b.value == 0x11234 * 1000
    w.write(42500)                          # 42.5 %: written at its turn
    for _ in range(12):
        bus.step(t)
        t += 5
    assert sl.regs[10] == 425
    for mode, st in (("silent", modbus.TIMEOUT), ("crc", modbus.CRC),
                     ("exception", modbus.EXCEPTION)):
        sl.mode = mode
        for _ in range(40):
            bus.step(t)
            t += 5
        assert a.status == st and not a.good, mode
        if mode == "exception":
            assert a.exc == 2 and a.state()["exception"] == 2
    sl.mode = "ok"
    for _ in range(40):
        bus.step(t)
        t += 5
    assert a.status == modbus.OK and a.good and a.errors >= 3


def test_an_output_value_out_of_its_type_is_clamped():
    bus, sl, (w,) = _bus(_Ch(name="w", kind="modbus_out", type="int16", scale=-0.01,
                             range=[-500, 500], failsafe=0, register=10))
    w.write(400000)                         # 400 / -0.01 = -40000: below int16
    assert w._raw() == 0x8000
    w.write(-1000)                          # -1 / -0.01 = 100
    assert w._raw() == 100


TICK_CODE = """
class _UART:
    def __init__(self):
        self.rx = bytearray(16)
        self.n = 0
        self.k = 0
    def write(self, req):
        # one input register: 12.34 (1234 x 0.01), or the write's echo
        if req[1] == 6:
            a = bytes(req[:6])
        else:
            a = bytes((req[0], req[1], 2, 0x04, 0xD2))
        from cyphy_node.modbus import crc16
        c = crc16(a, len(a))
        self.rx[:len(a)] = a
        self.rx[len(a)] = c & 0xFF
        self.rx[len(a) + 1] = c >> 8
        self.n = len(a) + 2
        self.k = 0
        return 8
    def any(self):
        return self.n - self.k
    def readinto(self, buf, n=-1):
        m = self.n - self.k
        if m <= 0:
            return None
        if 0 <= n < m:
            m = n
        for i in range(m):
            buf[i] = self.rx[self.k + i]
        self.k += m
        return m
    def flush(self):
        pass
def _uart(self, *a):
    return _UART()
Board.uart = _uart
import time
from cyphy_node import config
from cyphy_node.node import Node
CFG = {cfg!r}
def main():
    node = Node(config.validate(json.loads(CFG)), Board(SMALL_MAX - 2999999),
                fault_path="/faults.log", tune_path="/autotune.json")
    node._prepare()
    lvl = node.channels["lvl"]
    pump = node.channels["pump"]
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
        while k < 500:                 # the pass: the loop's tick (pump.write), read, ok
            node.run_once()
            node.board.sleep_us(20000)
            if lvl.ok(lvl.read()):
                res[0] += 1
            pump.write(k * 40)
            res[1] += pump.value
            k += 1
        res[3] = (total() - m0) if total is not None else 0
    locked(passes)
    out = [res[0], lvl.value, pump.urgent]
    passes()                            # counted by mem_total where the port has it
    return out + [res[3]]
"""


def _tick_code() -> str:
    from test_32bit import BOARD
    bus = {"tx": 17, "rx": 16, "slave": 3}
    cfg = {"name": "m32", "comms_timeout_ms": 0, "channels": [
        dict(bus, name="lvl", kind="modbus_in", function=4, register=0, scale=0.01,
             valid=[0, 100], stale_ms=36000000, period_ms=3600000),
        dict(bus, name="pump", kind="modbus_out", register=10, scale=0.01, range=[0, 100],
             failsafe=0)],
        "loops": [{"name": "lvl", "rate_hz": 50, "sensor": "lvl", "actuator": "pump",
                   "controller": {"type": "pid", "kp": 4.9, "ki": 0.034, "setpoint": 60}}]}
    return BOARD + TICK_CODE.replace("{cfg!r}", repr(json.dumps(cfg)))


def test_the_modbus_tick_path_allocates_nothing_on_32_bit_micropython(fw):  # noqa: F811
    from test_32bit import on32
    ok, value, urgent, grew = on32(fw, _tick_code())
    assert ok == 500 and value == 12340 and grew == 0


def test_the_modbus_tick_path_allocates_nothing_on_micropython(mpy):
    from test_32bit import PRELUDE
    out = mpy(PRELUDE + _tick_code() + "\nprint(json.dumps(main()))\n", heap="1M")
    ok, value, urgent, grew = json.loads(out.strip().splitlines()[-1])
    assert ok == 500 and value == 12340      # primed at boot: 1234 x 0.01
    assert grew == 0, f"the passes allocated {grew} bytes"


BUS = {"uart": 2, "tx": 17, "rx": 16, "slave": 1}
BASE = {"name": "n", "comms_timeout_ms": 0, "channels": [
    dict(BUS, name="lvl", kind="modbus_in", function=4, register=0, valid=[0, 2]),
    dict(BUS, name="pump", kind="modbus_out", register=10, scale=0.01, range=[0, 12],
         failsafe=0)], "loops": []}


@pytest.mark.parametrize("i, key, value, want", [
    (0, "uart", 0, "channels[0].uart: must be an integer from 1 to 2, got 0"),
    (0, "slave", 248, "channels[0].slave: must be an integer from 1 to 247, got 248"),
    (0, "function", 6, "channels[0].function: must be an integer from 3 to 4, got 6"),
    (0, "function", None, "channels[0].function: is required"),
    (0, "register", 70000, "channels[0].register: must be an integer from 0 to 65535, got 70000"),
    (0, "type", "float", 'channels[0].type: must be one of int16, uint16, int32, uint32; got "float"'),
    (0, "parity", "mark", 'channels[0].parity: must be one of even, odd, none; got "mark"'),
    (0, "scale", 0, "channels[0].scale: must not be 0 (at least 1e-06 in size), got 0"),
    (0, "timeout_ms", 5, "channels[0].timeout_ms: must be an integer from 40 to 10000, got 5"),
    (0, "stale_ms", 1000, "channels[0].stale_ms: must be an integer from 2000 to 36000000, got 1000"),
    (0, "word_order", "middle", 'channels[0].word_order: must be one of high_first, low_first; '
     'got "middle"'),
    (1, "baud", 19200, 'channels[1].baud: must be 9600, as for channel "lvl" on the same bus '
     '(UART 2)'),
    (1, "tx", 18, 'channels[1].tx: must be 17, as for channel "lvl" on the same bus (UART 2)'),
    (1, "type", "int32", 'channels[1].type: must be one of int16, uint16; got "int32"'),
    (1, "range", [0, 400], "channels[1].range[1]: is register value 40000, outside int16's "
     "[-32768, 32767] (range = offset + scale x register)"),
    (1, "failsafe", 20, "channels[1].failsafe: must be within range [0, 12], got 20"),
    (1, "uart", 1, 'channels[1].tx: pin 17 is already used by channel "lvl"'),
])
def test_modbus_config_mistakes_are_named(i, key, value, want):
    d = copy.deepcopy(BASE)
    if value is None:
        del d["channels"][i][key]
    else:
        d["channels"][i][key] = value
    with pytest.raises(config.ConfigError) as e:
        config.validate(d)
    assert str(e.value) == want


def test_one_register_has_one_writer_and_the_chip_checks_the_pins():
    d = copy.deepcopy(BASE)
    d["channels"].append(dict(d["channels"][1], name="pump2"))
    with pytest.raises(config.ConfigError) as e:
        config.validate(d)
    assert str(e.value) == 'channels[2].register: channel "pump" writes register 10 of slave 1 already'
    from cyphy import chips
    d = copy.deepcopy(BASE)
    for c in d["channels"]:
        c["tx"] = 34                        # input-only on ESP32: cannot transmit
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(d, "esp32")
    assert e.value.path == "channels[0].tx" and "needs dout" in e.value.reason
    d = copy.deepcopy(BASE)
    for c in d["channels"]:
        c.update(tx=4, rx=5)
    with pytest.raises(chips.ChipConfigError) as e:
        chips.check_config(d, "esp32c3")     # UART0 and UART1 only
    assert e.value.path == "channels[0].uart"
