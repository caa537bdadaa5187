"""Step-response figures against responses whose figures are known in closed form."""

from __future__ import annotations

import math

import pytest

from cyphy.hil.assertions import StepSpecError, check_step
from cyphy.hil.metrics import Response, step_metrics


def first_order(tau: float, k: float = 1.0, n: int = 20001, t_end: float = 20.0) -> Response:
    t = [i * t_end / (n - 1) for i in range(n)]
    return Response(t, [k] * n, [k * (1 - math.exp(-x / tau)) for x in t], loop="fo")


def second_order(zeta: float, wn: float = 1.0, n: int = 40001, t_end: float = 40.0) -> Response:
    wd = wn * math.sqrt(1 - zeta ** 2)
    phi = math.acos(zeta)
    t = [i * t_end / (n - 1) for i in range(n)]
    y = [1 - math.exp(-zeta * wn * x) / math.sqrt(1 - zeta ** 2) * math.sin(wd * x + phi) for x in t]
    return Response(t, [1.0] * n, y, loop="so")


def test_first_order_figures():
    m = step_metrics(first_order(tau=2.0))
    assert m.rise_time_s == pytest.approx(2.0 * math.log(9), rel=1e-3)      # tau ln 9
    assert m.overshoot_pct == 0
    assert m.settling_time_s == pytest.approx(2.0 * math.log(50), rel=1e-3)  # 2 % band
    assert m.iae == pytest.approx(2.0 * (1 - math.exp(-10)), rel=1e-3)       # tau (1 - e^-T/tau)
    assert abs(m.steady_state_error) < 1e-3


def test_second_order_overshoot():
    zeta = 0.3
    m = step_metrics(second_order(zeta))
    expected = 100 * math.exp(-zeta * math.pi / math.sqrt(1 - zeta ** 2))
    assert m.overshoot_pct == pytest.approx(expected, rel=1e-3)


def test_a_response_that_never_settles():
    r = first_order(tau=100.0)
    m = step_metrics(r)
    assert math.isinf(m.settling_time_s) and math.isinf(m.rise_time_s)
    assert m.steady_state_error > 0.5


def test_check_step_passes_and_fails_with_a_plot(tmp_path):
    r = second_order(0.3)
    check_step(r, overshoot_max_pct=40, settling_time_max=20)
    with pytest.raises(StepSpecError) as e:
        check_step(r, overshoot_max_pct=10, sse_max=0.01, plot=tmp_path / "p" / "step.png")
    msg = str(e.value)
    assert "overshoot 37.23 % > 10 %" in msg and "plot:" in msg
    assert "steady-state" not in msg.split("\n")[0]   # within its limit: not listed
    assert (tmp_path / "p" / "step.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_responses_are_refused():
    with pytest.raises(ValueError):
        Response([0.0], [1.0], [0.0])
    with pytest.raises(ValueError):
        Response([0.0, -1.0], [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="no step"):
        step_metrics(Response([0.0, 1.0], [1.0, 1.0], [1.0, 1.0]))
