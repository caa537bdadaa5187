"""The relay autotune from a HIL test: `node.tune(...)` runs it over the protocol as `cyphy
tune` does, on the node's real time, and the gains it applied are the loop's (docs/hil.md).
A fast oven (tau 1.5 s, dead time 0.3 s, a 40 Hz loop) so that the run takes seconds."""

import copy
import time

import pytest

from cyphy.hil.defaults import THERMAL_BENCH, THERMAL_CONFIG

BENCH = copy.deepcopy(THERMAL_BENCH)
BENCH["plant"].update({"tau_s": 1.5, "dead_time_s": 0.3})
FAST = copy.deepcopy(THERMAL_CONFIG)
FAST["loops"][0].update({"rate_hz": 40})
FAST["loops"][0].pop("filter", None)
FAST["loops"][0]["controller"].update({"kp": 2.0, "ki": 0.5, "kd": 0.0, "setpoint": 40.0})


def settled(node, sp=40.0, seconds=20.0):
    """Until the oven has been within 0.5 degC of its setpoint for 3 s in a row (a relay
    started while the loop still moves drifts)."""
    t0, since = time.monotonic(), None
    while time.monotonic() < t0 + seconds:
        if abs(node.get("oven.measurement") - sp) < 0.5:
            since = since or time.monotonic()
            if time.monotonic() - since >= 3.0:
                return
        else:
            since = None
        time.sleep(0.25)
    pytest.fail(f"the oven did not settle at {sp} degC within {seconds} s")


@pytest.mark.sim_only  # the fast oven is the sim's; on a board tune the plant you have
@pytest.mark.cyphy(config=FAST, bench=BENCH)
def test_the_fixture_tunes_a_loop_and_the_gains_are_in_force(node):
    settled(node)
    seen = []
    r = node.tune("oven", amplitude=20.0, progress=seen.append, poll_s=0.25)
    assert r["stable"] and r["applied"], r
    for k in ("ku", "pu_s", "rule", "kp", "ki", "kd", "why"):
        assert k in r, k
    assert seen and all(s["running"] for s in seen)
    st = node.get("oven")
    assert (st["kp"], st["ki"], st["kd"]) == pytest.approx((r["kp"], r["ki"], r["kd"]), rel=1e-6)
    assert st["mode"] == "auto" and st["sources"]["kp"] == "tune"
