"""Control blocks (firmware/lib/cyphy_node/blocks.py): behaviour, ESP32 small-int bounds,
and no allocation on real MicroPython."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from reference_pid import Small, wrap  # also puts firmware/lib on sys.path

from cyphy_node.blocks import HIGH, LOW, Alarm, LowPass, OnOff, Ramp
from cyphy_node.fixed import SMALL_MAX, SMALL_MIN, VAL_MAX, VAL_MIN

signals = st.one_of(st.integers(VAL_MIN, VAL_MAX),
                    st.sampled_from([VAL_MIN, VAL_MAX, 0, 1, -1, 8191, -8192]),
                    st.sampled_from([SMALL_MIN, SMALL_MAX]))   # out of range: clamped


# ---- Ramp -------------------------------------------------------------------------------

def test_ramp_limits_the_rate_both_ways():
    r = Ramp(rate=2.0, dt=0.1, value=10.0)
    assert [r.update(20000) for _ in range(3)] == [10200, 10400, 10600]
    r.value = 0
    assert r.update(-150) == -150                  # within one step: lands on the target
    assert r.update(-1000) == -350


def test_ramp_carries_fractional_steps():
    # 0.09 degC/min at 10 Hz is 0.15 milli-units per tick: an integer ramp would not move.
    r = Ramp(rate=0.0015, dt=0.1)
    for _ in range(10000):
        v = r.update(100000)
    assert v in (1499, 1500)                       # rate * time within the 2**-24 step error


def test_ramp_unlimited():
    r = Ramp(rate=0.0, dt=0.1)
    assert r.update(VAL_MAX) == VAL_MAX and r.update(VAL_MIN) == VAL_MIN


# ---- LowPass ----------------------------------------------------------------------------

def test_lowpass_step_response_is_first_order():
    tau, dt = 2.0, 0.01
    f = LowPass(tau=tau, dt=dt)
    f.update(0)
    for k in range(1, 801):
        y = f.update(100000)
        want = 100000 * (1 - math.exp(-k * dt / tau))
        assert abs(y - want) <= 1.0, k             # within one milli-unit of the exact lag


@pytest.mark.parametrize("start, target", [(0, 7), (0, -7), (5000, 4999), (-3, 100000)])
def test_lowpass_reaches_the_input_exactly(start, target):
    # A plain integer EMA with alpha = 0.001 would stop up to 1000 milli-units short.
    f = LowPass(alpha=0.001)
    f.update(start)
    for _ in range(40000):
        y = f.update(target)
    assert y == target


def test_lowpass_first_sample_and_reset():
    f = LowPass(tau=1.0, dt=0.1)
    assert f.update(12345) == 12345
    f.reset(100)
    assert f.update(100) == 100
    with pytest.raises(ValueError):
        LowPass(alpha=1.5)
    with pytest.raises(ValueError):
        LowPass(tau=1.0)


# ---- OnOff ------------------------------------------------------------------------------

def test_onoff_direct_hysteresis():
    h = OnOff(setpoint=20.0, below=0.5, above=1.0, on=100.0, off=0.0)
    seq = [21000, 19600, 19400, 20000, 20900, 21100, 20000, 19400]
    assert [h.update(x) for x in seq] == [0, 0, 100000, 100000, 100000, 0, 0, 100000]


def test_onoff_reverse_and_min_times():
    c = OnOff(setpoint=5.0, below=0.5, above=0.5, reverse=True, on=1.0, off=0.0,
              min_on=3, min_off=2)
    seq = [6000, 4000, 4000, 4000, 6000, 6000, 6000]
    # on at once (off long enough), held on 3 ticks despite 4.0, then off, held off 2 ticks.
    assert [c.update(x) for x in seq] == [1000, 1000, 1000, 0, 0, 1000, 1000]


# ---- Alarm ------------------------------------------------------------------------------

def test_alarm_hysteresis_delay_latch_ack():
    a = Alarm(high=80.0, low=10.0, hyst=2.0, delay=1)
    assert a.check(81000) == 0                     # first tick beyond: delayed
    assert a.check(81000) == HIGH
    assert a.check(79000) == HIGH                  # inside the hysteresis: still active
    assert a.check(77000) == 0
    assert a.latched == HIGH and a.trips == 1
    a.ack()
    assert a.latched == 0
    assert [a.check(x) for x in (9000, 9000, 11000, 12500)] == [0, LOW, LOW, 0]
    assert a.latched == LOW and a.trips == 2


def test_alarm_single_sided():
    a = Alarm(high=1.0)
    assert a.check(VAL_MIN) == 0 and a.check(1001) == HIGH


# ---- bounds: every intermediate inside ESP32's small ints ------------------------------

@settings(max_examples=200, deadline=None)
@given(xs=st.lists(signals, min_size=1, max_size=60), alpha=st.floats(1e-6, 1.0),
       rate=st.sampled_from([0.0, 1e-6, 0.5, 1e3, 1e9]), sp=st.floats(-536870.0, 536870.0),
       band=st.floats(0.0, 268435.0), hyst=st.floats(0.0, 268435.0),
       delay=st.integers(0, 3), reverse=st.booleans())
def test_bounds_extreme_inputs(xs, alpha, rate, sp, band, hyst, delay, reverse):
    ramp = wrap(Ramp(rate, 0.01, sp))
    lp = wrap(LowPass(alpha=alpha))
    oo = wrap(OnOff(setpoint=sp, below=band, above=band, reverse=reverse, on=VAL_MAX / 1000,
                    off=VAL_MIN / 1000, min_on=delay, min_off=delay))
    al = wrap(Alarm(high=sp, low=-sp, hyst=hyst, delay=delay))
    al2 = wrap(Alarm())
    for x in xs:
        x = Small(x)
        assert VAL_MIN <= ramp.update(x) <= VAL_MAX
        y = lp.update(x)
        assert VAL_MIN <= y <= VAL_MAX
        oo.update(x)
        oo.set_setpoint(x)
        al.check(x)
        al2.check(y)


# ---- no allocation on MicroPython -------------------------------------------------------

def test_blocks_allocate_nothing_on_micropython(mpy):
    rnd = random.Random(3)
    xs = [rnd.randint(-100000, 100000) for _ in range(3000)]
    script = (
        "import json, micropython\n"
        "from array import array\n"
        "from cyphy_node.blocks import Ramp, LowPass, OnOff, Alarm\n"
        f"xs = array('i', {xs!r})\n"
        "r = Ramp(5.0, 0.01); f = LowPass(tau=0.2, dt=0.01)\n"
        "h = OnOff(setpoint=0.0, below=1.0, above=1.0, min_on=5, min_off=5)\n"
        "a = Alarm(high=50.0, low=-50.0, hyst=5.0, delay=2)\n"
        "out = array('i', bytearray(16 * len(xs)))\n"
        "def run():\n"
        "    t0 = micropython.mem_total()\n"
        "    k = 0\n"
        "    while k < len(xs):\n"
        "        x = xs[k]\n"
        "        out[4 * k] = r.update(x)\n"
        "        out[4 * k + 1] = f.update(x)\n"
        "        out[4 * k + 2] = h.update(x)\n"
        "        out[4 * k + 3] = a.check(x)\n"
        "        k += 1\n"
        "    return micropython.mem_total() - t0\n"
        "micropython.heap_lock()\n"
        "n = run()\n"
        "micropython.heap_unlock()\n"
        "print(json.dumps([n, list(out)]))\n"
    )
    n, out = json.loads(mpy(script, heap="2M"))
    assert n == 0
    # Same ints as the same code on CPython.
    r, f = Ramp(5.0, 0.01), LowPass(tau=0.2, dt=0.01)
    h = OnOff(setpoint=0.0, below=1.0, above=1.0, min_on=5, min_off=5)
    a = Alarm(high=50.0, low=-50.0, hyst=5.0, delay=2)
    want = []
    for x in xs:
        want += [r.update(x), f.update(x), h.update(x), a.check(x)]
    assert out == want
