"""The control and telemetry path on a real 32-bit MicroPython (cyphy.mp32: the WebAssembly
port under node, installed by `make`).

ESP32's MicroPython has 31-bit small ints: a value outside [-2**30, 2**30 - 1] becomes a
heap-allocated big int. The Unix port the other firmware tests run on has 63-bit small ints
and would hide that. Here every snippet runs its tick-path calls under
`micropython.heap_lock()`, where any allocation, a big int included, raises MemoryError
and fails the test; values are pushed to the documented limits (signals at +-(2**29 - 1),
ticks around the 2**30 wrap, extreme setpoints, gains and output ranges), and where the
code also runs on CPython the ints must be the same as there.

What this port does not show (the Unix-port tests do): frames live on a separate Python
stack here, never on the heap, and floats are unboxed, so neither a heap-allocated frame
nor float arithmetic allocates on this port.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest

from cyphy import firmware, mp32
from cyphy.hil.defaults import THERMAL_CONFIG

sys.path.insert(0, str(firmware.REPO / "firmware" / "lib"))  # the same modules on CPython

SMALL_MAX = (1 << 30) - 1
SMALL_MIN = -(1 << 30)
VAL_MAX = (1 << 29) - 1
VAL_MIN = -VAL_MAX
HEAP = 1024 * 1024

# Both sides: locked(f) runs f() with the heap locked (a no-op lock on CPython).
PRELUDE = """
import json
from array import array
# Written so that the port's own compiler keeps them small ints: it reads -1073741824 and
# -(1 << 30) as the negation of the big int 2**30, which stays a big-int object (mpy-cross,
# which compiled the firmware, folds them to small ints).
SMALL_MAX = 0x3FFFFFFF
SMALL_MIN = -SMALL_MAX - 1
try:
    import micropython
    def locked(f):
        micropython.heap_lock()
        try:
            f()
        finally:
            micropython.heap_unlock()
except ImportError:
    def locked(f):
        f()
"""


@pytest.fixture(scope="module")
def fw() -> dict[str, bytes]:
    why = mp32.unavailable()
    if why:
        pytest.fail(f"the 32-bit MicroPython is not installed: {why}")
    return mp32.firmware_files()


def on32(fw: dict[str, bytes], code: str, heap: int = HEAP) -> object:
    """Run PRELUDE + code + `print(json.dumps(main()))` on the 32-bit port; main()'s value."""
    r = mp32.run(PRELUDE + code + "\nprint(json.dumps(main()))\n", heap, fw)
    if not r.ok:
        pytest.fail(f"32-bit MicroPython exited with {r.status}\n--- stdout\n{r.stdout}\n"
                    f"--- stderr\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def on_cpython(code: str) -> object:
    """The same code and main() on CPython, in this process, through JSON like on32."""
    g: dict = {"__name__": "cpython_side"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(PRELUDE + code, "<cpython side>", "exec"), g)
        return json.loads(json.dumps(g["main"]()))


# ---------------------------------------------------------------- the port itself

def test_the_port_is_32_bit_with_31_bit_small_ints(fw):
    out = on32(fw, """
import sys, cyphy_node.fixed
def main():
    x = [SMALL_MAX, SMALL_MIN]
    r = []
    def ok():                       # the largest small ints: no allocation
        x[0] = x[0] + 0
        x[1] = x[1] - 0
    locked(ok)
    for f in (lambda: x[0] + 1, lambda: x[1] - 1, lambda: x[0] * 2, lambda: 1 << x[0] // x[0] * 30):
        try:
            locked(f)
            r.append("small")
        except MemoryError:
            r.append("big")
    return [sys.maxsize, r, sys.implementation._mpy & 0xFF, cyphy_node.fixed.__file__]
""")
    maxsize, grown, mpy_major, path = out
    assert maxsize == 2**31 - 1
    assert grown == ["big", "big", "big", "big"]   # 2**30, -2**30 - 1, ... are heap objects
    assert mpy_major == firmware.emitted_mpy()[0]
    assert path == "/lib/cyphy_node/fixed.mpy"     # the firmware runs as compiled .mpy


def test_settled_figures_leave_out_what_a_step_dropped():
    # This port's gc.collect() frees nothing inside the call that dropped an object: only
    # the driver's settled figures (collected in calls of their own) are what stays
    # allocated, as on ESP32 after a collection.
    code = ("import gc\n"
            "x = bytearray(50000)\n"
            "x = None\n"
            "gc.collect()\n"
            "print(gc.mem_alloc())\n")
    keep = "y = bytearray(20000)\n"
    r = mp32.run_many([mp32.Snippet(code, 256 * 1024, files={}, more=(keep,))])[0].check()
    inside = int(r.stdout.split()[0])
    dropped, kept = r.settled
    assert inside > 50000 > dropped.used                # counted inside the call, gone after
    assert 20000 < kept.used - dropped.used < 20100     # the second step's bytearray stays
    assert r.heap_used == kept.used and kept.max_free > 200000 and kept.total == r.heap_initial


def test_a_big_int_or_an_allocation_in_the_checked_code_fails(fw):
    # The check can fail: a value one past the small-int range handed to an allocation-free
    # writer, or a list made in the tick, raises MemoryError under the lock.
    r = mp32.run(PRELUDE + """
from cyphy_node import proto
b = bytearray(4)
v = [SMALL_MAX]
def tick():
    proto.put_i32(b, 0, v[0] + 1)
locked(tick)
""", HEAP, fw)
    assert r.status == 1 and "MemoryError" in r.stderr
    r = mp32.run(PRELUDE + "def tick():\n    return [1, 2]\nlocked(tick)\n", HEAP, fw)
    assert r.status == 1 and "MemoryError" in r.stderr


# ---------------------------------------------------------------- fixed, pid, blocks

XS = [SMALL_MIN, SMALL_MIN + 1, VAL_MIN - 1, VAL_MIN, -1025, -1024, -1, 0, 1, 1023, 1024,
      VAL_MAX, VAL_MAX + 1, SMALL_MAX - 1, SMALL_MAX]

FIXED = f"""
from cyphy_node.fixed import Gain, Acc, sat_add, sat_sub, clamp
XS = array("i", {XS!r})
GAINS = [0.0, 1e-12, 2.0 ** -20, 0.001, 0.5, 0.999999, 1.0, 1.5, 65535.0 / 3, 1000.0,
         1048576.5, 1073741823.0]
def main():
    gs = [Gain(g) for g in GAINS]
    n = len(XS)
    out = array("i", bytearray(4 * (len(gs) * n + 3 * n * n + n + 4)))
    acc = Acc()
    def tick():
        k = 0
        i = 0
        while i < len(gs):
            j = 0
            while j < n:
                out[k] = gs[i].mul(XS[j])
                k += 1
                j += 1
            i += 1
        i = 0
        while i < n:
            j = 0
            while j < n:
                out[k] = sat_add(XS[i], XS[j])
                out[k + 1] = sat_sub(XS[i], XS[j])
                out[k + 2] = clamp(XS[i], XS[j] >> 1, XS[j])
                k += 3
                j += 1
            out[k] = clamp(XS[i], VAL_MIN_, VAL_MAX_)
            k += 1
            i += 1
        j = 0
        while j < 3000:          # a wide accumulator taking +-2**29 per add
            acc.add(536870912 if j % 3 else -536870912)
            j += 1
        out[k] = acc.hi
        out[k + 1] = acc.lo
    locked(tick)
    return list(out)
VAL_MIN_ = {VAL_MIN}
VAL_MAX_ = {VAL_MAX}
"""


def test_fixed_point_at_the_small_int_limits(fw):
    """Gain.mul, sat_add/sat_sub, clamp and Acc.add on values up to +-2**30 (gains from 0 to
    2**30): no intermediate promotes to a big int (on this 32-bit port a big int allocates,
    so the heap lock catches it), and the ints equal CPython's."""
    assert on32(fw, FIXED) == on_cpython(FIXED)


PID_CODE = f"""
from cyphy_node.pid import PID, CLAMP
YS = array("i", {[VAL_MIN, VAL_MAX, SMALL_MIN, SMALL_MAX, 0, 1, -1, VAL_MAX, VAL_MIN]!r}
           + [(k * 7919 * 65537) % (2 * {VAL_MAX}) - {VAL_MAX} for k in range(300)]
           + [{VAL_MAX}] * 100 + [{VAL_MIN}] * 100)
CONFIGS = [
    # the widest output range (|out| < 2**25 milli-units), setpoint at the signal limit,
    # large gains at 1 kHz
    dict(kp=1000.0, ki=1000.0, kd=100.0, dt=0.001, out_min=-33554.0, out_max=33554.0,
         setpoint=536870.0, d_filter=0.01),
    # tiny gains at 1 Hz, reverse, P on measurement, output averaging over 32 samples
    dict(kp=1e-6, ki=1e-6, kd=1e-6, dt=1.0, out_min=-33554.0, out_max=33554.0,
         setpoint=-536870.0, reverse=True, p_on_m=True, avg=32),
    # deadband with its own gains, D on error, clamp anti-windup, integral limits, ramp
    dict(kp=50.0, ki=5.0, kd=2.0, dt=0.01, out_min=0.0, out_max=100.0, setpoint=0.0,
         deadband=(-1000.0, 1000.0), db_gains=(0.5, 0.1, 0.0), d_on_error=True,
         anti_windup=CLAMP, i_min=-50.0, i_max=50.0, sp_rate=100000.0, avg=4, avg_db=8),
]
def main():
    res = []
    for cfg in CONFIGS:
        pid = PID(**cfg)
        out = array("i", bytearray(4 * len(YS)))
        def tick():
            k = 0
            while k < len(YS):
                if k == 100:
                    pid.set_setpoint({VAL_MIN})
                elif k == 200:
                    pid.set_manual(pid.out_max)
                elif k == 250:
                    pid.set_auto()
                elif k == 300:
                    pid.set_setpoint({VAL_MAX})
                elif k == 400:
                    pid.set_manual()
                elif k == 420:
                    pid.set_auto()
                out[k] = pid.update(YS[k])
                k += 1
        locked(tick)
        res.append(list(out))
    return res
"""


def test_pid_update_at_extreme_setpoints_gains_and_measurements(fw):
    """PID.update (and set_setpoint/set_manual/set_auto) with measurements at and past the
    signal limits, setpoints at +-536870 units, outputs at +-33554 units and gains from 1e-6
    to 1000: nothing promotes to a big int (it would allocate on this 32-bit port: heap
    lock), and the outputs equal CPython's."""
    got = on32(fw, PID_CODE)
    assert got == on_cpython(PID_CODE)
    assert max(got[0]) == 33554000 and min(got[0]) == -33554000   # both limits reached


BLOCKS = f"""
from cyphy_node.blocks import LowPass, OnOff, Alarm
XS = array("i", {[VAL_MIN, VAL_MAX, SMALL_MIN, SMALL_MAX, 0, 5, -5, VAL_MAX, VAL_MAX, VAL_MIN]!r}
           + [(k * 104729 * 8191) % (2 * {VAL_MAX}) - {VAL_MAX} for k in range(500)])
def main():
    blocks = [LowPass(tau=0.01, dt=1.0), LowPass(tau=1000.0, dt=0.001), LowPass(alpha=1.0),
              LowPass(alpha=1e-6)]
    onoff = [OnOff(setpoint=536870.0, below=0.001, above=0.0),
             OnOff(setpoint=-536870.0, below=1000.0, above=1000.0, reverse=True, min_on=3,
                   min_off=2)]
    alarms = [Alarm(high=536870.0, low=-536870.0, hyst=268435.0, delay=2),
              Alarm(high=0.001, low=0.0, hyst=0.0)]
    out = array("i", bytearray(4 * 8 * len(XS)))
    def tick():
        k = 0
        o = 0
        while k < len(XS):
            x = XS[k]
            i = 0
            while i < 4:
                out[o] = blocks[i].update(x)
                o += 1
                i += 1
            out[o] = onoff[0].update(x)
            out[o + 1] = onoff[1].update(x)
            out[o + 2] = alarms[0].check(x)
            out[o + 3] = alarms[1].check(x)
            o += 4
            if k == 250:
                alarms[0].ack()
                onoff[0].set_setpoint({VAL_MIN})
            k += 1
    locked(tick)
    return list(out)
"""


def test_blocks_at_the_signal_limits(fw):
    """LowPass (fastest and slowest), OnOff and Alarm with inputs at and past +-(2**29 - 1)
    and thresholds at the config limits: no big ints (they allocate on this 32-bit port:
    heap lock), same ints as CPython."""
    assert on32(fw, BLOCKS) == on_cpython(BLOCKS)


# ---------------------------------------------------------------- scheduler

SCHED = """
from cyphy_node.sched import Scheduler, VirtualClock
def main():
    clk = VirtualClock(SMALL_MAX - 1999999)           # 2 s before the ticks wrap
    s = Scheduler(clk)
    class Ctl:
        def __init__(self):
            self.n = 0
        def tick(self):
            self.n += 1
            if self.n % 50 == 0:
                clk.sleep_us(25000)                   # an overrun now and then
    def nothing():
        pass
    fast = s.add(nothing, 1000, "fast")
    slow = s.add(Ctl(), 100, "slow", phase_us=500)
    one = s.add(nothing, 1, "one")
    for i in range(50):                               # warm up outside the lock
        clk.sleep_us(s.run_once())
    fast._hist[0] = (1 << 29) - 5                     # the histogram halves while locked
    st = one._st
    st[6] = (1 << 29) - 1                             # the jitter sum's low word: a carry
    st[7] = SMALL_MAX - 1                               # its high word next to saturation
    st[0] = (1 << 29) - 3                             # the tick count's low word
    until = [clk.ticks_add(clk.ticks_us(), 3000000)]
    def tick():
        i = 0
        while i < 5000:                               # across the wrap
            clk.sleep_us(s.run_once())
            i += 1
        i = 0
        while i < 2000:                               # as a timer callback would
            s.on_timer(None)
            clk.sleep_us(1000)
            i += 1
        s.run(until=until[0])
        clk.sleep_us((1 << 28) + 1000)                # a stall: resync in _run
        s.run_once()
        clk.sleep_us((1 << 29) + 1000)                # past half the ticks period
        s.run_once()
        s.early_us = 50
        i = 0
        while i < 1000:
            s.on_timer(None)
            clk.sleep_us(990)
            i += 1
    locked(tick)
    vals = list(fast._st) + list(slow._st) + list(one._st) + list(fast._hist)
    bounded = all(-(1 << 30) <= v <= (1 << 30) - 1 for v in vals)
    return [bounded, clk.t, [lp.deadline for lp in s.loops], list(fast._st), list(slow._st),
            list(one._st)]
"""


def test_scheduler_run_once_across_the_ticks_wrap(fw):
    """Scheduler.run_once/on_timer/run on a VirtualClock starting 2 s before the 2**30 wrap,
    with overruns, stalls past 2**28 and 2**29 us, a halving histogram and two-word counters
    seeded at their carry and saturation points: everything stays a small int (a big int
    allocates on this 32-bit port: heap lock), same state as on CPython."""
    got = on32(fw, SCHED)
    assert got[0] is True
    assert got == on_cpython(SCHED)


# ---------------------------------------------------------------- io, node, comms, faults

# A board as the node sees one (boards/hal.py's interface) on a VirtualClock: the ADC reads
# whatever the test puts in UV[0]; writes are kept. Not a link or a mock of the firmware.
BOARD = """
from cyphy_node.sched import VirtualClock
UV = [0]
class _Adc:
    min_mv = 0
    range_mv = 3300
    def __init__(self, atten_db):
        self.atten_db = atten_db
    def read_uv(self):
        return UV[0]
class _Din:
    def __init__(self):
        self.v = 0
    def read(self):
        return self.v
class _Out:
    def __init__(self, v):
        self.v = v
        self.writes = 0
    def duty_u16(self, d):
        self.v = d
        self.writes += 1
    def write_u8(self, v):
        self.v = v
        self.writes += 1
    def write(self, v):
        self.v = v
        self.writes += 1
class _Wdt:
    def __init__(self):
        self.fed = 0
    def feed(self):
        self.fed += 1
class Board(VirtualClock):
    mcu = "ESP32"
    def __init__(self, start):
        VirtualClock.__init__(self, start)
        self.outs = {}
        self.wdt = None
    def analog_in(self, pin, atten_db=11):
        return _Adc(atten_db)
    def digital_in(self, pin, pull=None):
        return _Din()
    def pwm_out(self, pin, freq_hz=1000, duty_u16=0):
        self.outs[pin] = _Out(duty_u16)
        return self.outs[pin]
    def dac_out(self, pin, value=0):
        self.outs[pin] = _Out(value)
        return self.outs[pin]
    def digital_out(self, pin, value=0):
        self.outs[pin] = _Out(value)
        return self.outs[pin]
    def watchdog(self, timeout_ms):
        self.wdt = _Wdt()
        return self.wdt
    def periodic(self, period_us, callback):
        raise NotImplementedError
"""

IO_CHANNELS = [
    # the widest engineering span over the widest voltage span, and a narrow scale whose
    # sensor can read far past mv_max (an open input reads the chip's full scale)
    {"name": "wide", "pin": 34, "kind": "adc", "atten_db": 11, "units": "u",
     "scale": {"mv_min": 0, "mv_max": 3300, "eng_min": -536870, "eng_max": 536870},
     "valid": [-536870, 536870]},
    {"name": "narrow", "pin": 35, "kind": "adc", "atten_db": 11, "units": "u",
     "scale": {"mv_min": 0, "mv_max": 100, "eng_min": 100000, "eng_max": 536870},
     "valid": [100000, 536870]},
    {"name": "inverted", "pin": 36, "kind": "adc", "atten_db": 11, "units": "u",
     "scale": {"mv_min": 3300, "mv_max": 0, "eng_min": -536870, "eng_max": 536870},
     "valid": [-536870, 536870]},
    {"name": "sw", "pin": 4, "kind": "din", "invert": True},
    {"name": "pwm", "pin": 25, "kind": "pwm", "range": [-33554, 33554], "failsafe": 0},
    {"name": "dac", "pin": 26, "kind": "dac", "range": [-536870, 536870], "failsafe": -536870},
    {"name": "led", "pin": 27, "kind": "dout", "failsafe": 1},
]

IO_CODE = BOARD + f"""
from cyphy_node import config
from cyphy_node.io import Input, Output
CHANNELS = {IO_CHANNELS!r}
UVS = array("i", [0, 1, 100000, 3300000, 1650000, 4095000, 0])
US = array("i", [{SMALL_MIN}, {VAL_MIN}, -33554000, 0, 33554000, {VAL_MAX}, {SMALL_MAX}])
def main():
    cfg = config.validate({{"schema": 1, "name": "n32", "comms_timeout_ms": 0, "channels": CHANNELS, "loops": []}})
    b = Board(0)
    chans = [(Input if c.kind in ("adc", "din") else Output)(c, b) for c in cfg.channels]
    ins = chans[:4]
    outs = chans[4:]
    res = array("i", bytearray(4 * (len(UVS) * 6 + len(US) * 3)))
    def tick():
        o = 0
        k = 0
        while k < len(UVS):
            UV[0] = UVS[k]
            i = 0
            while i < 4:
                v = ins[i].read()
                res[o] = v
                o += 1
                i += 1
            res[o] = 1 if ins[0].ok(res[o - 4]) else 0
            res[o + 1] = 1 if ins[1].ok(res[o - 3]) else 0
            o += 2
            k += 1
        k = 0
        while k < len(US):
            i = 0
            while i < 3:
                outs[i].write(US[k])
                res[o] = outs[i].raw
                o += 1
                i += 1
            k += 1
    locked(tick)
    return list(res)
"""


def test_io_input_and_output_scaling_at_the_limits(fw):
    """Input.read (adc over the widest spans, inverted, a reading far past mv_max; din) and
    Output.write (pwm, dac, dout with values past the range) through a small board object:
    no big ints (they allocate on this 32-bit port: heap lock), same ints as CPython."""
    got = on32(fw, IO_CODE)
    assert all(VAL_MIN <= v <= VAL_MAX for v in got)
    assert got == on_cpython(IO_CODE)


NODE_CODE = BOARD + """
import time
from cyphy_node import config
from cyphy_node.node import Node
from cyphy_node.comms import Endpoint
CFG = json.loads(CFG_JSON)
def main():
    cfg = config.validate(CFG)
    b = Board(SMALL_MAX - 2999999)                    # 3 s before the ticks_us wrap
    node = Node(cfg, b, fault_path="/faults.log", tune_path="/autotune.json")
    ep = Endpoint(node)
    node.attach(ep)
    ep._period = 10                                   # telemetry on: a sample every 10 ms
    ep._batch = 4
    lps = node.loops
    node._prepare()
    UV[0] = 1200000
    for i in range(20):                               # warm up outside the lock
        lps[0].tick()
        node.run_once()
    sweep = array("i", [1200000, 0, 2450000, 3300000, 150000, 1200000, 1400000])
    def ticks():
        k = 0
        while k < 3000:
            UV[0] = sweep[(k >> 6) % 7]               # in and out of the valid range
            lps[0].tick()
            lps[1].tick()
            k += 1
    lost = array("i", [0])
    def passes():
        k = 0
        while k < 6000:
            UV[0] = sweep[(k >> 7) % 7]
            lps[k & 1].sloop.deadline = b.ticks_us()  # a due loop every pass
            if k < 3000:
                node.touch(time.ticks_ms())           # a host in session
            elif k == 3000:                           # it went quiet long ago: comms lost
                node._touched = time.ticks_add(time.ticks_ms(), -1000)
            elif k == 4500:
                node.touch()                          # and back
            node.run_once()
            if node._comms_lost:
                lost[0] += 1
            b.sleep_us(1000)                          # through the wrap
            k += 1
    t0 = SMALL_MAX - 499
    def sampling():
        k = 0
        while k < 400:                                # telemetry sampling across ticks_ms' wrap
            ep.sample(time.ticks_add(t0, k * 5))
            k += 1
    locked(ticks)
    locked(passes)
    locked(sampling)
    return [lps[0].ticks, lps[1].ticks, node.log.n + node.log.dropped, b.wdt.fed,
            ep._ready_len, ep.counters, lost[0], node._comms_lost]
"""


def _node_config() -> dict:
    cfg = json.loads(json.dumps(THERMAL_CONFIG))
    cfg["name"] = "n32"
    cfg["comms_timeout_ms"] = 500                      # the pass takes outputs safe on expiry
    cfg["channels"].append({"name": "fan", "pin": 27, "kind": "dout", "failsafe": 0})
    cfg["loops"][0]["controller"].update(setpoint=149.0, kp=1000.0, ki=100.0, kd=10.0)
    cfg["loops"].append(
        {"name": "cool", "rate_hz": 1000, "sensor": "temp", "actuator": "fan",
         "controller": {"type": "onoff", "setpoint": 10.0, "hysteresis": 0.5,
                        "direction": "reverse"},
         "alarms": {"high": 149, "low": 10, "hysteresis": 0}})
    return cfg


def test_node_tick_run_once_and_telemetry_sampling(fw):
    """ControlLoop.tick (PID and on/off loops, sensor faults and recoveries, alarms, fault
    records), Node.run_once (scheduler, peers, watchdog, comms loss and return, telemetry
    sampling into a batch) on
    a board whose ticks_us wrap during the run, and comms.Endpoint.sample across ticks_ms's
    2**30 wrap: no allocation and no big int (a big int allocates on this 32-bit port:
    heap lock)."""
    code = f"CFG_JSON = {json.dumps(_node_config())!r}\n" + NODE_CODE
    t0, t1, recs, fed, ready, counters, lost, still_lost = on32(fw, code)
    assert lost > 1000 and not still_lost               # the comms loss and recovery, locked
    assert t0 > 3000 and t1 > 3000 and recs > 0 and fed > 0
    assert ready > 0                                   # a batch was sampled and swapped


FAULTS = f"""
from cyphy_node.faults import FaultLog, SENSOR, COMMS
VALS = array("i", [{SMALL_MIN}, {SMALL_MIN + 1}, -1, 0, 1, {VAL_MAX}, {SMALL_MAX}])
def main():
    log = FaultLog("/faults.log", ["a", "b"])
    def tick():
        k = 0
        while k < 20:                                 # 16 kept, the rest counted as dropped
            log.record(k & 1, SENSOR if k & 2 else COMMS, VALS[k % 7])
            k += 1
    locked(tick)
    return [log.n, log.dropped, list(log._val), list(log._loop), list(log._kind)]
"""


def test_fault_records_at_the_limits(fw):
    """FaultLog.record with values at the small-int limits, past a full queue (drops are
    counted): no allocation, no big int (it would allocate on this 32-bit port: heap lock)."""
    n, dropped, vals, loops, kinds = on32(fw, FAULTS)
    assert (n, dropped) == (16, 4)
    assert vals == [[SMALL_MIN, SMALL_MIN + 1, -1, 0, 1, VAL_MAX, SMALL_MAX][k % 7] for k in range(16)]
    assert loops == [k & 1 for k in range(16)] and kinds == [2 if k & 2 else 3 for k in range(16)]


PROTO = f"""
from cyphy_node import proto
class _Lp:
    alarms = 3
    fault = 31
    auto = True
    tuner = None
VALS = array("i", [{SMALL_MIN}, {SMALL_MIN + 1}, -1, 0, 1, {VAL_MAX}, {SMALL_MAX}])
def main():
    buf = bytearray(12 * len(VALS))
    src = bytearray(range(1, 256)) + bytearray(3) + bytearray(range(1, 200))
    dst = bytearray(600)
    lp = _Lp()
    st = [0, 0, 0]
    def tick():
        k = 0
        o = 0
        while k < len(VALS):
            proto.put_i32(buf, o, VALS[k])
            proto.put_u32(buf, o + 4, VALS[k] & {SMALL_MAX})   # ticks values: 0..2**30 - 1
            proto.put_u16(buf, o + 8, VALS[k] & 0xFFFF)
            o += 12
            k += 1
        st[0] = proto.put_header(dst, proto.AUTH, proto.TELEMETRY, 255, 0xFFFF)
        st[1] = proto.cobs_encode(src, len(src), dst, 5)
        st[2] = proto.loop_status(lp)
    locked(tick)
    return [bytes(buf).hex(), st, bytes(dst).hex()]
"""


def test_protocol_writers_at_the_limits(fw):
    """proto's put_i32/put_u32/put_u16/put_header/cobs_encode and loop_status with values at
    the small-int limits: no allocation, no big int (it would allocate on this 32-bit port:
    heap lock); the bytes equal CPython's."""
    assert on32(fw, PROTO) == on_cpython(PROTO)
