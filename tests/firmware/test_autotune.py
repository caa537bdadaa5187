"""Relay autotune (firmware/lib/cyphy_node/autotune.py) on simulated first-order-plus-dead-time
plants: Ku and Pu against the analytic ultimate point, tuning rules, failure modes, ESP32
small-int bounds, and an allocation-free tick on real MicroPython."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from reference_pid import Small, ultimate_point, wrap  # also puts firmware/lib on sys.path

from cyphy_node.autotune import DONE, FAILED, RUNNING, RelayTune, rules
from cyphy_node.fixed import SMALL_MAX, SMALL_MIN, VAL_MAX, VAL_MIN
from cyphy_node.pid import PID


class FOPDT:
    """y = ambient + K exp(-L s) / (tau s + 1) u, exact for u held over each period dt."""

    def __init__(self, K, tau, L, dt, ambient=20.0):
        self.K, self.a, self.ambient = K, math.exp(-dt / tau), ambient
        self.delay = [0.0] * max(1, round(L / dt))
        self.x = 0.0

    def step(self, u):
        self.delay.append(u)
        self.x = self.a * self.x + (1 - self.a) * self.K * self.delay.pop(0)
        return self.ambient + self.x


def _tune(plant, at, noise=0.0, seed=0, y0=20.0):
    rnd = random.Random(seed)
    y = y0
    while at.status == RUNNING:
        u = at.update(round((y + rnd.gauss(0.0, noise)) * 1000))
        y = plant.step(u / 1000.0)
    return at.result()


# (K degC/%, tau s, dead time s, dt s): the anchors' thermal plant, a fast lag-dominant one
# and a dead-time-dominant one.
PLANTS = [(0.9, 160.0, 12.0, 0.5), (2.0, 20.0, 4.0, 0.05), (1.0, 10.0, 10.0, 0.05)]


@pytest.mark.parametrize("K, tau, L, dt", PLANTS)
def test_finds_the_ultimate_point(K, tau, L, dt):
    ku, pu = ultimate_point(K, tau, L)
    sp = 20.0 + K * 50.0                            # the relay's mid output holds sp
    r = _tune(FOPDT(K, tau, L, dt), RelayTune(sp, dt, high=80.0, low=20.0, hyst=0.02))
    assert r["ok"] and r["stable"]
    assert r["ku"] == pytest.approx(ku, rel=0.10)
    assert r["pu"] == pytest.approx(pu, rel=0.10)
    # Why the first-harmonic estimate: the textbook 4d / (pi a_peak) is further off.
    assert abs(r["ku_peak"] / ku - 1) > abs(r["ku"] / ku - 1)


def test_noise_hysteresis_and_asymmetric_relay():
    K, tau, L, dt = PLANTS[0]
    ku, pu = ultimate_point(K, tau, L)
    # The relay is not centred on the output that holds the setpoint: the duty cycle moves
    # away from 1/2 and the estimate accounts for it. Noise is kept out by the hysteresis.
    at = RelayTune(20.0 + K * 50.0, dt, high=90.0, low=20.0, hyst=0.15, cycles=5)
    r = _tune(FOPDT(K, tau, L, dt), at, noise=0.03, seed=11)
    assert r["ok"] and abs(r["duty"] - 0.5) > 0.05
    assert r["ku"] == pytest.approx(ku, rel=0.15)
    assert r["pu"] == pytest.approx(pu, rel=0.15)


def test_reverse_acting_plant():
    # Cooling: more output, lower temperature.
    K, tau, L, dt = -1.5, 30.0, 5.0, 0.1
    ku, pu = ultimate_point(abs(K), tau, L)
    at = RelayTune(20.0 + K * 50.0, dt, high=80.0, low=20.0, hyst=0.02, reverse=True)
    r = _tune(FOPDT(K, tau, L, dt), at)
    assert r["ku"] == pytest.approx(ku, rel=0.10)
    assert r["pu"] == pytest.approx(pu, rel=0.10)


def test_result_rules_and_closed_loop_with_them():
    K, tau, L, dt = PLANTS[0]
    at = RelayTune(65.0, dt, high=80.0, low=20.0, hyst=0.02)
    assert at.result() is None                      # nothing before the end
    r = _tune(FOPDT(K, tau, L, dt), at)
    assert at.status == DONE and at.update(50000) == at.low   # idle output once finished
    json.dumps(r)                                   # plain data, ready to persist
    zn, tl = r["rules"]["ziegler_nichols"], r["rules"]["tyreus_luyben"]
    assert zn["kp"] == pytest.approx(0.6 * r["ku"])
    assert zn["ki"] == pytest.approx(zn["kp"] / (r["pu"] / 2))
    assert tl["kp"] < zn["kp"] and tl["ki"] < zn["ki"]
    assert set(r["rules"]) == set(rules(1.0, 1.0))
    # The gentle rule controls the plant: setpoint 60 degC reached, overshoot small.
    pid = PID(tl["kp"], tl["ki"], tl["kd"], dt, setpoint=60.0, d_filter=tl["kd"] / tl["kp"] / 8)
    plant, y, peak = FOPDT(K, tau, L, dt), 20.0, 0.0
    for _ in range(int(1500 / dt)):
        y = plant.step(pid.update(round(y * 1000)) / 1000.0)
        peak = max(peak, y)
    assert abs(y - 60.0) < 0.05 and peak < 63.0


def test_timeout_fails_safe():
    # A plant that cannot reach the setpoint never oscillates around it.
    at = RelayTune(500.0, 1.0, high=80.0, low=20.0, timeout=300.0, idle=0.0)
    r = _tune(FOPDT(0.9, 160.0, 12.0, 1.0), at)
    assert at.status == FAILED and r["ok"] is False and at.out == 0


def test_configuration_errors():
    with pytest.raises(ValueError):
        RelayTune(50.0, 0.1, high=20.0, low=80.0)
    with pytest.raises(ValueError):
        RelayTune(50.0, 0.1, high=80.0, low=20.0, cycles=1)


@settings(max_examples=100, deadline=None)
@given(sp=st.floats(-536870.0, 536870.0), hyst=st.floats(0.0, 1048.0),
       high=st.sampled_from([536870.0, 100.0]), low=st.sampled_from([-536870.0, 0.0]),
       reverse=st.booleans(),
       ys=st.lists(st.one_of(st.integers(VAL_MIN, VAL_MAX),
                             st.sampled_from([VAL_MIN, VAL_MAX, SMALL_MIN, SMALL_MAX])),
                   min_size=1, max_size=300))
def test_bounds_extreme_inputs(sp, hyst, high, low, reverse, ys):
    at = wrap(RelayTune(sp, 0.01, high=high, low=low, hyst=hyst, reverse=reverse, cycles=2,
                        settle=0))
    wrap(at._sy)
    wrap(at._syr)
    for y in ys:
        at.update(Small(y))


def test_tick_allocates_nothing_on_micropython(mpy):
    """The plant (floats) runs in MicroPython too; each autotune tick runs under heap_lock."""
    script = r"""
import json, math, micropython
from cyphy_node.autotune import RelayTune

K, tau, L, dt = 0.9, 160.0, 12.0, 0.5
a = math.exp(-dt / tau)
delay = [0.0] * round(L / dt)
at = RelayTune(65.0, dt, high=80.0, low=20.0, hyst=0.02)
x, y, k, alloc = 0.0, 20.0, 0, 0
while at.status == 0:
    ym = round(y * 1000)
    t0 = micropython.mem_total()
    micropython.heap_lock()
    u = at.update(ym)
    micropython.heap_unlock()
    alloc += micropython.mem_total() - t0
    delay.append(u / 1000.0)
    x = a * x + (1 - a) * K * delay.pop(0)
    y = 20.0 + x
    k += 1
r = at.result()
print(json.dumps({"alloc": alloc, "ticks": k, "ku": r["ku"], "pu": r["pu"]}))
"""
    r = json.loads(mpy(script))
    ku, pu = ultimate_point(0.9, 160.0, 12.0)
    assert r["alloc"] == 0
    assert r["ku"] == pytest.approx(ku, rel=0.10)
    assert r["pu"] == pytest.approx(pu, rel=0.10)


# ---- identification, rule, timeout, and what the node does with a result ----

@pytest.mark.parametrize("K, tau, L, dt", PLANTS[1:])
def test_identifies_the_fopdt_model(K, tau, L, dt):
    """The exact relay waveform fit: K, T and L of balanced and delay-dominant plants."""
    at = RelayTune(20.0 + K * 50.0, dt, high=85.0, low=20.0, hyst=0.05)
    r = _tune(FOPDT(K, tau, L, dt), at, noise=0.01, seed=3)
    m = r["model"]
    assert r["stable"] and m["class"] == "fopdt" and r["rule"] == "fopdt"
    assert m["K"] == pytest.approx(K, rel=0.05)
    assert m["T"] == pytest.approx(tau, rel=0.05)
    assert m["L"] == pytest.approx(L, rel=0.05)
    for k in ("kp", "ki", "kd", "d_filter", "p_on_m", "sp_weight", "why", "reason", "ku",
              "pu"):
        assert k in r
    # the setpoint weight for pid.PID.set_sp_weight; p_on_m the safe old choice for a
    # caller that ignores it: P on measurement unless b is about 1
    assert type(r["sp_weight"]) is float and 0.0 <= r["sp_weight"] <= 1.0
    assert r["p_on_m"] == (r["sp_weight"] < 0.95)
    json.dumps(r)


def test_lag_dominant_fopdt_under_noise_is_identified_as_lag_dominant():
    """The peaks and switching levels from lines through the samples after each switch
    (not the noisy extremes and switching samples): lag-dominant plants (L / T 0.02-0.03,
    development seeds of tuning_plants.family, noise 1 % of the step) come out with
    L / (L + T) below 0.035 (with the raw figures: 0.04-0.15), and K / T within 15 %."""
    import tuning_plants as tp

    seen = 0
    for seed in (8, 12, 14, 1001):
        for c in tp.family(seed, 3, ["fotd"]):
            P = c.params
            if P["L"] / P["T"] > 0.031:
                continue
            r = tp.autotune(c)
            m = r["model"]
            assert r["stable"] and m["class"] == "fopdt", c.name
            assert m["tau"] < 0.035, (c.name, m)
            assert m["K"] / m["T"] == pytest.approx(P["K"] / P["T"], rel=0.15), c.name
            seen += 1
    assert seen >= 4


def test_an_fopdt_fit_is_capped_by_the_sensitivity_at_the_measured_point():
    """A lag-dominant plant a noisy run takes for a balanced one (development seed 13: L /
    (L + T) 0.051 identified as 0.16) gets the table's gains for the wrong row, Ms 2.08 on
    the plant; the loop's sensitivity at the point the relay measured (computed from the
    measurement alone) is capped at _SCAPF by scaling the gains: Ms 1.85."""
    import cyphy_node.autotune as AT
    import tuning_plants as tp

    c = tp.family(13, 4, ["fotd"])[3]
    r = tp.autotune(c)
    m = r["model"]
    assert r["stable"] and m["class"] == "fopdt" and m["tau"] > 0.12, (c.name, m)
    assert "sensitivity at the measured point <=" in r["why"]
    assert AT._s(r, m["w"], m["g"], m["phase"], c.dt) <= AT._SCAPF
    assert tp.ms(c, tp.gains(r)) < 1.9
    # the rule alone (no cap) on that model: over the bound on the real plant
    g = dict(r, **AT.tune(m, c.dt))
    assert tp.ms(c, tp.gains(g)) > 2.0


def test_a_balanced_fopdt_fit_gets_the_models_ms():
    """Where the waveform fit is accurate (L / (L + T) >= _MSTAU: the raw fit, within
    -0.003..+0.012 of the truth), the table's gains are scaled so that the identified
    model's Ms, at the node's own sample time, is _MSF (the table was derived at 16 samples
    per dead time; at the family's 8 it gives 1.83-1.88); the plant's Ms follows within
    0.03. Below _MSTAU (lag-dominant plants, whose fit can be off) the gains are left as
    the table gives them (then capped at the measured point, as before)."""
    import cyphy_node.autotune as AT
    import tuning_plants as tp

    seen = set()
    for seed in (7, 11, 12):
        for c in tp.family(seed, 2, ["fotd"]):
            r = tp.autotune(c)
            m = r["model"]
            assert r["stable"] and m["class"] == "fopdt", c.name
            g = dict(r, **AT.tune(m, c.dt))        # the table alone
            if m["tau"] >= AT._MSTAU:
                assert "the model's Ms" in r["why"], r["why"]
                f = r["kp"] / g["kp"]
                assert 1.0 < f < 1.1 and r["ki"] / g["ki"] == pytest.approx(f)
                assert tp.ms(c, tp.gains(r)) == pytest.approx(AT._MSF, abs=0.03), c.name
                seen.add("scaled")
            else:
                assert "the model's Ms" not in r["why"]
                assert r["kp"] <= g["kp"] * 1.0001     # (the measured point's cap may act)
                seen.add("kept")
    assert seen == {"scaled", "kept"}


def test_the_models_ms_on_micropython(mpy, cpy):
    """The model-Ms scaling (_msfit, tune time, floats) on MicroPython: the same gains as
    CPython, and result() stays short (about 60 frequencies and 16 bisection steps)."""
    script = r"""
import json, math, time
from cyphy_node.autotune import RelayTune
K, T, L, dt = 1.5, 10.0, 5.0, 0.25
a = math.exp(-dt / T)
delay = [0.0] * round(L / dt)
at = RelayTune(20.0, dt, high=70.0, low=30.0, hyst=0.05)
x, y = 0.0, 20.0
while at.status == 0:
    delay.append(at.update(round(y * 1000)) / 1000.0 - 50.0)
    x = a * x + (1 - a) * K * delay.pop(0)
    y = 20.0 + x
t0 = time.time()
r = at.result()
print(json.dumps({"kp": r["kp"], "ki": r["ki"], "ms": "the model's Ms" in r["why"],
                  "s": time.time() - t0}))
"""
    a, b = json.loads(mpy(script)), json.loads(cpy(script))
    assert a["ms"] and b["ms"]
    assert a["kp"] == pytest.approx(b["kp"], rel=1e-6) and a["ki"] == pytest.approx(b["ki"])
    assert a["s"] < 2.0


def test_rules_of_the_other_classes():
    """The "lag" rule (a double integrator from the measured point, in units of the sample
    time) and the "resonant" one (the point placed) give positive gains and a weight in
    0..1, and the lag rule scales as it should: twice the plant gain halves kp, a twice
    slower plant sampled twice slower keeps kp and doubles Ti and Td."""
    import cyphy_node.autotune as AT

    m = {"class": "lag", "fit": "waveform", "dphase": -0.2, "w": 2.0, "g": 0.05,
         "phase": 2.7, "K": 1.0, "T": 1.0, "L": 0.1}
    g = AT.tune(m, 0.05)
    assert g["rule"] == "lag" and g["kp"] > 0 and g["ki"] > 0 and g["kd"] > 0
    assert 0.0 <= g["sp_weight"] <= 1.0
    g2 = AT.tune(dict(m, g=0.1), 0.05)
    assert g2["kp"] == pytest.approx(g["kp"] / 2)
    # the plant twice slower (G(2s): the same point at half the frequency) sampled twice
    # slower: the same loop in its own time scale, kp the same, Ti and Td twice as long
    m3 = dict(m, w=1.0)
    assert AT.k2(m3) == pytest.approx(AT.k2(m) / 4)
    g3 = AT.tune(m3, 0.1)
    assert g3["kp"] == pytest.approx(g["kp"])
    assert g3["kp"] / g3["ki"] == pytest.approx(2 * g["kp"] / g["ki"])
    assert g3["kd"] / g3["kp"] == pytest.approx(2 * g["kd"] / g["kp"])
    assert g3["sp_weight"] == g["sp_weight"]
    r = AT.tune(dict(m, **{"class": "resonant", "fit": "harmonic"}), 0.05)
    assert r["rule"] == "resonant" and r["kp"] > 0 and 0.0 <= r["sp_weight"] <= 1.0


def test_default_timeout_scales_with_the_rate_and_the_period():
    # Never oscillates: fails after 20000 ticks whatever the rate (200 s at 100 Hz).
    at = RelayTune(500.0, 0.01, high=80.0, low=20.0, idle=0.0)
    r = _tune(FOPDT(0.9, 160.0, 12.0, 0.01), at)
    assert at.status == FAILED and at._ticks == 20001 and at.out == 0
    assert r["ok"] is False and r["stable"] is False and "no whole oscillation" in r["reason"]
    # Once a cycle is seen, the run may take 3 of its periods per cycle still to come.
    K, tau, L, dt = PLANTS[1]
    at = RelayTune(20.0 + K * 50.0, dt, high=80.0, low=20.0, hyst=0.02)
    plant, y = FOPDT(K, tau, L, dt), 20.0
    while at._edges < 2:
        y = plant.step(at.update(round(y * 1000)) / 1000.0)
    per = at._tp
    assert at.max_ticks == at._ticks + 3 * per * (at._smax + at.cycles)
    assert at.max_ticks * dt < 1000                 # not 200 000 s


class _Board:
    """Just enough board for a Node on CPython: the ADC reads UV (microvolts)."""

    def __init__(self):
        from cyphy_node.sched import VirtualClock
        self.clock = VirtualClock(0)
        self.uv = 1200000
        self.outs = {}
        self.mcu = "ESP32"

    def ticks_us(self):
        return self.clock.ticks_us()

    def __getattr__(self, name):
        return getattr(self.clock, name)

    def analog_in(self, pin, atten_db=11):
        b = self

        class Adc:
            min_mv, range_mv = 0, 3300

            def read_uv(self):
                return b.uv
        return Adc()

    def pwm_out(self, pin, freq_hz=1000, duty_u16=0):
        class Out:
            def duty_u16(self, d):
                self.v = d
        self.outs[pin] = o = Out()
        o.v = duty_u16
        return o

    def watchdog(self, timeout_ms):
        class W:
            def feed(self):
                pass
        return W()


def _node(tmp_path, monkeypatch):
    import time

    # MicroPython's time functions the node uses, on CPython (wrapping like the port's).
    ms = [0]
    monkeypatch.setattr(time, "ticks_ms", lambda: ms[0], raising=False)
    monkeypatch.setattr(time, "ticks_add", lambda a, b: (a + b) & ((1 << 30) - 1),
                        raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: ((a - b + (1 << 29)) &
                                                          ((1 << 30) - 1)) - (1 << 29),
                        raising=False)
    from cyphy.hil.defaults import THERMAL_CONFIG
    from cyphy_node import config
    from cyphy_node.node import Node

    cfg = json.loads(json.dumps(THERMAL_CONFIG))
    cfg["name"] = "tune"
    cfg = config.validate(cfg)
    return Node(cfg, _Board(), fault_path=str(tmp_path / "faults.log"),
                tune_path=str(tmp_path / "autotune.json"))


def test_node_applies_only_trusted_results(tmp_path, monkeypatch):
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    name = lp.name
    before = lp.pid.get_tunings()
    lp.u = 33000                                     # the output before the tune
    # A timeout: nothing applied, the PID resumes from the output before the tune.
    node.autotune(name, high=80, low=20, hyst=0.5)
    lp.u = 80000                                     # the relay's last output
    lp.tuner.status = FAILED
    node._check_tuners()
    st = node.tune_status(name)
    assert st["running"] is False and st["result"]["applied"] is False
    assert "timeout" in st["result"]["reason"]
    assert lp.pid.get_tunings() == before and lp.pid.out == 33000
    # Not stable: the same, and the refused run does not replace applied gains on flash.
    node.autotune(name, high=80, low=20, hyst=0.5)
    lp.tuner.status = DONE
    lp.tuner.result = lambda: {"ok": True, "stable": False, "reason": "cycles drift",
                               "rules": rules(10.0, 50.0)}
    node._check_tuners()
    assert lp.pid.get_tunings() == before
    assert node.tune_status(name)["result"]["reason"] == "cycles drift"
    # Trusted: the gains, the derivative filter and P on measurement are applied and kept.
    node.autotune(name, high=80, low=20, hyst=0.5)
    lp.tuner.status = DONE
    good = {"ok": True, "stable": True, "reason": "", "rule": "fopdt", "why": "test",
            "kp": 4.0, "ki": 0.05, "kd": 20.0, "d_filter": 0.5, "p_on_m": True,
            "rules": rules(10.0, 50.0)}
    lp.tuner.result = lambda: dict(good)
    node._check_tuners()
    assert lp.pid.get_tunings() == (4.0, 0.05, 20.0) and lp.pid.p_on_m and lp.pid.tf == 0.5
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved[name]["applied"] is True
    # ... and a later refused run leaves them in place, noted beside them.
    node.autotune(name, high=80, low=20, hyst=0.5)
    lp.tuner.status = FAILED
    node._check_tuners()
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved[name]["kp"] == 4.0 and saved[name]["last_refused"]["ok"] is False
    # At boot the kept result is applied again.
    node2 = _node(tmp_path, monkeypatch)
    assert node2.loops[0].pid.get_tunings() == (4.0, 0.05, 20.0)
    # An explicit classical rule is still available.
    node.autotune(name, high=80, low=20, hyst=0.5, rule="tyreus_luyben")
    lp.tuner.status = DONE
    lp.tuner.result = lambda: dict(good)
    node._check_tuners()
    tl = rules(10.0, 50.0)["tyreus_luyben"]
    assert lp.pid.get_tunings() == pytest.approx((tl["kp"], tl["ki"], tl["kd"]))


def test_a_result_that_fails_ends_the_tune_and_gives_the_loop_back(tmp_path, monkeypatch):
    """Whatever goes wrong when a run ends (the result's arithmetic, out of memory, a gain
    the fixed-point PID cannot hold), the tune ends, the loop goes back to its gains,
    mode and output from before the run, and the reason is reported; nothing raises out
    of the service (it used to raise on every pass, keeping the loop on the relay and the
    node's comms unserved)."""
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    name = lp.name
    before = lp.pid.get_tunings()

    def boom(*_):
        raise MemoryError("memory allocation failed")

    lp.u = 33000                                     # the output before the tune
    node.autotune(name, high=80, low=20, hyst=0.5)
    lp.u = 80000                                     # the relay's last output
    lp.tuner.status = DONE
    lp.tuner.result = lp.tuner.follow_up = boom
    node._check_tuners()
    st = node.tune_status(name)
    assert st["running"] is False and st["result"]["applied"] is False
    assert st["result"]["reason"].startswith("the result could not be computed on the node "
                                             "(MemoryError"), st
    assert node._tuning == 0 and lp.tuner is None
    assert lp.pid.get_tunings() == before and lp.pid.out == 33000 and lp.pid.is_auto
    # a trusted result whose gains the PID cannot hold: not applied, the output from before
    lp.u = 33000
    node.autotune(name, high=80, low=20, hyst=0.5)
    lp.u = 80000
    lp.tuner.status = DONE
    lp.tuner.result = lambda: {"ok": True, "stable": True, "reason": "", "rule": "fopdt",
                               "why": "test", "kp": 1e12, "ki": 0.05, "kd": 20.0,
                               "rules": rules(10.0, 50.0)}
    node._check_tuners()
    r = node.tune_status(name)["result"]
    assert r["applied"] is False and "too large" in r["error"], r
    assert lp.pid.get_tunings() == before and lp.pid.out == 33000 and node._tuning == 0
    # the result cannot even be kept (out of memory for its JSON): the same, and the
    # result is still there to read; an abort likewise
    import sys

    for stop in ("end", "abort"):
        lp.u = 33000
        node.autotune(name, high=80, low=20, hyst=0.5)
        # params is loaded with the tune (and forgotten after it): patch the one in use
        monkeypatch.setattr(sys.modules["cyphy_node.tuning"].params, "write", boom)
        lp.u = 80000
        if stop == "abort":
            assert node.abort_tune(name, "stopped by the host")
        else:
            lp.tuner.status = FAILED
            node._check_tuners()
        r = node.tune_status(name)["result"]
        assert r["applied"] is False and r["reason"], r
        assert lp.pid.out == 33000 and lp.pid.is_auto and node._tuning == 0, stop


def test_tick_on_the_32_bit_port_allocates_nothing_and_matches_cpython():
    """RelayTune.update on the 32-bit MicroPython (31-bit small ints, as on ESP32) under
    heap_lock, on an FOPDT plant with a setpoint near the top of the signal range: no
    allocation (a big int would allocate) and the same result as CPython."""
    from test_32bit import PRELUDE, on_cpython
    from cyphy import mp32

    code = """
import math
from cyphy_node.autotune import RelayTune
def main():
    K, tau, L, dt = 2.0, 20.0, 4.0, 0.25
    a = math.exp(-dt / tau)
    delay = [0.0] * round(L / dt)
    at = RelayTune(500000.0, dt, high=80.0, low=20.0, hyst=0.05)
    x = 0.0
    y = [500000000 - 60000]
    u = [0]
    def tick():
        u[0] = at.update(y[0])
    n = 0
    while at.status == 0 and n < 5000:
        locked(tick)
        delay.append(u[0] / 1000.0)
        x = a * x + (1 - a) * K * (delay.pop(0) - 50.0)
        y[0] = 500000000 + round(x * 1000)
        n += 1
    r = at.result()
    return [n, at.status, round(r["ku"], 6), round(r["pu"], 6), r["rule"],
            round(r["kp"], 6)]
"""
    why = mp32.unavailable()
    if why:
        pytest.fail(f"the 32-bit MicroPython is not installed: {why}")
    res = mp32.run(PRELUDE + code + "\nprint(json.dumps(main()))\n", 1024 * 1024,
                   mp32.firmware_files())
    assert res.ok, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got[1] == DONE and got[4] == "fopdt"
    want = on_cpython(code)
    assert got[:2] == want[:2] and got[4] == want[4]
    assert got[2] == pytest.approx(want[2], rel=1e-4) and got[5] == pytest.approx(want[5], rel=1e-3)


def test_the_hand_over_after_a_tune_is_bumpless(tmp_path, monkeypatch):
    """While the relay drives the actuator the PID tracks the measurement and the relay's
    output, so when it takes over (after an applied run, a refused one, or an abort) its
    first outputs continue from the output applied: no derivative kick from a measurement
    it last saw before the tune, no jump to a stale output."""
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    board = node.board
    lp.setpoint = 60.0
    lp.pid.set_tunings(4.0, 0.05, 20.0)
    board.uv = 900000                                # 55.1 degC
    for _ in range(20):
        lp.tick()
    good = {"ok": True, "stable": True, "reason": "", "rule": "fopdt", "why": "test",
            "kp": 4.0, "ki": 0.05, "kd": 20.0, "rules": rules(10.0, 50.0)}

    def run_and_end(end):
        node.autotune(lp.name, high=80, low=20, hyst=0.5)
        for k in range(200):                         # the measurement moves while it runs
            board.uv = 900000 + 1000 * k
            lp.tick()
        before = lp.u
        end()
        outs = []
        for _ in range(5):
            lp.tick()
            outs.append(lp.u)
        return before, outs

    def applied():
        lp.tuner.status = DONE
        lp.tuner.result = lambda: dict(good)
        node._check_tuners()

    def smooth(start, outs):
        # the first output is the one applied before; then only what the (filtered)
        # measurement's own movement asks of P and D: a few % per tick at most, where a
        # derivative of the measurement last seen before the tune jumped by tens of %
        steps = [abs(b - a) for a, b in zip([start] + outs, outs)]
        return steps[0] < 500 and max(steps) < 3000, steps

    # applied: the PID takes over from the relay's last output
    before, outs = run_and_end(applied)
    ok, steps = smooth(before, outs)
    assert ok, (before, outs, steps)
    # aborted: back to the output before the run, then smooth from there
    u0 = lp.u
    _, outs = run_and_end(lambda: node.abort_tune(lp.name, "test"))
    assert node.tune_status(lp.name)["result"]["reason"] == "test"
    ok, steps = smooth(u0, outs)
    assert ok, (u0, outs, steps)
    assert lp.pid.get_tunings() == (4.0, 0.05, 20.0) and lp.mode == "auto"


def test_the_protocols_rule_names_are_the_tuners():
    """TUNE names a rule by its index in proto.TUNE_RULES (the node's resident codec cannot
    import autotune.py, which is loaded only while a tune runs): the two lists agree."""
    from cyphy_node import proto

    assert proto.TUNE_RULES[0] == "auto"
    assert sorted(proto.TUNE_RULES[1:]) == sorted(rules(1.0, 1.0))


# ---- the second run: a second point, a second-order-plus-dead-time model ----

@pytest.mark.parametrize("K, wn, zeta, L", [(1.5, 2.0, 0.2, 0.1), (0.7, 0.5, 0.45, 1.2),
                                            (2.0, 1.0, 0.1, 0.05)])
def test_the_sopdt_fit_through_two_points_is_exact(K, wn, zeta, L):
    import cmath

    import cyphy_node.autotune as AT

    def point(w):
        g = K * wn * wn * cmath.exp(-1j * w * L) / ((1j * w) ** 2 + 2 * zeta * wn * 1j * w +
                                                    wn * wn)
        lag = -cmath.phase(g)
        while lag < 0:
            lag += 2 * math.pi
        return w, abs(g), lag

    # the relay's points: lag 180 and about 150 degrees
    ws = [w / 1000 * wn for w in range(100, 5000)]
    w1 = min(ws, key=lambda w: abs(point(w)[2] - math.pi))
    w2 = min(ws, key=lambda w: abs(point(w)[2] - 2.6))
    f = AT.sopdt_fit(*point(w1), *point(w2))
    assert f == pytest.approx((K, wn, zeta, L), rel=1e-3)
    assert AT.sopdt_fit(*point(w1), *point(w1)) is None      # one point is not two


def test_an_underdamped_plant_gets_a_second_run_and_the_sopdt_rule():
    """The first run's measurement is sinusoidal: follow_up() gives a second run with a
    wider hysteresis, whose result is the first's with the model through both points and
    the "sopdt" rule; an FOPDT plant (triangular measurement) gets no second run."""
    import tuning_plants as tp

    c = tp.sopdt_case(0.3, 0.3)
    c.noise = 0.1
    r = tp.autotune(c)
    m = r["model"]
    assert r["stable"] and r["second"]["ok"] and m["class"] == "sopdt" == r["rule"]
    assert m["wn"] == pytest.approx(1.0, rel=0.05)
    assert m["zeta"] == pytest.approx(0.3, rel=0.15)
    assert m["K"] == pytest.approx(1.0, rel=0.15)
    assert r["hyst"] < r["second"]["hyst"] and r["second"]["w"] < r["model"]["w"]
    assert 0.0 <= r["sp_weight"] <= 1.0 and r["kp"] > 0 and r["ki"] > 0 and r["kd"] > 0
    json.dumps(r)
    at = RelayTune(20.0 + 1.0 * 50.0, 0.05, high=85.0, low=20.0, hyst=0.05)
    _tune(FOPDT(1.0, 20.0, 4.0, 0.05), at, noise=0.01, seed=3)
    assert at.follow_up() is None


def test_a_failed_second_run_leaves_the_first_runs_result():
    import tuning_plants as tp

    c = tp.sopdt_case(0.3, 0.3)
    p = c.plant()
    at = RelayTune(c.y0, c.dt, **c.relay())
    while at.status == RUNNING:
        u = at.update(round(p.measure(c.out) * 1000)) / 1000.0
        p.set_input(c.inp, u)
        p.step(c.dt)
    first = at.result()
    second = at.follow_up()
    assert second is not None and second.first == first
    assert second.follow_up() is None                  # never a third
    second.status = FAILED                             # e.g. timed out
    r = second.result()
    assert r["stable"] and r["rule"] == first["rule"] == "resonant"
    assert r["kp"] == first["kp"] and r["second"]["ok"] is False
    assert "timeout" in r["second"]["reason"]


def test_the_node_runs_the_second_run_then_applies(tmp_path, monkeypatch):
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    node.autotune(lp.name, high=80, low=20, hyst=0.5)
    first = lp.tuner
    second = RelayTune(50.0, 0.1, 80.0, 20.0, 2.0)
    first.status = DONE
    first.follow_up = lambda: second
    node._check_tuners()
    assert lp.tuner is second and node.tune_status(lp.name)["running"]
    second.status = DONE
    good = {"ok": True, "stable": True, "reason": "", "rule": "sopdt", "why": "test",
            "kp": 3.0, "ki": 0.5, "kd": 2.0, "d_filter": 0.1, "p_on_m": True,
            "sp_weight": 0.5, "rules": rules(10.0, 50.0)}
    second.result = lambda: dict(good)
    node._check_tuners()
    assert lp.tuner is None and lp.pid.get_tunings() == (3.0, 0.5, 2.0)
    # a classical rule asked for: no second run
    node.autotune(lp.name, high=80, low=20, hyst=0.5, rule="tyreus_luyben")
    lp.tuner.status = DONE
    lp.tuner.follow_up = lambda: second
    lp.tuner.result = lambda: dict(good)
    node._check_tuners()
    assert lp.tuner is None


def test_the_second_run_on_micropython(mpy):
    """The whole two-run tune on MicroPython: both runs' ticks allocation-free, follow_up()
    and the two-point model and rule in result() (floats, dicts) as on CPython."""
    script = r"""
import json, math, micropython
from cyphy_node.autotune import RelayTune

K, wn, z, L, dt, n = 1.2, 2.0, 0.3, 0.1, 0.0125, 10
delay = [50.0 / K] * round(L / dt)
h = dt / n
at = RelayTune(50.0, dt, high=60.0, low=25.0, hyst=0.3)
y, v, alloc, runs = 50.0, 0.0, 0, 0
while at is not None:
    runs += 1
    while at.status == 0:
        ym = round(y * 1000)
        t0 = micropython.mem_total()
        micropython.heap_lock()
        u = at.update(ym)
        micropython.heap_unlock()
        alloc += micropython.mem_total() - t0
        delay.append(u / 1000.0)
        ud = delay.pop(0) - 50.0 / K
        for _ in range(n):
            a = wn * wn * (K * ud + 50.0 - y) - 2 * z * wn * v
            v += a * h
            y += v * h
    last, at = at, at.follow_up()
r = last.result()
m = r["model"]
print(json.dumps({"alloc": alloc, "runs": runs, "cls": m["class"], "K": m["K"],
                  "wn": m.get("wn"), "zeta": m.get("zeta"), "L": m["L"], "kp": r["kp"],
                  "second": r.get("second")}))
"""
    r = json.loads(mpy(script))
    assert r["alloc"] == 0 and r["runs"] == 2 and r["second"]["ok"], r
    assert r["cls"] == "sopdt", r
    assert r["K"] == pytest.approx(1.2, rel=0.15)
    assert r["wn"] == pytest.approx(2.0, rel=0.1)
    assert r["zeta"] == pytest.approx(0.3, rel=0.2)
    assert r["L"] == pytest.approx(0.1 + 0.0125 / 2, rel=0.3) and r["kp"] > 0
