"""PID (firmware/lib/cyphy_node/pid.py): no allocation on real MicroPython, agreement with
the float reference, ESP32 small-int bounds, and each feature's behaviour."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reference_pid import RefPID, Small, wrap  # also puts firmware/lib on sys.path

from cyphy_node.fixed import VAL_MAX, VAL_MIN
from cyphy_node.pid import CLAMP, CONDITIONAL, PID


# ---------------------------------------------------------------------------------------
# 1. A full loop under heap_lock on the real MicroPython runtime.

LOOP_SCRIPT = r"""
import json, micropython
from cyphy_node.pid import PID
from cyphy_node.blocks import LowPass, OnOff, Alarm

N = 6000

def setup():
    # Configuration: floats and allocation are fine here.
    global pid, lp, fan, al
    pid = PID(4.0, 0.5, 2.0, 0.1, out_min=0.0, out_max=100.0, setpoint=50.0, d_filter=0.5,
              sp_rate=0.5, avg=4)
    lp = LowPass(tau=0.5, dt=0.1)
    fan = OnOff(setpoint=52.0, below=0.5, above=0.5, reverse=True)
    al = Alarm(high=51.0, low=10.0, hyst=0.3, delay=2)

def loop(n, log):
    # Integer plant: first-order lag toward 20 degC + 0.9 degC/% (tau = 25 ticks = 2.5 s),
    # 16-bit LCG noise of +-0.05 degC. Everything below is small-int arithmetic.
    t0 = micropython.mem_total()          # counted inside: this frame itself is set up
    y = 20000
    seed = 1
    k = 0
    hi = 0
    fan_ticks = 0
    u_max = -1
    while k < n:
        seed = (seed * 25173 + 13849) & 0xFFFF
        f = lp.update(y + (seed % 101) - 50)
        a = al.check(f)
        u = pid.update(f)
        c = fan.update(f)
        if a & 2:
            hi += 1
        if c:
            fan_ticks += 1
        if u > u_max:
            u_max = u
        y += (20000 + u * 9 // 10 - (c >> 4) - y) // 25
        if k == n // 3:
            pid.set_manual(80000)         # run-time calls must not allocate either
        if k == n // 3 + 200:
            pid.set_auto()
        if k == n // 2:
            pid.set_setpoint(45000)
            al.ack()
        k += 1
    log[0] = y
    log[1] = hi
    log[2] = u_max
    log[3] = pid.out
    log[4] = micropython.mem_total() - t0
    log[5] = fan_ticks

log = [0, 0, 0, 0, 0, 0]
setup()
loop(50, log)                             # warm up: interned names, first-call setup
setup()
micropython.heap_lock()
try:
    loop(N, log)
    err = None
except MemoryError:
    err = "MemoryError"
micropython.heap_unlock()
locked = list(log)
# Same again unlocked, counting every byte the allocator hands out during the ticks. This
# also catches frames: a function whose locals + stack exceed 11 words gets its frame from
# the heap (falling back to the C stack when the heap is locked, so heap_lock alone would
# miss it).
setup()
loop(N, log)
print(json.dumps({"err": err, "ticks": N, "alloc_unlocked": log[4],
                  "y": locked[0], "high_alarm_ticks": locked[1], "u_max": locked[2],
                  "out": locked[3], "trips": al.trips, "fan_ticks": locked[5]}))
"""


def test_full_loop_allocates_nothing_under_heap_lock(mpy):
    r = json.loads(mpy(LOOP_SCRIPT).strip().splitlines()[-1])
    assert r["err"] is None
    assert r["alloc_unlocked"] == 0, "a tick allocated (objects or heap frames)"
    # The loop really controlled something: it settled at the new setpoint 45 degC after
    # saturating the heater on the way up; the manual 80 % excursion tripped the high alarm
    # and ran the fan.
    assert abs(r["y"] - 45000) < 300
    assert r["u_max"] == 100000
    assert r["high_alarm_ticks"] > 0 and r["trips"] >= 1 and r["fan_ticks"] > 0


# ---------------------------------------------------------------------------------------
# 2. Agreement with the float reference on generated input sequences.

def _steps(rnd, n, lo, hi, every):
    ys, y = [], rnd.uniform(lo, hi)
    for k in range(n):
        if k % every == 0:
            y = rnd.uniform(lo, hi)
        ys.append(y)
    return ys


def _ramps_noise(rnd, n):
    ys, y, slope = [], 20.0, 0.0
    for k in range(n):
        if k % 500 == 0:
            slope = rnd.uniform(-0.05, 0.05)
        y = min(80.0, max(-20.0, y + slope))
        ys.append(y + rnd.gauss(0.0, 0.2))
    return ys


def _scenarios():
    rnd = random.Random(20240611)            # deterministic inputs
    n = 4000
    return {
        "steps": (dict(kp=2.0, ki=0.5, kd=0.2, dt=0.01, setpoint=30.0, d_filter=0.05),
                  _steps(rnd, n, 0.0, 60.0, 400), {1000: ("sp", 45.0), 2500: ("sp", 5.0)}),
        "ramps_noise_p_on_m": (dict(kp=3.0, ki=0.2, kd=1.0, dt=0.01, setpoint=25.0,
                                    p_on_m=True, d_filter=0.2, sp_rate=2.0),
                               _ramps_noise(rnd, n), {1500: ("sp", 40.0)}),
        "sp_weight_deadband": (dict(kp=3.0, ki=0.4, kd=0.5, dt=0.01, setpoint=25.0,
                                    sp_weight=0.35, d_filter=0.1, deadband=(-0.5, 1.0),
                                    db_gains=(0.3, 0.2, 0.5), sp_rate=5.0),
                               _ramps_noise(rnd, n), {1200: ("sp", 40.0), 2400: ("sp", 5.0),
                                                      3000: ("tune", (1.0, 1.0, 0.0))}),
        "saturation_conditional": (dict(kp=1.0, ki=2.0, kd=0.0, dt=0.01, setpoint=50.0),
                                   _steps(rnd, n, -30.0, 130.0, 800), {}),
        "saturation_clamp": (dict(kp=1.0, ki=2.0, kd=0.0, dt=0.01, setpoint=50.0,
                                  conditional=False, out_min=-50.0, out_max=50.0),
                             _steps(rnd, n, -30.0, 130.0, 800), {}),
        "manual_auto_tune": (dict(kp=2.0, ki=0.3, kd=0.5, dt=0.01, setpoint=30.0, d_filter=0.1),
                             _ramps_noise(rnd, n),
                             {800: ("manual", 40.0), 1400: ("auto", None),
                              2000: ("tune", (5.0, 1.0, 0.1)), 2600: ("manual", None),
                              2700: ("sp", 10.0), 3000: ("auto", None)}),
        "reverse_deadband_avg": (dict(kp=2.0, ki=0.2, kd=1.0, dt=0.01, setpoint=30.0,
                                      reverse=True, deadband=(-0.5, 1.0),
                                      db_gains=(0.2, 0.1, 0.5), avg=5, avg_db=9,
                                      d_on_error=True, out_min=-100.0, out_max=100.0),
                                 [30.0 + 3.0 * math.sin(k / 150.0) + rnd.gauss(0, 0.1)
                                  for k in range(n)], {}),
        # 1 kHz with a slow integrator: ki * dt * e is 0.005 milli-units per tick, which a
        # naive integer integrator would round to zero forever.
        "fast_slow_integral": (dict(kp=0.5, ki=0.05, kd=0.0, dt=0.001, setpoint=20.1),
                               [20.0 + 0.002 * math.sin(k / 50.0) for k in range(n)], {}),
    }


_KINDS = {"sp": 0, "manual": 1, "auto": 2, "tune": 3}

RUN_SCRIPT = r"""
import json, micropython
from array import array
from cyphy_node.pid import PID

def run(pid, ys, out, evt, evk, evv, tunes):
    n = len(ys)
    k = 0
    j = 0
    micropython.heap_lock()
    while k < n:
        while j < len(evt) and evt[j] == k:
            kind = evk[j]
            if kind == 0:
                pid.set_setpoint(evv[j])
            elif kind == 1:
                if evv[j] == -1:
                    pid.set_manual()
                else:
                    pid.set_manual(evv[j])
            elif kind == 2:
                pid.set_auto()
            else:                            # new gains: configuration, may allocate
                micropython.heap_unlock()
                t = tunes[evv[j]]
                pid.set_tunings(t[0], t[1], t[2])
                micropython.heap_lock()
            j += 1
        out[k] = pid.update(ys[k])
        k += 1
    micropython.heap_unlock()

with open(CASES_FILE) as f:
    CASES = json.load(f)
for name, cfg, ys, ev, tunes in CASES:
    pid = PID(**cfg)
    ys = array("i", ys)
    out = array("i", [0] * len(ys))
    run(pid, ys, out, array("i", [e[0] for e in ev]), array("i", [e[1] for e in ev]),
        array("i", [e[2] for e in ev]), tunes)
    print(json.dumps([name, list(out)]))
"""


def _firmware_cfg(cfg):
    c = dict(cfg)
    if "conditional" in c:
        c["anti_windup"] = CONDITIONAL if c.pop("conditional") else CLAMP
    return c


def _encode_events(ev):
    out, tunes = [], []
    for k in sorted(ev):
        kind, v = ev[k]
        if kind == "tune":
            out.append((k, 3, len(tunes)))
            tunes.append(v)
        elif v is None:
            out.append((k, _KINDS[kind], -1))
        else:
            out.append((k, _KINDS[kind], round(v * 1000)))
    return out, tunes


def _run_firmware_cpython(cfg, ys, ev):
    pid = PID(**_firmware_cfg(cfg))
    out = []
    for k, y in enumerate(ys):
        if k in ev:
            kind, v = ev[k]
            if kind == "sp":
                pid.set_setpoint(round(v * 1000))
            elif kind == "manual":
                pid.set_manual(None if v is None else round(v * 1000))
            elif kind == "auto":
                pid.set_auto()
            else:
                pid.set_tunings(*v)
        out.append(pid.update(y))
    return out, pid


def _run_reference(cfg, ys, ev):
    ref = RefPID(**cfg)
    out = []
    for k, y in enumerate(ys):
        if k in ev:
            kind, v = ev[k]
            if kind == "sp":
                ref.setpoint = v
            elif kind == "manual":
                ref.set_manual(v)
            elif kind == "auto":
                ref.set_auto()
            else:
                ref.set_tunings(*v)
        out.append(ref.update(y / 1000.0))
    return out


def _tolerance(pid, n):
    """Worst-case |firmware - reference| in milli-units, from the fixed-point resolution.

    - Both see the same integer measurements, so only the controller's arithmetic differs.
    - P, the rounded I, the rounded D and the averaged output are each rounded to the
      nearest milli-unit: 4 * 0.5.
    - Gains are represented within 2**-20 relative: at most 2**-20 * (|P| + |I| + |D|), and
      each term is limited to 4 * L: 12 * L * 2**-20.
    - Each integral increment (and P-on-measurement increment) is rounded to 2**-F
      milli-units: in the worst case n * 2 * 2**-(F+1) accumulates (in practice a random
      walk, far smaller); the D filter's rounding is bounded by 2**-F / (1 - b) < 1.
    - The setpoint ramp's per-tick step carries 24 fraction bits: n * 2**-25 * kp.
    """
    L = max(abs(pid.out_min), abs(pid.out_max), abs(pid.i_min), abs(pid.i_max))
    return (2.0 + 12 * L * 2.0 ** -20 + n * 2.0 ** -pid._F + 1.0
            + n * 2.0 ** -25 * max(pid.kp, 1.0))


def test_matches_float_reference_on_micropython(mpy, tmp_path):
    scen = _scenarios()
    cases = []
    for name, (cfg, ys, ev) in scen.items():
        evs, tunes = _encode_events(ev)
        cases.append((name, _firmware_cfg(cfg), [round(y * 1000) for y in ys], evs, tunes))
    # The inputs go through a file (read before heap_lock): too big for a command line.
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    out = mpy("CASES_FILE = %r\n%s" % (str(path), RUN_SCRIPT), heap="4M")
    got = dict(json.loads(line) for line in out.strip().splitlines())
    report = {}
    for name, (cfg, ys, ev) in scen.items():
        yi = [round(y * 1000) for y in ys]
        fw_cpython, pid = _run_firmware_cpython(cfg, yi, ev)
        # The same ints on both runtimes: what the CPython bounds test checks is what runs.
        assert got[name] == fw_cpython, name
        ref = _run_reference(cfg, yi, ev)
        err = [g - r * 1000.0 for g, r in zip(got[name], ref)]
        worst = max(abs(e) for e in err)
        tol = _tolerance(pid, len(ys))
        report[name] = (round(worst, 3), round(tol, 2))
        assert worst <= tol, (name, worst, tol)
        # Rounding is to nearest, so the error has no drift: its mean stays well inside 1 LSB.
        assert abs(sum(err) / len(err)) < 0.5, name
        # Sanity: the scenario exercises the controller.
        if name == "fast_slow_integral":
            assert got[name][-1] - got[name][0] >= 19      # 4000 * 0.005: nothing lost
        else:
            assert max(got[name]) - min(got[name]) > 1000, name
    print(report)


# ---------------------------------------------------------------------------------------
# 3. ESP32 small-int bounds over extreme configurations and inputs.

_EXTREME = [VAL_MIN, VAL_MAX, 0, 1, -1, VAL_MAX // 2, VAL_MIN // 3]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kp=st.floats(0.0, 1e4), ki=st.floats(0.0, 1e3), kd=st.floats(0.0, 1e2),
    dt=st.sampled_from([0.001, 0.01, 0.1, 1.0]),
    lim=st.sampled_from([0.001, 1.0, 100.0, 1000.0, 33554.431]),
    signed=st.booleans(), reverse=st.booleans(), p_on_m=st.booleans(),
    w=st.sampled_from([None, 0.3, 0.999]),
    d_on_error=st.booleans(), d_filter=st.sampled_from([0.0, 0.01, 10.0]),
    sp_rate=st.sampled_from([0.0, 0.001, 1e6]),
    deadband=st.sampled_from([None, 1.0, (-1000.0, 0.5)]),
    mult=st.floats(0.0, 1.0), avg=st.integers(1, 32), avg_db=st.integers(1, 32),
    seed=st.integers(0, 2**32 - 1),
)
def test_bounds_extreme_inputs(kp, ki, kd, dt, lim, signed, reverse, p_on_m, w, d_on_error,
                               d_filter, sp_rate, deadband, mult, avg, avg_db, seed):
    try:
        pid = PID(kp, ki, kd, dt, out_min=-lim if signed else 0.0, out_max=lim,
                  setpoint=0.0, reverse=reverse, p_on_m=p_on_m, d_on_error=d_on_error,
                  sp_weight=None if p_on_m else w,
                  d_filter=d_filter, sp_rate=sp_rate, deadband=deadband,
                  db_gains=(mult, mult, mult), avg=avg, avg_db=avg_db)
    except ValueError:
        return              # a gain too large for this dt/output range is refused at setup
    wrap(pid)
    rnd = random.Random(seed)
    for k in range(150):
        if rnd.random() < 0.5:
            y = rnd.choice(_EXTREME)
        else:
            y = rnd.randint(VAL_MIN, VAL_MAX)
        r = rnd.random()
        if r < 0.03:
            pid.set_setpoint(Small(rnd.choice(_EXTREME)))
        elif r < 0.05:
            pid.set_manual(Small(rnd.randint(-(1 << 26), 1 << 26)))
        elif r < 0.08:
            pid.set_auto()
        elif r < 0.09:
            pid.reset(Small(rnd.randint(-(1 << 26), 1 << 26)))
        u = pid.update(Small(y))
        assert pid.out_min <= u <= pid.out_max


def test_bounds_catch_an_overflow():
    # The checker itself: a product beyond 2**30 is caught, as it would become a big int.
    with pytest.raises(OverflowError):
        Small(1 << 20) * (1 << 10)


# ---------------------------------------------------------------------------------------
# Behaviour of each feature (firmware code on CPython; same ints as on MicroPython).

def _settle(pid, y, n):
    for _ in range(n):
        u = pid.update(y)
    return u


def test_bumpless_manual_to_auto_even_with_p_on_error():
    pid = PID(3.0, 0.5, 1.0, 0.1, setpoint=50.0)
    _settle(pid, 40000, 50)
    pid.set_manual(37500)
    assert _settle(pid, 45000, 20) == 37500        # manual holds the output
    pid.set_auto()
    u0 = pid.update(45000)
    assert u0 == 37500                             # first auto output: no bump
    u1 = pid.update(45000)
    assert 0 < u1 - u0 < 300                       # then integral action resumes smoothly


def test_gain_change_while_running_is_bumpless():
    # (The integral can only absorb the change within its limits, hence out_min = -100.)
    pid = PID(2.0, 0.2, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=50.0)
    u = _settle(pid, 45000, 30)
    pid.set_tunings(6.0, 0.05, 0.0)                # P triples at e = 5: the integral absorbs it
    assert pid.update(45000) - u == 25             # only the next ki step: 0.05 * 0.1 * 5000


def test_sample_time_change_rescales_without_bump():
    pid = PID(2.0, 0.5, 1.0, 0.1, setpoint=50.0, d_filter=0.2)
    _settle(pid, 45000, 30)
    i_before, u_before = pid.i, pid.out
    pid.set_sample_time(0.01)
    u = pid.update(45000)
    # The integral step shrank tenfold (ki * dt) and nothing jumped.
    assert abs(pid.i - i_before - 0.5 * 0.01 * 5000) <= 1
    assert abs(u - u_before) < 30


def test_conditional_integration_recovers_faster_than_clamp_only():
    def overshoot(aw):
        pid = PID(1.0, 1.0, 0.0, 0.1, setpoint=50.0, anti_windup=aw)
        _settle(pid, 0, 300)                       # saturated high for 30 s
        ticks = 0
        while pid.update(60000) > 0:               # now 10 above setpoint: how long to back off?
            ticks += 1
        return ticks
    assert overshoot(CONDITIONAL) < overshoot(CLAMP)


def test_integral_clamped_to_output_limits():
    pid = PID(0.0, 10.0, 0.0, 0.1, out_min=0.0, out_max=100.0, setpoint=50.0, anti_windup=CLAMP)
    _settle(pid, 0, 1000)
    assert pid.i == 100000
    pid2 = PID(0.0, 10.0, 0.0, 0.1, setpoint=50.0)
    pid2.set_output_limits(0.0, 100.0, i_min=-10.0, i_max=20.0)    # ESPHome min/max_integral
    _settle(pid2, 0, 1000)
    assert pid2.i == 20000


def test_derivative_on_measurement_has_no_setpoint_kick_and_p_on_m_neither():
    pid = PID(2.0, 0.0, 5.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=20.0)
    _settle(pid, 20000, 10)
    pid.set_setpoint(30000)
    assert pid.update(20000) == 20000              # P jumps (2 * 10), D does not
    pid = PID(2.0, 0.0, 5.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=20.0, p_on_m=True)
    _settle(pid, 20000, 10)
    pid.set_setpoint(30000)
    assert pid.update(20000) == 0                  # P on measurement: no kick at all
    pid.update(21000)                              # measurement rises by 1: P(m) = -2
    assert pid.i == -2000


def test_setpoint_weight_scales_the_kick_and_keeps_the_loop():
    # P acts on b * sp - y: a setpoint step of 10 kicks the output by kp * b * 10 and the
    # rest comes through the integral as y moves; b = 0 is p_on_m, b = 1 P on error.
    pid = PID(2.0, 0.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=20.0,
              sp_weight=0.25)
    assert pid.sp_weight == 0.25 and not pid.p_on_m
    _settle(pid, 20000, 10)
    pid.set_setpoint(30000)
    assert pid.update(20000) == 5000               # 2 * 0.25 * 10
    pid.update(21000)                              # y + 1: P(e) -0.5, P(m) part -1.5 in I
    assert pid.p == 4500 and pid.i == -1500
    pid.set_sp_weight(0.0)                         # bumpless, and now P on measurement
    assert pid.p_on_m and pid.out == 3000
    assert pid.update(21000) == 3000
    pid.set_tunings(2.0, 0.0, 0.0, p_on_m=False)   # p_on_m False: b = 1
    assert pid.sp_weight == 1.0 and pid.update(21000) == 3000
    assert PID(1.0, 0.0, 0.0, 0.1, p_on_m=True).sp_weight == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="sp_weight"):
            PID(1.0, 0.0, 0.0, 0.1, sp_weight=bad)
        with pytest.raises(ValueError, match="sp_weight"):
            pid.set_sp_weight(bad)
    with pytest.raises(ValueError):
        PID(1.0, 0.0, 0.0, 0.1, p_on_m=True, sp_weight=0.5)


def test_derivative_filter_spreads_the_kick():
    raw = PID(0.0, 0.0, 1.0, 0.1, out_min=-100.0, out_max=100.0)
    filt = PID(0.0, 0.0, 1.0, 0.1, out_min=-100.0, out_max=100.0, d_filter=0.9)
    for p in (raw, filt):
        p.update(0)
    assert raw.update(1000) == -10000              # kd * dy / dt
    assert filt.update(1000) == -1000              # kd / (tf + dt) * dy
    assert filt.update(1000) == -900               # then decays with b = tf / (tf + dt)


def test_reverse_action():
    d = PID(2.0, 0.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=20.0)
    r = PID(2.0, 0.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=20.0, reverse=True)
    assert d.update(25000) == -10000 and r.update(25000) == 10000


def test_setpoint_ramp():
    pid = PID(1.0, 0.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=0.0, sp_rate=0.5)
    pid.update(0)
    pid.set_setpoint(10000)
    for _ in range(10):
        pid.update(0)
    assert pid.sp == 500                           # 0.5 units/s for 1 s
    _settle(pid, 0, 300)
    assert pid.sp == 10000


def test_deadband_is_continuous_and_stops_integration():
    pid = PID(2.0, 1.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=0.0,
              deadband=1.0, db_gains=(0.0, 0.0, 0.0))
    # Inside the band: no P, no integration. At the edge P is continuous (0 then 2*(e-1)).
    assert pid.update(-500) == 0 and pid.i == 0
    assert pid.update(-1000) == 0
    pid.reset()
    assert pid.update(-1100) == 200 + 110          # P = 2 * 0.1, I = 1 * 0.1 * 1.1


def test_output_averaging():
    pid = PID(1.0, 0.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=0.0, avg=4)
    assert pid.update(0) == 0
    outs = [pid.update(-4000) for _ in range(5)]
    assert outs == [1000, 2000, 3000, 4000, 4000]


def test_error_map_hook():
    pid = PID(1.0, 0.0, 0.0, 0.1, out_min=-100.0, out_max=100.0, setpoint=0.0,
              error_map=lambda e: e * 2)
    assert pid.update(-3000) == 6000


def test_closed_loop_thermal_plant_reaches_setpoint():
    # FOPDT thermal plant from the anchors: 0.9 degC/%, tau 160 s, dead time 12 s; 1 Hz loop.
    dt, K, tau, L = 1.0, 0.9, 160.0, 12
    pid = PID(2.0, 0.02, 10.0, dt, setpoint=60.0, d_filter=5.0)
    y, buf = 20.0, [0.0] * L
    for k in range(3000):
        u = pid.update(round(y * 1000)) / 1000.0
        buf.append(u)
        y += dt / tau * (20.0 + K * buf.pop(0) - y)
    assert abs(y - 60.0) < 0.01


@pytest.mark.parametrize("kwargs, msg", [
    (dict(kp=-1.0), "gains must be >= 0"),
    (dict(out_max=40000.0), "out_max"),
    (dict(avg=33), "avg"),
    (dict(ki=1e9, dt=1.0), "ki*dt"),
    (dict(deadband=(0.5, 1.0)), "deadband"),
])
def test_configuration_errors_name_the_problem(kwargs, msg):
    args = dict(kp=1.0, ki=0.1, kd=0.0, dt=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg.replace("*", r"\*")):
        PID(**args)


def test_refused_change_leaves_the_controller_unchanged():
    pid = PID(2.0, 0.5, 0.0, 0.1, setpoint=50.0)
    u = _settle(pid, 45000, 10)
    with pytest.raises(ValueError, match=r"ki\*dt"):
        pid.set_tunings(2.0, 1e12, 0.0)
    with pytest.raises(ValueError, match=r"ki\*dt"):
        pid.set_sample_time(1e9)
    assert pid.get_tunings() == (2.0, 0.5, 0.0) and pid.dt == 0.1
    assert pid.update(45000) - u == 250            # carries on: one ki step, 0.5 * 0.1 * 5000
