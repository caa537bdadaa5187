"""Closed-loop step response of the oven in the node's virtual time: a 20-minute thermal
step runs in seconds, with the same figures on every run (on a board: in real time)."""

import pytest

from cyphy.hil.metrics import step_metrics

SPEC = dict(rise_time_max=400, overshoot_max_pct=10, settling_time_max=1200, sse_max=0.5)


@pytest.mark.sim_only  # 20 minutes of real time on a board: run it with --cyphy-port when you have them
@pytest.mark.cyphy(virtual_time=True)
def test_step_within_spec_and_repeatable(node, control):
    r = node.step("oven", 60.0, seconds=1800, period_ms=1000)
    m = control.assert_step(r, **SPEC)
    assert 0 <= max(r.output) <= 100
    node.reset()                                  # a fresh boot: the very same response
    again = node.step("oven", 60.0, seconds=1800, period_ms=1000)
    assert again.measurement == r.measurement and again.output == r.output
    print("\n".join(m.lines()))


@pytest.mark.sim_only
@pytest.mark.cyphy(virtual_time=True)
def test_disturbance_is_rejected(node, plant, control):
    node.step("oven", 60.0, seconds=1500, period_ms=1000)
    plant.set_input("ambient", 5.0)               # the lab door opens: -15 degC ambient
    r = node.record(900, period_ms=1000)["oven"]
    assert min(r.measurement) < 59.5              # it was felt...
    assert abs(r.measurement[-1] - 60.0) < 0.5    # ...and rejected by the integral action
    assert plant.true("temperature") == pytest.approx(r.measurement[-1], abs=0.5)


@pytest.mark.sim_only
@pytest.mark.cyphy(virtual_time=True)
def test_a_recording_starts_at_the_instant_of_the_step(node):
    """The first sample is the step itself (new setpoint, measurement not yet moved), so a
    coarse recording's IAE and y0 agree with a fine one's to within one coarse sample's
    trapezoid error; without it the first period went missing (IAE ~10 % low)."""
    coarse = node.step("oven", 60.0, seconds=300, period_ms=2000)
    assert (coarse.t[0], coarse.setpoint[0]) == (0.0, 60.0)
    assert coarse.measurement[0] == pytest.approx(20.0, abs=0.5)   # the plant at ambient
    node.reset()
    fine = node.step("oven", 60.0, seconds=300, period_ms=100)
    mc, mf = step_metrics(coarse), step_metrics(fine)
    assert mc.y0 == pytest.approx(mf.y0, abs=0.3)
    # one 2 s sample of a 40-degree error is 80 degC s; trapezoids on a smooth curve do far better
    assert abs(mc.iae - mf.iae) < 8.0, (mc.iae, mf.iae)
