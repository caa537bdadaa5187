"""Section tuning: the relay autotune judged on plants it was not derived on.

For each plant of a held-out family (tests/firmware/tuning_plants.py: first-order-plus-dead-
time plants with dead time / time constant 0.02..2, DC motors, two-tank levels at several
operating points, underdamped second-order plants; measurement noise 1 % of the step),
drawn from seeds never used while deriving the rules:

1. the firmware's RelayTune runs on the noisy plant (the sim board's model, _plant.make)
   with a relay an operator would choose (and a second run when the first asks for one:
   RelayTune.follow_up), and result() gives the model, rule and gains;
2. the firmware's PID with those gains runs a setpoint step and a load step (a step on the
   plant input) without noise: overshoot, 2 % settling time, IAE;
3. the reference: the PID of the same structure, sample time and output limits minimising
   the IAE of each task alone, subject to overshoot <= 10 %, 2 % settling and Ms <= 2
   (docs/control.md, "Relay autotune"), found by a seeded random search and Nelder-Mead.

Printed per plant: autotuned vs optimal gains (kp, ki, kd: auto / setpoint-optimal /
load-optimal), overshoot, settling, IAE ratio for both steps, and the bound: the best
larger ratio one PID of this structure reaches on the exact plant with Ms <= 1.9 and <= 2
(what any rule could do at best with, or without, a margin for identification errors;
not with --quick). Recorded: one
`tuning_plant` record per plant and the summary figures below. --quick: one plant per kind.
"""

from __future__ import annotations

import statistics
import sys
import time

import common as C

sys.path.insert(0, str(C.REPO / "tests" / "firmware"))

SEEDS = (2027, 31337)          # held out: the rules were derived on seeds 7 to 14
NAMES = [("tuning_goal_met_pct", "%"), ("tuning_spec_met_pct", "%"),
         ("tuning_iae_ratio_median", "x")]


# The best any rule of our PID structure could do on each plant, knowing it exactly: the
# smallest larger-of-the-two IAE ratio of one PID (and b) with Ms at most each of these
# (tuning_plants.single_pid_bound; the reference optima themselves are bounded by Ms 2).
BOUND_MS = (1.9, 2.0)


def _bound(j: dict) -> str:
    b = j.get("bound") or {}
    return "".join(f" best single PID at Ms {k}: {v:.2f}" if v is not None else
                   f" best single PID at Ms {k}: -" for k, v in b.items())


def run(ctx) -> list[dict]:
    import tuning_plants as tp

    seeds = SEEDS[:1] if ctx.quick else SEEDS
    per = 1 if ctx.quick else 2
    recs, js = [], []
    for seed in seeds:
        for case in tp.family(seed, per):
            t0 = time.monotonic()
            j = tp.judge(case)
            if j["stable"] and not ctx.quick:   # what one PID could do at best (BOUND_MS)
                j["bound"] = {f"{m:.2f}": tp.single_pid_bound(case, j, m) for m in BOUND_MS}
            ctx.log(tp.row(j) + _bound(j) + f" ({time.monotonic() - t0:.1f} s)")
            js.append(j)
            params = {("tune_reason" if k == "reason" else k): v for k, v in j.items()
                      if k != "why"}
            rs, rl = j.get("ratio_setpoint"), j.get("ratio_load")
            if rs is not None and rl is not None:      # value: the larger IAE ratio
                recs.append(C.record("tuning_plant", round(max(rs, rl), 3), "x", seed=seed,
                                     **params))
            else:
                why = ("the tune was refused: " + j["reason"]) if not j["stable"] else \
                    "no reference optimum found (no PID met the spec in the search)"
                recs.append(C.skipped("tuning_plant", "x", why, seed=seed, plant=j["plant"],
                                      kind=j["kind"]))
    n = len(js)
    goal = sum(1 for j in js if j["goal"])
    spec = sum(1 for j in js if j.get("spec"))
    ratios = [max(j["ratio_setpoint"], j["ratio_load"]) for j in js
              if j.get("ratio_setpoint") is not None and j.get("ratio_load") is not None]
    recs.append(C.record("tuning_goal_met_pct", round(100.0 * goal / n, 1), "%", plants=n,
                         goal=f"overshoot <= 10 %, settles within 2 %, IAE <= "
                              f"{tp.GOAL_RATIO}x optimal (setpoint and load)"))
    recs.append(C.record("tuning_spec_met_pct", round(100.0 * spec / n, 1), "%", plants=n,
                         goal="overshoot <= 10 % and settles within 2 % (setpoint and load)"))
    if ratios:
        recs.append(C.record("tuning_iae_ratio_median", round(statistics.median(ratios), 2),
                             "x", plants=len(ratios), worst=round(max(ratios), 2),
                             what="the larger of the setpoint and load IAE ratios"))
    return recs
