# Relay autotune (Astrom-Hagglund): a relay with hysteresis around the setpoint makes the
# loop oscillate near its ultimate frequency; the oscillation gives the ultimate gain Ku and
# period Pu, and tuning rules turn those into PID gains.
#
# update() runs in the tick (ints in milli-units, allocation-free); result() is called once
# finished and returns plain data (floats, dicts) for another module to persist.
#
# Why not the textbook Ku = 4d / (pi a) with a the peak amplitude: the formula assumes a
# sinusoidal measurement, but a relay drives a lag plant into a near-triangular wave whose
# peak overstates its first harmonic, so Ku comes out 15-25 % low on first-order-plus-dead-
# time plants (ESPHome's autotune has this bias). Here the first harmonic is measured
# directly: the covariance of the relay output u with the measurement y over whole cycles is
# Re(G(jw)) |u1|^2 / 2 (higher harmonics contribute < 4 %), so
#     Ku = b1^2 / (2 |cov(u, y)|),   b1 = (4 d / pi) sin(pi D)
# where d is half the relay swing and D the fraction of time the relay is high (b1 is the
# fundamental of that pulse train; D = 1/2 gives the familiar 4 d / pi). The peak-based
# estimate (with the hysteresis correction sqrt(a^2 - eps^2)) is reported alongside.
from array import array
from math import pi, sin, sqrt

from .fixed import VAL_MAX, VAL_MIN, Acc, to_fixed

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

RUNNING = const(0)
DONE = const(1)
FAILED = const(2)
_DEV = const(1 << 20)               # |y - sp| is clamped here before accumulation


class RelayTune:
    """Relay between `low` and `high` (output units) around `setpoint` with hysteresis `hyst`
    (measurement units; set it above the noise band). Direct action: the relay is high while
    the measurement is below the band. The first `settle` cycles are discarded, the next
    `cycles` measured. Fails after `timeout` seconds (default: 200 cycles' worth of 1000 s).
    """

    def __init__(self, setpoint, dt, high, low, hyst=0.0, reverse=False, cycles=4,
                 settle=2, timeout=None, idle=None):
        if not high > low:
            raise ValueError("need high > low")
        if cycles < 2 or settle < 0:
            raise ValueError("need cycles >= 2 and settle >= 0")
        self.dt = float(dt)
        self.sp = to_fixed(setpoint, name="setpoint")
        self.high = to_fixed(high, name="high")
        self.low = to_fixed(low, name="low")
        self.idle = self.low if idle is None else to_fixed(idle, name="idle")
        self.eps = to_fixed(hyst, 0, _DEV, "hyst")
        self.reverse = bool(reverse)
        self.cycles = int(cycles)
        self.settle = int(settle)
        t = 200000.0 if timeout is None else float(timeout)
        self.max_ticks = min(int(t / self.dt), (1 << 29) - 1)
        self._per = array("i", [0] * self.cycles)      # period of each measured cycle, ticks
        self._pp = array("i", [0] * self.cycles)       # peak-to-peak of each, milli-units
        self._sy = Acc()                               # sum of (y - sp) over measured cycles
        self._syr = Acc()                              # sum of (y - sp) * r, r = +1 high / -1 low
        self.status = RUNNING
        self.relay = -1                                # decided on the first sample
        self.out = self.idle
        self._edges = 0                                # rising (to high) relay edges seen
        self._t = 0                                    # ticks since the last rising edge
        self._ticks = 0
        self._n = self._nhi = 0                        # measured ticks, of which relay high
        self._ymax = self._ymin = 0

    def update(self, y):
        """One period: measurement (milli-units) -> relay output (milli-units)."""
        if self.status != RUNNING:
            return self.out
        y = VAL_MIN if y < VAL_MIN else (VAL_MAX if y > VAL_MAX else y)
        self._ticks += 1
        if self._ticks > self.max_ticks:
            self.status = FAILED
            self.out = self.idle
            return self.out
        if self.relay < 0:
            self.relay = 1 if (y < self.sp) != self.reverse else 0
            self._ymax = self._ymin = y
        self._t += 1
        if y > self._ymax:
            self._ymax = y
        if y < self._ymin:
            self._ymin = y
        if self.settle < self._edges <= self.settle + self.cycles:
            self._accumulate(y)
        self._switch(y)
        self.out = self.high if self.relay else self.low
        return self.out

    def _accumulate(self, y):
        d = y - self.sp                                # both in VAL range: fits
        d = -_DEV if d < -_DEV else (_DEV if d > _DEV else d)
        self._sy.add(d)
        self._n += 1
        if self.relay:
            self._syr.add(d)
            self._nhi += 1
        else:
            self._syr.add(-d)

    def _switch(self, y):
        # above / below the hysteresis band; sp +- eps fits (eps <= 2**20).
        above = y > self.sp + self.eps
        below = y < self.sp - self.eps
        if self.relay:
            if (below if self.reverse else above):
                self.relay = 0
        elif (above if self.reverse else below):
            self.relay = 1
            self._edge(y)

    def _edge(self, y):
        # A rising edge ends cycle number _edges (cycle j runs from edge j to edge j + 1).
        j = self._edges - self.settle - 1
        if 0 <= j < self.cycles:
            self._per[j] = self._t
            self._pp[j] = self._ymax - self._ymin
        self._edges += 1
        self._t = 0
        self._ymax = self._ymin = y
        if j + 1 >= self.cycles:
            self.status = DONE
            self.relay = 0
            self.out = self.idle

    def progress(self):
        """(measured cycles done, cycles wanted) - cheap, for status displays."""
        return (max(0, min(self.cycles, self._edges - self.settle - 1)), self.cycles)

    def result(self):
        """Plain data once finished (None while running): Ku, Pu and tuning rules."""
        if self.status == RUNNING:
            return None
        if self.status == FAILED:
            return {"ok": False, "reason": "timeout after %d ticks" % self._ticks}
        per = [p * self.dt for p in self._per]
        pp = [a / 1000.0 for a in self._pp]
        pu = sum(per) / len(per)
        a_peak = sum(pp) / len(pp) / 2.0
        d = (self.high - self.low) / 2000.0                  # half the relay swing, units
        n = self._n
        duty = self._nhi / n
        my = self._sy.value() / n / 1000.0
        mr = (2 * self._nhi - n) / n
        cov = d * (self._syr.value() / n / 1000.0 - my * mr)    # cov(u, y), units^2
        b1 = 4.0 * d / pi * sin(pi * duty)
        ku = b1 * b1 / (2.0 * abs(cov)) if cov else float("inf")
        eps = self.eps / 1000.0
        ku_peak = 4.0 * d / (pi * sqrt(max(a_peak * a_peak - eps * eps, 1e-30)))
        spread_p = (max(per) - min(per)) / pu
        spread_a = (max(pp) - min(pp)) / (2.0 * a_peak) if a_peak else 1.0
        return {
            "ok": True,
            "ku": ku, "pu": pu,
            "ku_peak": ku_peak,
            "amplitude": a_peak,
            "amplitude_h1": b1 / ku if ku else 0.0,
            "duty": duty,
            "relay_d": d,
            "hyst": eps,
            "periods": per,
            "peak_to_peak": pp,
            # Cycles that differ by more than 10 % mean the oscillation had not settled
            # (or noise crossed the band): repeat with more settle cycles or more hysteresis.
            "stable": spread_p < 0.1 and spread_a < 0.1,
            "rules": rules(ku, pu),
        }


def _pid(kp, ti, td):
    # Standard form (kp, Ti, Td) -> the parallel gains pid.PID takes.
    return {"kp": kp, "ki": kp / ti if ti else 0.0, "kd": kp * td}


def rules(ku, pu):
    """PID gains from the ultimate point (units of output per unit of measurement, ki in 1/s,
    kd in s). Ziegler-Nichols is aggressive (quarter-decay); Tyreus-Luyben is the gentle,
    robust choice for lag-dominant (e.g. thermal) plants."""
    return {
        "ziegler_nichols": _pid(0.6 * ku, pu / 2.0, pu / 8.0),
        "ziegler_nichols_pi": _pid(0.45 * ku, pu / 1.2, 0.0),
        "tyreus_luyben": _pid(ku / 2.2, 2.2 * pu, pu / 6.3),
        "tyreus_luyben_pi": _pid(ku / 3.2, 2.2 * pu, 0.0),
        "some_overshoot": _pid(ku / 3.0, pu / 2.0, pu / 3.0),
        "no_overshoot": _pid(ku / 5.0, pu / 2.0, pu / 3.0),
    }
