"""Step-response figures, as control engineers state specs: rise time, overshoot, settling
time, steady-state error and IAE, computed from a recorded response (telemetry, or a
recording made on the node in virtual time).

Definitions (for a step of the setpoint from y0 to sp, amplitude A = sp - y0):
- rise time: from the first crossing of y0 + 10 % A to the first crossing of y0 + 90 % A;
- overshoot: the largest excursion past sp, in % of |A| (0 when it never passes sp);
- settling time: from the step to the last time |y - sp| exceeds the band (2 % of |A| by
  default); infinite if it is still outside at the end;
- steady-state error: sp minus the mean of y over the last `tail` fraction of the record;
- IAE: the integral of |sp - y| over the record (trapezoids), in units x seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class Response:
    """One loop's recorded response: times in seconds from the step, and its signals."""

    t: list[float]
    setpoint: list[float]
    measurement: list[float]
    output: list[float] = field(default_factory=list)
    loop: str = ""

    def __post_init__(self) -> None:
        n = len(self.t)
        if n < 2 or len(self.setpoint) != n or len(self.measurement) != n:
            raise ValueError("a response needs at least 2 samples of t, setpoint and measurement")
        if any(b < a for a, b in zip(self.t, self.t[1:])):
            raise ValueError("response times must not go backwards")

    @classmethod
    def from_samples(cls, samples: Sequence[dict], loop: str, t0_ms: int | None = None) -> "Response":
        """From telemetry-style samples: {"t_ms", "loops": {loop: {setpoint, measurement,
        output}}}; t_ms unwrapped (ESP32's ticks_ms wraps at 2**30)."""
        if not samples:
            raise ValueError("no samples")
        t, sp, y, u = [], [], [], []
        base = samples[0]["t_ms"] if t0_ms is None else t0_ms
        wraps, last = 0, None
        for s in samples:
            ms = s["t_ms"]
            if last is not None and ms < last - (1 << 29):
                wraps += 1
            last = ms
            v = s["loops"][loop]
            t.append((ms + (wraps << 30) - base) / 1000)
            sp.append(v["setpoint"])
            y.append(v["measurement"])
            u.append(v["output"])
        return cls(t, sp, y, u, loop)


@dataclass
class StepMetrics:
    y0: float
    setpoint: float
    rise_time_s: float          # inf if it never got to 90 %
    overshoot_pct: float
    settling_time_s: float      # inf if it never settled in the band
    steady_state_error: float   # setpoint - final mean
    iae: float
    band_pct: float

    def lines(self) -> list[str]:
        return [f"step {self.y0:g} -> {self.setpoint:g}",
                f"rise time {self.rise_time_s:.3g} s, overshoot {self.overshoot_pct:.3g} %",
                f"settling ({self.band_pct:g} %) {self.settling_time_s:.4g} s, "
                f"steady-state error {self.steady_state_error:.3g}, IAE {self.iae:.4g}"]


def step_metrics(r: Response, y0: float | None = None, band_pct: float = 2.0,
                 tail: float = 0.1) -> StepMetrics:
    """The figures of a step response (the setpoint is its final value)."""
    sp = r.setpoint[-1]
    y0 = r.measurement[0] if y0 is None else y0
    a = sp - y0
    if a == 0:
        raise ValueError("no step: the measurement starts at the setpoint")
    sign = 1 if a > 0 else -1
    frac = [(y - y0) / a for y in r.measurement]    # 0 at the start, 1 at the setpoint
    t10 = _first(r.t, frac, 0.1)
    t90 = _first(r.t, frac, 0.9)
    rise = t90 - t10 if not math.isinf(t90) else math.inf
    peak = max((sign * (y - sp) for y in r.measurement), default=0.0)
    overshoot = max(0.0, peak) / abs(a) * 100
    band = band_pct / 100 * abs(a)
    outside = [t for t, y in zip(r.t, r.measurement) if abs(y - sp) > band]
    if not outside:
        settle = 0.0
    elif abs(r.measurement[-1] - sp) > band:
        settle = math.inf
    else:
        settle = outside[-1] - r.t[0]
    k = max(1, int(len(r.t) * tail))
    sse = sp - sum(r.measurement[-k:]) / k
    iae = sum((abs(s0 - y0_) + abs(s1 - y1)) / 2 * (t1 - t0)
              for t0, t1, s0, s1, y0_, y1 in zip(r.t, r.t[1:], r.setpoint, r.setpoint[1:],
                                                 r.measurement, r.measurement[1:]))
    return StepMetrics(y0, sp, rise, overshoot, settle, sse, iae, band_pct)


def _first(t: Sequence[float], frac: Sequence[float], level: float) -> float:
    """The time frac first reaches level (linear interpolation), or inf."""
    for i in range(len(t)):
        if frac[i] >= level:
            if i == 0:
                return t[0]
            f0, f1 = frac[i - 1], frac[i]
            return t[i - 1] + (t[i] - t[i - 1]) * (level - f0) / (f1 - f0)
    return math.inf
