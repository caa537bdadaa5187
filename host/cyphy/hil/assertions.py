"""Asserting a step response against a spec; a failure saves a PNG of the response."""

from __future__ import annotations

import math
from pathlib import Path

from .metrics import Response, StepMetrics, step_metrics


class StepSpecError(AssertionError):
    def __init__(self, msg: str, metrics: StepMetrics, plot: Path | None) -> None:
        super().__init__(msg)
        self.metrics = metrics
        self.plot = plot


def check_step(r: Response, *, rise_time_max: float | None = None,
               overshoot_max_pct: float | None = None, settling_time_max: float | None = None,
               sse_max: float | None = None, iae_max: float | None = None,
               band_pct: float = 2.0, plot: Path | None = None) -> StepMetrics:
    """The step's figures, or StepSpecError naming every figure out of spec (and, with
    plot, the PNG written there)."""
    m = step_metrics(r, band_pct=band_pct)
    bad = []
    for name, value, limit, unit in (
            ("rise time", m.rise_time_s, rise_time_max, " s"),
            ("overshoot", m.overshoot_pct, overshoot_max_pct, " %"),
            (f"settling time ({band_pct:g} %)", m.settling_time_s, settling_time_max, " s"),
            ("|steady-state error|", abs(m.steady_state_error), sse_max, ""),
            ("IAE", m.iae, iae_max, "")):
        if limit is not None and not value <= limit:  # catches inf and nan too
            shown = "never" if math.isinf(value) else f"{value:.4g}{unit}"
            bad.append(f"{name} {shown} > {limit:g}{unit}")
    if not bad:
        return m
    png = None
    if plot is not None:
        from cyphy.plot import plot_response

        plot.parent.mkdir(parents=True, exist_ok=True)
        png = plot_response(plot, r.t, r.setpoint, r.measurement, r.output or None,
                            title=f"{r.loop}: out of spec" if r.loop else "out of spec",
                            notes=m.lines())
    msg = "step response out of spec: " + "; ".join(bad) + "\n" + "\n".join(m.lines())
    if png is not None:
        msg += f"\nplot: {png}"
    raise StepSpecError(msg, m, png)
