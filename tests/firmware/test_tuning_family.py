"""The relay autotune judged as a user would, on plants the rules were not derived on.

The rules in autotune.py were derived on normalised FOPDT and underdamped second-order-
plus-dead-time plants (autotune._TABLE, autotune._SOPDT) and on the development seeds 7 to
10 of tuning_plants.family (the "lag" and "resonant" classes; seeds 7 to 14 checked the
"sopdt" identification and rule); the plants here come from other seeds. For each one: the firmware's RelayTune on the noisy plant,
the firmware's PID with the result on a setpoint and a load step, and the reference
optimum of each task found afresh (nothing cached). See tuning_plants.py for the family,
the steps and the reference, and docs/control.md ("Relay autotune") for the goals.
"""

from __future__ import annotations

import json

import pytest

import tuning_plants as tp

HELD_OUT = (2027, 31337)
CASES = [c for seed in HELD_OUT for c in tp.family(seed, 2)]


# The IAE goal (1.2x the optimum of each step) is the aim; the bounds below are what the
# rules achieve today on this held-out family with some margin (a regression guard), per
# kind: (setpoint, load). docs/control.md gives the figures and why they miss the goal.
RATIO_BOUND = {"fotd": (1.35, 1.35), "dcmotor": (1.4, 2.0), "twotank": (1.5, 1.85),
               "second_order": (1.55, 1.7)}


# One test per plant (a few seconds each: the tune, both steps and the reference optimum),
# so that the test workers share the family instead of one of them judging all 16.
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_plant_is_tuned_meets_the_spec_and_the_iae_bound(case):
    """Trusted result, robust loop (Ms <= 2), overshoot at most 10 %; it settles within
    2 % after a setpoint step and after a load step; and the IAE ratios stay within the
    kind's bound."""
    j = tp.judge(case)
    print("\n" + tp.row(j))
    assert j["stable"], j["reason"]
    json.dumps(j)                                    # plain data
    assert j["overshoot"] <= tp.OS_MAX, tp.row(j)
    assert j["ms"] <= tp.MS_MAX, tp.row(j)
    assert j["settle_s"] is not None and j["load_settle_s"] is not None, tp.row(j)
    sp, ld = RATIO_BOUND[j["kind"]]
    assert j["ratio_setpoint"] is not None and j["ratio_load"] is not None, tp.row(j)
    assert j["ratio_setpoint"] <= sp and j["ratio_load"] <= ld, tp.row(j)


# ---- the plant added for this family: _plant's second_order ----

@pytest.mark.parametrize("zeta", [0.2, 1.0, 2.5])
def test_second_order_plant_matches_the_analytic_step(zeta):
    import math

    import _plant

    K, wn, L, dt = 2.0, 1.5, 0.5, 0.1
    p = _plant.make({"type": "second_order", "gain": K, "wn_rad_s": wn, "zeta": zeta,
                     "dead_time_s": L})
    p.set_input("drive", 1.0)
    worst = 0.0
    for k in range(1, 301):
        p.step(dt)
        t = k * dt - L
        if t <= 0:
            want = 0.0
        elif zeta < 1:
            wd = wn * math.sqrt(1 - zeta * zeta)
            want = K * (1 - math.exp(-zeta * wn * t) * (math.cos(wd * t) + zeta * wn / wd *
                                                       math.sin(wd * t)))
        elif zeta == 1:
            want = K * (1 - math.exp(-wn * t) * (1 + wn * t))
        else:
            q = wn * math.sqrt(zeta * zeta - 1)
            s1, s2 = -zeta * wn + q, -zeta * wn - q
            want = K * (1 + (s2 * math.exp(s1 * t) - s1 * math.exp(s2 * t)) / (s1 - s2))
        worst = max(worst, abs(p.true("y") - want))
    assert worst < 1e-9


def test_second_order_plant_spec_and_load():
    import _plant

    with pytest.raises(ValueError, match="umin"):
        _plant.make({"type": "second_order", "umin": 5, "umax": 5})
    with pytest.raises(ValueError, match="zeta"):
        _plant.make({"type": "second_order", "zeta": 0})
    p = _plant.make({"type": "second_order", "gain": 3.0, "load": 2.0,
                     "initial": {"drive": 10.0}})
    assert p.true("y") == pytest.approx(6.0)          # at rest: gain * load
    assert p.limits("drive") == (0.0, 100.0) and p.outputs == ("y",)
    for _ in range(2000):
        p.step(0.05)
    assert p.true("y") == pytest.approx(36.0, rel=1e-6)   # gain * (drive + load)
