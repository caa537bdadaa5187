# Relay autotune (Astrom-Hagglund): a relay with hysteresis around the setpoint makes the
# loop oscillate near its ultimate frequency; the oscillation gives the ultimate gain Ku and
# period Pu, and tuning rules turn those into PID gains.
#
# update() runs in the tick (ints in milli-units, allocation-free); result() is called once
# finished and returns plain data (floats, dicts) for another module to persist. When the
# measurement is sinusoidal (an underdamped plant), follow_up() then gives a second run
# with a wider hysteresis, for a second point of the frequency response; its result() has
# the model and rule of both (a second-order-plus-dead-time model and its table).
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
from math import atan2, cos, exp, log, pi, sin, sqrt, tan

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
_FIRST = const(20000)               # default timeout of the first cycle, ticks
_TICKS_MAX = const((1 << 29) - 1)
_EXTRA = const(6)                   # settle cycles added while the period still changes
_DPHASE = -0.13                     # rad: FOPDT class above (see RelayTune.result)
_HYST2 = 1.0                        # second run's hysteresis / first run's amplitude
_SINUS = 1.1                        # peak / first harmonic below this: a second run
_DL = 0.03                          # rad: the sopdt rule's margin for the lag at w
_SCAP = 1.9                         # sensitivity at the measured points at most this
_SCAPF = 1.85                       # the same at an FOPDT fit's one point (Ms <= 1.065 x it
                                    # on balanced plants, 1.02-1.04 x on misread lag-dominant)
_MSF = 1.9                          # an FOPDT fit's gains scaled to this Ms of the model ...
_MSTAU = 0.17                       # ... where its L / (L + T) is at least this (see _msfit)
_LINES = 0.16                       # the lines' peaks only where the raw fit's tau is below
_WMAX = const(200)                  # window of the line fit after a switch, ticks at most


class RelayTune:
    """Relay between `low` and `high` (output units) around `setpoint` with hysteresis `hyst`
    (measurement units; set it above the noise band). Direct action: the relay is high while
    the measurement is below the band. The first `settle` cycles are discarded (up to 6 more
    while consecutive periods still differ by over 1/16), the next `cycles` measured. Fails (status FAILED, output `idle`, reason in result()) when the
    first cycle has not ended after `timeout` seconds (default: 20000 ticks of this loop,
    i.e. scaled to its rate), or, once it has, when the run takes longer than 3 times
    that first cycle's period per remaining cycle.
    """

    def __init__(self, setpoint, dt, high, low, hyst=0.0, reverse=False, cycles=4,
                 settle=2, timeout=None, idle=None):
        self.first = None                              # first run's result (second run)
        self._cfg = (setpoint, high, low, reverse, timeout, idle)
        if not high > low:
            raise ValueError("need high > low")
        if not 2 <= cycles <= 64 or settle < 0:
            raise ValueError("need 2 <= cycles <= 64 and settle >= 0")
        self.dt = float(dt)
        self.sp = to_fixed(setpoint, name="setpoint")
        self.high = to_fixed(high, name="high")
        self.low = to_fixed(low, name="low")
        self.idle = self.low if idle is None else to_fixed(idle, name="idle")
        self.eps = to_fixed(hyst, 0, _DEV, "hyst")
        self.reverse = bool(reverse)
        self.cycles = int(cycles)
        self.settle = int(settle)
        self._smax = self.settle + _EXTRA                # settle cycles at most
        self._tp = 0                                   # ticks of the previous cycle
        n = _FIRST if timeout is None else int(float(timeout) / self.dt)
        self.max_ticks = max(1, min(n, _TICKS_MAX))
        self._fixed = timeout is not None
        self._per = array("i", [0] * self.cycles)      # period of each measured cycle, ticks
        self._pp = array("i", [0] * self.cycles)       # peak-to-peak of each, milli-units
        self._mx = array("i", [0] * self.cycles)       # its maximum - sp (clamped to _DEV)
        self._mn = array("i", [0] * self.cycles)       # its minimum - sp
        self._s10 = self._s01 = 0                      # sums of y - sp at high->low and
                                                       # low->high switches (measured)
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
        self._ts = 0                                   # ticks since the last switch
        self._ext = 0                                  # extreme of y since then ...
        self._text = 0                                 # ... reached after this many ticks
        self._sl = self._nl = 0                        # sum and count of turn times (ticks)
        # A line through the samples k = 1.._m after each measured switch (before the
        # turn), per relay state after the switch: counts, sums of k and k^2 (<= 2 * 64 *
        # _WMAX^3 / 3: they fit), sums of d and k d (d = y - sp, clamped; wide)
        self._m = 0
        self._wn = array("i", [0, 0])
        self._wk = array("i", [0, 0])
        self._wkk = array("i", [0, 0])
        self._wy = (Acc(), Acc())
        self._wky = (Acc(), Acc())
        self.why = ""

    def update(self, y):
        """One period: measurement (milli-units) -> relay output (milli-units)."""
        if self.status != RUNNING:
            return self.out
        y = VAL_MIN if y < VAL_MIN else (VAL_MAX if y > VAL_MAX else y)
        self._ticks += 1
        if self._ticks > self.max_ticks:
            self.status = FAILED
            self.out = self.idle
            self.relay = 0
            return self.out
        if self.relay < 0:
            self.relay = 1 if (y < self.sp) != self.reverse else 0
            self._ymax = self._ymin = y
        self._t += 1
        self._ts += 1
        self._turn(y)
        if y > self._ymax:
            self._ymax = y
        if y < self._ymin:
            self._ymin = y
        if self.settle < self._edges <= self.settle + self.cycles:
            self._accumulate(y)
            k = self._ts
            if k <= self._m:
                d = y - self.sp
                d = -_DEV if d < -_DEV else (_DEV if d > _DEV else d)
                i = self.relay
                self._wn[i] += 1
                self._wk[i] += k
                self._wkk[i] += k * k
                self._wy[i].add(d)
                self._wky[i].add(k * d)
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

    def _turn(self, y):
        # After a switch the measurement keeps going the old way for the plant's apparent
        # dead time, then turns: track the extreme since the switch and when it came.
        # Relay high (direct action): y was falling, watch the minimum.
        if (y < self._ext) if (self.relay != self.reverse) else (y > self._ext):
            self._ext = y
            self._text = self._ts

    def _switch(self, y):
        # above / below the hysteresis band; sp +- eps fits (eps <= 2**20).
        above = y > self.sp + self.eps
        below = y < self.sp - self.eps
        if self.relay:
            if (below if self.reverse else above):
                self._half(y)
                self.relay = 0
        elif (above if self.reverse else below):
            self._half(y)
            self.relay = 1
            self._edge(y)

    def _half(self, y):
        # A switch ends a half cycle: keep its turn time and the level it switched at if it
        # was a measured one (sums of <= 2 * 64 values below 2**20: they fit).
        if self.settle < self._edges <= self.settle + self.cycles:
            self._sl += self._text
            self._nl += 1
            d = y - self.sp
            d = -_DEV if d < -_DEV else (_DEV if d > _DEV else d)
            if self.relay:
                self._s10 += d
            else:
                self._s01 += d
        m = self._text - ((self._text + 3) >> 2)       # the next window: 3/4 of this turn
        self._m = _WMAX if m > _WMAX else m
        self._ts = self._text = 0
        self._ext = y

    def _edge(self, y):
        # A rising edge ends cycle number _edges (cycle j runs from edge j to edge j + 1).
        if self._edges == self.settle and self._edges >= 2 and self.settle < self._smax:
            # About to measure: wait (up to _EXTRA more cycles) while the last two cycles
            # still differ by more than 1/16 - the mean level of a slow plant is still
            # moving under an asymmetric relay.
            d = self._t - self._tp
            if d > self._t >> 4 or -d > self._t >> 4:
                self.settle += 1
        self._tp = self._t
        j = self._edges - self.settle - 1
        if 0 <= j < self.cycles:
            self._per[j] = self._t
            self._pp[j] = self._ymax - self._ymin
            d = self._ymax - self.sp
            self._mx[j] = _DEV if d > _DEV else (-_DEV if d < -_DEV else d)
            d = self._ymin - self.sp
            self._mn[j] = _DEV if d > _DEV else (-_DEV if d < -_DEV else d)
        self._edges += 1
        if self._edges == 2 and not self._fixed:
            # The first whole cycle is known: the rest may take 3 of its periods each.
            n = (self._smax + self.cycles) * 3
            self.max_ticks = self._ticks + (self._t if self._t < _TICKS_MAX // n else
                                            _TICKS_MAX // n) * n
            if self.max_ticks > _TICKS_MAX:
                self.max_ticks = _TICKS_MAX
        self._t = 0
        self._ymax = self._ymin = y
        if j + 1 >= self.cycles:
            self.status = DONE
            self.relay = 0
            self.out = self.idle

    def progress(self):
        """(measured cycles done, cycles wanted) - cheap, for status displays."""
        return (max(0, min(self.cycles, self._edges - self.settle - 1)), self.cycles)

    def last_cycle(self):
        """(period s, amplitude: half the peak-to-peak, measurement units) of the last
        measured cycle, or None before the first - for progress displays (allocates)."""
        j = self.progress()[0] - 1
        if j < 0:
            return None
        return (self._per[j] * self.dt, self._pp[j] / 2000.0)

    def follow_up(self):
        """The second run this one asks for, or None (then result() is the tune's result).

        One run measures one point of the frequency response. When the measurement is
        sinusoidal (peak within 10 % of the first harmonic: the plant filters the relay's
        harmonics away, as a resonance does; also some delay-dominant plants), a second
        run with a hysteresis of 0.7 times this run's amplitude measures a second point,
        30-40 degrees less lag, at a lower frequency; the second run's result() then fits
        a second-order-plus-dead-time model through both points (docs/control.md, "Relay
        autotune"). Call once this run is DONE; start the second run with the relay where
        this one left it (same setpoint, outputs, timeout)."""
        if self.first is not None or self.status != DONE:
            return None
        r = self.result()
        m = r.get("model")
        if not r.get("stable") or m is None or m.get("class") == "lag" or \
                not 0.95 * r["amplitude_h1"] < r["amplitude"] < _SINUS * r["amplitude_h1"]:
            return None
        sp, high, low, rev, timeout, idle = self._cfg
        t = RelayTune(sp, self.dt, high, low, _HYST2 * r["amplitude"], rev, self.cycles,
                      self._smax - _EXTRA, timeout, idle)
        t.first = r
        return t

    def result(self):
        """Plain data once finished (None while running): the ultimate point, the identified
        model, the chosen rule and its gains, and whether the run can be trusted. For a
        second run (follow_up), the first run's result with the model and rule of both."""
        r = self._result()
        if r is None or self.first is None:
            return r
        return self._combine(r)

    def _combine(self, r2):
        # The second run's point and the first run's: a second-order-plus-dead-time model
        # through both, unless the first run's FOPDT model already predicts the second
        # point (a delay-dominant plant), or the fit finds no underdamped plant.
        r = dict(self.first)
        m1 = r["model"]
        m = dict(m1)
        if not r2.get("stable"):
            r["second"] = {"ok": False, "reason": r2["reason"]}
            return r
        m2 = r2["model"]
        w2, g2, f2 = m2["w"], m2["g"], m2["phase"]
        r["second"] = {"ok": True, "ku": r2["ku"], "pu": r2["pu"], "hyst": r2["hyst"],
                       "w": w2, "g": g2, "phase": f2}
        if m1["class"] == "fopdt":
            K, T, L = m1["K"], m1["T"], m1["L"]
            d = w2 * L + atan2(w2 * T, 1.0) - f2
            e = log(g2 * sqrt(1.0 + w2 * w2 * T * T) / K)
            m["dphase2"], m["dgain2"] = d, e
            r["model"] = m
            if -0.25 < d < 0.25 and -0.3 < e < 0.3:
                return _cap(r, w2, g2, f2, self.dt)
        f = sopdt_fit(m1["w"], m1["g"], m1["phase"], w2, g2, f2)
        for _ in range(3):
            # Each point corrected for the relay's higher harmonics, which the first-
            # harmonic balance leaves out, as the model so far has them
            if f is None:
                break
            p1 = _h1(r, m1["w"], self.dt, f)
            p2 = _h1(r2, w2, self.dt, f)
            f = sopdt_fit(m1["w"], p1[0], p1[1], w2, p2[0], p2[1]) or f
        if f is None or f[2] > 0.9:
            return _cap(r, w2, g2, f2, self.dt)
        m["class"], m["fit"] = "sopdt", "two points"
        m["K"], m["wn"], m["zeta"], m["L"] = f
        m["T"] = 1.0 / f[1]
        m["tau"] = m["L"] / (m["L"] + m["T"])
        r["model"] = m
        r.update(tune(m, self.dt))
        return _cap(r, w2, g2, f2, self.dt)

    def _result(self):
        if self.status == RUNNING:
            return None
        if self.status == FAILED:
            if self._edges < 2:
                why = "timeout: no whole oscillation within %d ticks (%g s)" % (
                    self._ticks, self._ticks * self.dt)
            else:
                why = "timeout: %d cycles measured, %d wanted, within %d ticks (%g s)" % (
                    self.progress()[0], self.cycles, self._ticks, self._ticks * self.dt)
            return {"ok": False, "stable": False, "reason": why}
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
        turn = self._sl * self.dt / self._nl if self._nl else 0.0
        r = {
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
            "turn": turn,
            "mean_u": (self.low + (self.high - self.low) * duty) / 1000.0,
            "mean_dy": my,                                  # mean of y - sp, units
            "rules": rules(ku, pu),
        }
        why = ""
        # Trust: the first half of the measured cycles against the second half (a drift
        # means the oscillation had not settled), and no cycle far off the mean (a
        # disturbance, or noise crossing the hysteresis band). Allowed on top of 10 %:
        # what sampling adds (a period is counted in whole ticks, a peak is sampled up to
        # a tick away from the true one; N ticks per cycle) and noise (up to the
        # hysteresis band on each peak). Cycle-to-cycle jitter itself is expected on
        # plants without dead time, where noise at the switching instants sets much of
        # the amplitude; the means are still good (more `cycles` average it further).
        nt = pu / self.dt
        h = len(per) // 2
        drift_p = abs(sum(per[:h]) / h - sum(per[h:]) / (len(per) - h)) / pu
        drift_a = abs(sum(pp[:h]) / h - sum(pp[h:]) / (len(pp) - h)) / (2.0 * a_peak) \
            if a_peak else 1.0
        tol_p = 0.1 + 2.0 / nt
        tol_a = 0.1 + 4.0 / nt + (2.0 * eps / a_peak if a_peak else 0.0)
        if drift_p >= tol_p or drift_a >= tol_a or spread_p >= 0.4 or spread_a >= 0.6:
            why = "cycles drift by %d %% (period) and %d %% (amplitude), spread %d %% and " \
                  "%d %%: not settled, disturbed, or noise crossed the hysteresis band" % (
                      drift_p * 100, drift_a * 100, spread_p * 100, spread_a * 100)
        elif not 0.0 < ku < 1e30:
            why = "no measurable oscillation (Ku %r)" % ku
        else:
            m = model(ku, pu, eps / (b1 or 1.0), turn, self.dt)
            ex = self._exact(pu, turn)
            # No FOPDT makes this waveform: a resonance if the measurement is sinusoidal
            # (peak within 10 % of the first harmonic: the plant filters the relay's
            # harmonics away), else a lag plant that even the FOPDT fit cannot follow.
            m["class"] = "resonant" if a_peak < 1.1 * b1 / ku else "lag"
            m["fit"] = "harmonic"
            if ex is not None:
                m["fit"] = "waveform"
                m["class"] = "lag"
                # The waveform fits an FOPDT plant; is its lag at w the measured one too?
                # Higher-order plants fit a waveform with too little lag (by 0.15-0.35 rad
                # on motors and tanks; FOPDT plants within +-0.11).
                w, T = m["w"], ex[1]
                m["dphase"] = w * turn + atan2(w * T, 1.0) - m["phase"]
                m["K"], m["T"], m["tau"] = ex[0], T, turn / (turn + T)
                if m["dphase"] > _DPHASE:
                    m["class"] = "fopdt"
                    if m["tau"] < _LINES:
                        m["K"], m["T"] = self._refine(pu, turn, ex)
                        m["tau"] = turn / (turn + m["T"])
            r["model"] = m
            r.update(tune(m, self.dt))
            if m["class"] == "fopdt":
                if m["tau"] >= _MSTAU:
                    _msfit(r, self.dt)
                _cap(r, None, 0.0, 0.0, self.dt, _SCAPF)
        r["stable"] = not why
        r["reason"] = why
        return r

    def _exact(self, pu, L):
        """(K, T) of the FOPDT plant whose exact relay limit cycle has this run's period,
        peaks and switching levels, with the measured dead time L; None if no FOPDT has
        (the waveform is that of a higher-order or more-than-integrating plant)."""
        c = self.cycles
        sg = -1.0 if self.reverse else 1.0             # work in "relay high drives y up"
        mx = sum(self._mx) / c / 1000.0
        mn = sum(self._mn) / c / 1000.0
        h = self._nl // 2 or 1
        s10, s01 = self._s10 / h / 1000.0, self._s01 / h / 1000.0
        if sg < 0:
            mx, mn, s10, s01 = -mn, -mx, -s10, -s01
        return fopdt_exact(mx, mn, s10, s01, L, pu, (self.high - self.low) / 1000.0)

    def _refine(self, pu, L, raw):
        """(K, T) of the FOPDT fit again, with the peaks and switching levels taken from
        lines fitted to the samples after each switch (up to 3/4 of the turn time,
        before the turn): the line's value at the switch and at the turn, corrected for
        the exponential's curvature as the model fitted so far has it (three times
        over). The raw extremes and the levels the relay switched at carry the noise's
        bias (a maximum of noisy samples lies above the signal's, and the relay switches
        on a sample noise pushed across the band), which on a lag-dominant plant is as
        large as the curvature the fit reads T from: L / (L + T) came out 0.08-0.26 for
        0.02-0.05 with the raw figures. Used below tau _LINES (above it the noise is small
        against the waveform and the raw fit exact)."""
        sg = -1.0 if self.reverse else 1.0
        sw = (self.high - self.low) / 1000.0
        # lines: after a switch to low (direct action) y keeps rising to the peak
        up, dn = self._line(1 if sg < 0 else 0), self._line(0 if sg < 0 else 1)
        if up is None or dn is None:
            return raw[:2]
        if sg < 0:
            up, dn = _neg(dn), _neg(up)
        f = raw
        lk = L / self.dt
        for _ in range(3):
            K, T, A, B = f
            q = exp(-self.dt / T)
            eh, pk = _ends(up, lk, q, A)
            el, tr = _ends(dn, lk, q, B)
            g = fopdt_exact(pk, tr, eh, el, L, pu, sw)
            if g is None:
                # beyond an integrator within the lines' noise: a lag-dominant plant;
                # the table's first row, with the raw fit's K / T (which is right)
                T = 49.0 * L
                return raw[0] / raw[1] * T, T
            f = g
        return f[:2]

    def _line(self, i):
        # (value at k = 0, slope per tick, mean k, variance of k) of the line through
        # the windows after the switches to relay state i, or None
        n = self._wn[i]
        sk, skk = self._wk[i], self._wkk[i]
        det = n * float(skk) - float(sk) * sk
        if n < 6 or det <= 0.0:
            return None
        sy, sky = self._wy[i].value() / 1000.0, self._wky[i].value() / 1000.0
        s = (n * sky - sk * sy) / det
        return (sy - s * sk) / n, s, sk / n, det / (n * n)


def _neg(ln):
    return None if ln is None else (-ln[0], -ln[1], ln[2], ln[3])


def _coef(ln, q):
    # The line al + be k through q^k over ln's window (mean k, variance of k:
    # whole ticks k1..k2 around the mean)
    mk, vk = ln[2], ln[3]
    h = sqrt(3.0 * vk + 0.25)
    k1, k2 = int(mk - h + 0.5), int(mk + h + 0.5)
    if k2 <= k1:
        k2 = k1 + 1
    n, sk, skk, sq, skq = 0, 0.0, 0.0, 0.0, 0.0
    for k in range(k1, k2 + 1):
        x = q ** k
        n += 1
        sk += k
        skk += k * k
        sq += x
        skq += k * x
    be = (n * skq - sk * sq) / (n * skk - sk * sk)
    return (sq - be * sk) / n, be


def _ends(ln, lk, q, A):
    # The line ln fitted to y_k = A + (e - A) q^k over its window (an FOPDT plant's
    # output after a switch, still moving toward the old level A): the true value at the
    # switch e and at the turn lk ticks later.
    al, be = _coef(ln, q)
    a, s = ln[0], ln[1]
    return A + (a - A) / al, A + (a + s * lk - A) * q ** lk / (al + be * lk)


# ---- identification: a first-order-plus-dead-time model from the relay run ----
#
# Exact (Yu 1999, "Autotuning of PID controllers", ch. 3, for the symmetric relay; here
# with hysteresis and an asymmetric relay): under a relay, an FOPDT plant's output keeps
# going for L after each switch, then moves exponentially (time constant T) toward the
# level the new relay output holds, A above or B below the setpoint. With the peaks
# (mean maximum and minimum of y - sp), the levels at which the relay switched (e_hi,
# e_lo; the hysteresis plus what sampling and noise added) and e = exp(-L / T):
#     peak = A + (e_hi - A) e,   trough = B + (e_lo - B) e
#     period = 2 L + T ln((peak - B) / (e_lo - B)) + T ln((A - trough) / (A - e_hi))
# T is the root of the period equation (bisection), then K = (A - B) / (high - low). This
# uses the whole waveform, so it is exact where the first harmonic is not (a delay-
# dominant plant passes the relay's harmonics). When even T -> infinity (an integrator)
# gives a shorter period than measured, the plant is not FOPDT: the harmonic fit below
# is used and the plant gets the "lag" class.

def _period(T, pk, tr, eh, el, L):
    e = exp(-L / T)
    A = (pk - eh * e) / (1.0 - e)
    B = (tr - el * e) / (1.0 - e)
    if not (A > eh and B < el and pk > B and A > tr):
        return None
    return 2.0 * L + T * (log((pk - B) / (el - B)) + log((A - tr) / (A - eh))), A, B


def fopdt_exact(pk, tr, eh, el, L, P, swing):
    """(K, T, A, B) from the relay waveform (see above), or None."""
    if not (L > 0.0 and P > 2.0 * L and pk > eh > el > tr):
        return None
    lo, hi = -9.2, 9.2                                # log(T / L): T from 1e-4 L to 1e4 L
    r = _period(L * exp(hi), pk, tr, eh, el, L)
    if r is None or r[0] < P:
        return None                                   # more than an integrator
    r = None
    for _ in range(50):
        mid = (lo + hi) / 2.0
        r = _period(L * exp(mid), pk, tr, eh, el, L)
        if r is None or r[0] > P:
            hi = mid
        else:
            lo = mid
    r = _period(L * exp(lo), pk, tr, eh, el, L)
    if r is None:
        return None
    return (r[1] - r[2]) / swing, L * exp(lo), r[1], r[2]


# ---- identification: second order plus dead time from two points ----
#
# G(s) = K wn^2 exp(-L s) / (s^2 + 2 zeta wn s + wn^2) through two measured points
# (w_i, |G_i|, lag phi_i) of the two relay runs: for a given L, the second-order part's lag
# th_i = phi_i - w_i L satisfies 2 zeta wn w_i cos th_i = (wn^2 - w_i^2) sin th_i, two
# equations linear in p = 2 zeta wn and q = wn^2; each point's magnitude then gives a K,
# and L is where the two agree (a scan of L, then bisection). Four equations for four
# unknowns: exact on such a plant, up to the points' own errors (a few degrees).

def _sopdt_at(L, w1, g1, f1, w2, g2, f2):
    t1, t2 = f1 - w1 * L, f2 - w2 * L
    if not (0.0 < t1 < pi and 0.0 < t2 < pi):
        return None
    c1, s1, c2, s2 = w1 * cos(t1), sin(t1), w2 * cos(t2), sin(t2)
    det = s1 * c2 - c1 * s2                             # of [[c1, -s1], [c2, -s2]]
    if det == 0.0:
        return None
    p = (s1 * w1 * w1 * s2 - s2 * w2 * w2 * s1) / det  # -w^2 s on the right-hand side
    q = (w1 * w1 * s1 * c2 - c1 * w2 * w2 * s2) / det
    if not (p > 0.0 and q > 0.0):
        return None
    k1 = g1 * sqrt((q - w1 * w1) ** 2 + (p * w1) ** 2) / q
    k2 = g2 * sqrt((q - w2 * w2) ** 2 + (p * w2) ** 2) / q
    wn = sqrt(q)
    return log(k1 / k2), sqrt(k1 * k2), wn, p / (2.0 * wn)


def _s(r, w, g, f, dt):
    # |S| = 1 / |1 + C G| of the PID in r (as pid.py discretises it) with the measured
    # point G(jw) = g exp(-j f), the hold's half sample added back
    lr, li = _l(r, w, g, f, dt)
    lr += 1.0
    return 1.0 / sqrt(lr * lr + li * li)


def _l(r, w, g, f, dt):
    # C G at w (real, imaginary), G(jw) = g exp(-j f) and the hold's half sample
    kp, ki, kd, tf = r["kp"], r["ki"], r["kd"], r["d_filter"]
    c, s = cos(w * dt), -sin(w * dt)                    # z^-1
    a = tf / (tf + dt)
    # C = kp + ki dt / (1 - z^-1) + kd / (tf + dt) (1 - z^-1) / (1 - a z^-1)
    dr, di = 1.0 - c, -s
    n2 = dr * dr + di * di
    ir, ii = ki * dt * dr / n2, -ki * dt * di / n2
    er, ei = 1.0 - a * c, -a * s
    e2 = er * er + ei * ei
    qr, qi = (dr * er + di * ei) / e2, (di * er - dr * ei) / e2
    k = kd / (tf + dt)
    cr, ci = kp + ir + k * qr, ii + k * qi
    ph = f + w * dt / 2.0
    gr, gi = g * cos(ph), -g * sin(ph)
    return cr * gr - ci * gi, cr * gi + ci * gr


def _msfit(r, dt, target=_MSF):
    # The FOPDT model's own maximum sensitivity with the PID in r, as the node samples it
    # (pid.py's discretisation, the hold's half sample): the table was derived at 16
    # samples per dead time, and at 8 the same row gives Ms 1.83-1.88, not 1.8. Scale the
    # gains (kp, ki, kd together) so that it is `target`, at most x1.25: a sweep of C G
    # from 0.25 to 1.5 times the relay's frequency (where the peak of |S| lies), then a
    # bisection on the factor (tune time, about 60 points and 16 steps).
    m = r["model"]
    K, T, L, w0 = m["K"], m["T"], m["L"], m["w"]
    pts = []
    w = 0.25 * w0
    while w < 1.5 * w0 and w * dt < pi:
        pts.append(_l(r, w, K / sqrt(1.0 + w * w * T * T), w * L + atan2(w * T, 1.0), dt))
        w *= 1.03

    def peak(x):
        b = 0.0
        for lr, li in pts:
            lr, li = 1.0 + x * lr, x * li
            v = lr * lr + li * li
            if b == 0.0 or v < b:
                b = v
        return 1.0 / sqrt(b) if b else 1e9

    m0 = peak(1.0)
    lo, hi = 0.5, 1.25
    if peak(hi) <= target:
        lo = hi
    else:
        for _ in range(16):
            mid = (lo + hi) / 2.0
            if peak(mid) <= target:
                lo = mid
            else:
                hi = mid
    r["kp"] *= lo
    r["ki"] *= lo
    r["kd"] *= lo
    r["why"] += "; gains x%.3f: the model's Ms %.2f -> %.2f" % (lo, m0, peak(lo))
    return r


def _cap(r, w2, g2, f2, dt, cap=_SCAP):
    # A check on the measurements themselves, whatever the model: the loop's sensitivity
    # at both measured points (which bracket its crossover: lag 180 and 130-155 degrees)
    # at most `cap`, else the gains scaled down until it is. w2 None: the first point only.
    m = r["model"]
    n = 0
    while n < 75 and max(_s(r, m["w"], m["g"], m["phase"], dt),
                         _s(r, w2, g2, f2, dt) if w2 else 0.0) > cap:
        r["kp"] *= 0.98
        r["ki"] *= 0.98
        r["kd"] *= 0.98
        n += 1
    if n:
        r["why"] += "; gains x%.2f: sensitivity at the measured point%s <= %.2f" % (
            0.98 ** n, "s" if w2 else "", cap)
    return r


def _h1(r, w, dt, f):
    # The plant's point at w (|G|, lag) from a run's result r, with the relay's higher
    # harmonics k = 2..15 taken out as the model f = (K, wn, zeta, L) has them. A relay
    # with duty D and half swing d: over a cycle, cov(u, y) = (8 d^2 / pi^2) sum_k
    # sin^2(pi k D) Re G(jkw) / k^2, and at its switches (Tsypkin's exact condition, the
    # measurement 2 eps apart) -2 eps = (8 d / pi) sum_k sin^2(pi k D) Im G(jkw) / k; the
    # first-harmonic balance keeps k = 1 only. G includes the hold (half a sample).
    K, wn, z, L = f
    D, d = r["duty"], r["relay_d"]
    s1 = sin(pi * D) ** 2
    re, im = -1.0 / r["ku"], -r["hyst"] * pi / (4.0 * d * s1)
    for k in range(2, 16):
        wk = k * w
        a, b = wn * wn - wk * wk, 2.0 * z * wn * wk
        g = K * wn * wn / sqrt(a * a + b * b)
        ph = -atan2(b, a) - wk * (L + dt / 2.0)
        sk = sin(pi * k * D) ** 2 / s1
        re -= sk / (k * k) * g * cos(ph)
        im -= sk / k * g * sin(ph)
    lag = -atan2(im, re)
    if lag < 0.0:
        lag += 2.0 * pi
    return sqrt(re * re + im * im), lag - w * dt / 2.0


def sopdt_fit(w1, g1, f1, w2, g2, f2):
    """(K, wn, zeta, L) of the second order plus dead time through two points of the
    frequency response (w rad/s, |G|, lag rad), or None."""
    lmax = min(f1 / w1, f2 / w2)
    prev = None
    for i in range(1, 64):
        L = lmax * i / 64.0
        r = _sopdt_at(L, w1, g1, f1, w2, g2, f2)
        if r is not None and prev is not None and (r[0] > 0.0) != (prev[1][0] > 0.0):
            lo, hi = prev[0], L
            for _ in range(40):
                mid = (lo + hi) / 2.0
                rm = _sopdt_at(mid, w1, g1, f1, w2, g2, f2)
                if rm is None:
                    return None
                if (rm[0] > 0.0) == (r[0] > 0.0):
                    hi = mid
                else:
                    lo = mid
            rm = _sopdt_at((lo + hi) / 2.0, w1, g1, f1, w2, g2, f2)
            return None if rm is None else (rm[1], rm[2], rm[3], (lo + hi) / 2.0)
        prev = None if r is None else (L, r)
    return None


# ---- identification: a first-order-plus-dead-time model from the first harmonic ----
#
# The relay run gives one point of the frequency response and one time: at w = 2 pi / Pu,
# |Re G| = 1 / Ku (the covariance above) and, since a relay with hysteresis eps switches
# when the first harmonic a1 crosses eps, the phase is -pi + phi with sin phi = eps / a1:
#     |G| sin phi = eps / b1,  |G| cos phi = 1 / Ku.
# After each switch the measurement keeps its direction for the apparent dead time L, then
# turns (exactly L on an FOPDT plant; on lag plants without delay, a shorter time that
# plays the same role). The model K exp(-L s) / (T s + 1) through that point with that L:
#     w T = tan(pi - phi - w L),   K = |G| sqrt(1 + (w T)^2)
# (Li, Eskinat and Luyben 1991 fit the same model from Ku, Pu and a measured dead time).
# pi - phi - w L above ~pi/2 means a near-integrating plant (T capped at 20 L here: the
# rule only needs K / T there); below 0 an almost pure delay (T = 0, L from the phase).
# This fit is used (class "lag") when the exact fit above finds no FOPDT plant or one
# whose lag at w is not the measured one: the plant is of higher order (two tanks, a
# motor's electrical and mechanical lags, a resonance) and only the measured point
# G(jw) is trusted.

def model(ku, pu, s_b, turn, dt):
    """FOPDT {"K", "T", "L", "tau"} from Ku, Pu, eps / b1, the turn time and the period (s)."""
    w = 2.0 * pi / pu
    g = sqrt(1.0 / (ku * ku) + s_b * s_b)
    # Lag at w of the plant alone: the loop's lag less the hold's half period (the relay
    # acts on samples, up to a period after the crossing).
    phase = pi - atan2(s_b, 1.0 / ku) - w * dt / 2.0
    L = turn
    x = phase - w * L
    if x <= 0.05:                                     # delay alone explains the lag
        L = phase / w
        x = 0.05
    wt = tan(x) if x < 1.5 else tan(1.5)
    T = wt / w
    if L < 1e-3 * T:
        L = 1e-3 * T
    if T > 20.0 * L:
        T = 20.0 * L                                  # lag-dominant: keep K / T right
        wt = w * T
    K = g * sqrt(1.0 + wt * wt)
    return {"class": "lag", "K": K, "T": T, "L": L, "tau": L / (L + T), "w": w, "g": g,
            "phase": phase}


# ---- the rule: PID gains for the identified model ----
#
# Every rule gives the gains (kp, ki, kd, derivative filter Td / 10) AND a setpoint weight
# b (pid.PID's sp_weight: P acts on b * sp - y). As in AMIGO (Astrom and Hagglund 2004,
# "Revisiting the Ziegler-Nichols step response method"; 2006, *Advanced PID control*,
# ch. 7), the gains are chosen for the load disturbance and b for the setpoint response:
# with b free, one set of gains can come close to the IAE optimum of both steps, where
# with P on error or on measurement alone it had to compromise.
#
# _TABLE rows: (tau, A, B, C, b) with tau = L / (L + T) the normalised dead time and
#     kp = A / (K tau),  Ti = B L,  Td = C L,  setpoint weight b
# (A, B, C, b are O(1) from lag-dominant to delay-dominant plants, so linear interpolation
# in tau is accurate). Derived like AMIGO: optimal PIDs computed offline for a batch of
# FOPDT plants and tabulated, here the PID and b of cyphy's structure minimising the
# larger of its two IAE ratios (setpoint step, load step) to the IAE-optimal PID of each
# task (docs/control.md, "Relay autotune"), with margins for identification errors
# (overshoot <= 6 %, Ms <= 1.8): tests/firmware/tuning_plants.derive_table(). Not less:
# lag-dominant plants are identified with K / T up to 10 % off and L (the turn time, the
# noisy extreme's) up to 9 % short, some with L / (L + T) 0.04-0.065 as 0.09-0.17 even
# with the lines' peaks (RelayTune._refine); tables for Ms 1.84-1.9 (also robust to that
# tau error: derive_table(alt_tau=0.03)) reached Ms 1.99-2.08 on development plants.
# Rows 0.25-0.8 derived again with the reference optima also searched from the rule's
# own gains (derive_table(rule_starts=True)): from SIMC alone the searches had stopped at
# local optima, so the rows were balanced against weak references (at 0.3: load 1.29x the
# better optimum; now 1.16). Rows 0.02-0.2 kept: the new ones there differ by under 2 %
# but for b (1.0 at 0.125), which overshot by 10.7 % on a plant identified 0.01 off.
# Rows every 0.025 from 0.05 to 0.2 and at 0.25: the minimax optimum moves between rows
# (at 0.125 the rows 0.1 and 0.15 interpolated overshot by 9.2 %; 7.6 % at most now).
# After the table, where L / (L + T) >= _MSTAU (the fit accurate), the gains are scaled to
# the identified model's Ms _MSF at the node's sample time (_msfit: the table was derived
# at 16 samples per dead time); then the loop's sensitivity at the measured point is
# capped at _SCAPF (RelayTune._result): the safety net for a lag-dominant plant taken for
# a balanced one.
_TABLE = (
    (0.02, 0.6735, 2.6161, 0.3922, 0.994),
    (0.05, 0.6633, 2.848, 0.3693, 0.314),
    (0.075, 0.6488, 2.6661, 0.3538, 0.542),
    (0.1, 0.6376, 2.594, 0.3504, 0.647),
    (0.125, 0.6306, 2.9056, 0.3234, 0.558),
    (0.15, 0.6205, 2.9517, 0.3146, 0.644),
    (0.175, 0.6063, 2.6833, 0.3064, 0.626),
    (0.2, 0.5865, 2.4741, 0.2769, 0.621),
    (0.25, 0.5718, 2.3916, 0.2867, 0.684),
    (0.3, 0.5481, 2.0502, 0.2834, 0.744),
    (0.4, 0.501, 1.4782, 0.2949, 0.71),
    (0.5, 0.4584, 1.1429, 0.2889, 0.703),
    (0.6, 0.4227, 0.9411, 0.2894, 0.845),
    (0.7, 0.3889, 0.7384, 0.2389, 0.801),
    (0.8, 0.3654, 0.5871, 0.2226, 0.804),
)


# The other classes, with constants fitted with the same minimax objective as the table
# on development plants of the class (seeds 7 to 10 of tests/firmware/tuning_plants.
# family; never the test plants; tuning_plants.derive_class_constants()):
# - "lag" (higher order without dead time: DC motors, two tanks; the relay oscillates
#   where the sample-and-hold's delay puts it, well above the plant's poles). There the
#   plant is a double integrator k2 / s^2 (both lags integrate; Skogestad's half rule and
#   SIMC's double-integrating case, Skogestad 2003), and the IAE-optimal PIDs of the
#   development motors and tanks are, in the hold's time scale dt, the same loop:
#   kp k2 dt^2 = 0.09..0.11, Ti = 7..8.7 dt, Td = 3.3..4 dt (SIMC's form for k2 e^(-theta s)
#   / s^2: kp ~ 1 / (k2 theta^2), Ti and Td ~ theta, theta here the hold). k2 comes from
#   the measured point G(jw): the lag at w beyond 90 degrees is the fast pole's,
#   w T = tan(phase - pi / 2), and k2 = |G| w^2 sqrt(1 + (w T)^2) / (w T) (the
#   integrator-plus-lag model k / (s (T s + 1)) through the point, k2 = k / T). This is
#   the fast part the relay sees well; the slow pole and the static gain, which the relay
#   does not see, do not matter to a loop this fast. With x = T / dt - 12 (T the model's
#   lag; within -4..10), _DI = (A, A1, B, C, C1, b):
#   kp = (A + A1 x) / (k2 dt^2), Ti = B dt, Td = (C + C1 x) dt
#   (the optimum's kp k2 dt^2 falls and Td / dt grows with T / dt, 10..20 on these plants).
# - "resonant" (no FOPDT makes this waveform: an underdamped plant): a design on the
#   measured point alone (the frequency-response method of Astrom and Hagglund 1984,
#   generalised): the PID moves G(jw) to radius r at angle -pi + psi of the Nyquist plane,
#   with Ti = a Td; _POINT = (r, psi, a, b), fitted on the underdamped development plants.
#   Used when no second point could be measured (see "sopdt").
# - "sopdt" (an underdamped plant, from two points: RelayTune.follow_up, sopdt_fit): a
#   table derived like _TABLE, on normalised plants K = 1, wn = 1 (tuning_plants.
#   derive_sopdt_table(), margins overshoot <= 4 %, Ms <= 1.8). _SOPDT rows: (1000 zeta,
#   (10000 Le wn, 1000 A, 10000 B, 10000 C, 1000 b) for each dead time), Le the dead time
#   plus half a sample, and kp = A / K, Ti = B / wn, Td = C / wn, setpoint weight b;
#   interpolated in zeta and log(Le wn), A, B, C in logarithms. Ints, not floats: no
#   boxed float per entry in RAM while a tune runs. _DL: the dead time the rule uses is
#   L + _DL / w (w the first run's frequency), a margin for the least certain figure;
#   _SCAP: the loop's sensitivity at the measured points at most this (gains scaled).
_SOPDT = (
    (100, ((531, 12828, 7070, 3510, 458), (1063, 3324, 10461, 6923, 387),
           (1594, 1472, 11475, 10232, 528), (2125, 760, 10321, 14491, 665),
           (3167, 337, 9390, 19574, 1000), (4725, 155, 7165, 23933, 1000),)),
    (200, ((531, 14725, 6673, 3149, 486), (1063, 4337, 10200, 5659, 347),
           (1594, 2170, 11951, 7736, 515), (2125, 1259, 11175, 10576, 545),
           (3167, 577, 9040, 16149, 618), (4725, 307, 7658, 20214, 1000),
           (12250, 94, 4056, 25501, 1000),)),
    (300, ((531, 16668, 6420, 2896, 256), (1063, 5274, 9837, 4928, 347),
           (1594, 2787, 16578, 6813, 831), (2125, 1752, 15087, 8441, 825),
           (3167, 956, 11337, 10853, 620), (4725, 537, 9649, 13754, 731),
           (7250, 270, 6823, 20780, 888), (12250, 177, 6053, 22073, 1000),)),
    (450, ((531, 19438, 6132, 2583, 257), (1063, 6694, 11060, 4216, 567),
           (1594, 3714, 11957, 5279, 490), (2125, 2473, 12803, 6274, 527),
           (3167, 1436, 15432, 7956, 829), (4725, 879, 12256, 9611, 640),
           (7250, 562, 11533, 10979, 694), (12250, 363, 10654, 12893, 814),)),
    (600, ((531, 22138, 5883, 2331, 390), (1063, 7963, 8993, 3595, 233),
           (1594, 4604, 11520, 4411, 443), (2125, 3173, 12912, 5105, 496),
           (3167, 1927, 17415, 6429, 823), (4725, 1253, 14331, 6849, 587),
           (7250, 805, 15060, 8553, 848), (12250, 541, 14141, 9494, 691),)),
    (800, ((531, 25666, 5487, 2120, 83), (1063, 9730, 8717, 3062, 628),
           (1594, 5789, 10830, 3657, 360), (2125, 4091, 13009, 4151, 471),
           (3167, 2606, 14688, 4786, 515), (4725, 1717, 15877, 5287, 557),
           (7250, 1146, 19290, 6548, 863), (12250, 772, 17858, 6955, 604),)),
)

_DI = (0.0914, -0.0028, 10.37, 4.11, 0.174, 0.277)
_POINT = (0.528, 0.662, 2.504, 0.225)


def _interp(rows, x, n):
    # rows (x, v1..vn) sorted by x: the n values linearly interpolated at x (clamped)
    i = 0
    while i < len(rows) - 2 and x > rows[i + 1][0]:
        i += 1
    lo = rows[i]
    hi = rows[i + 1] if len(rows) > 1 else lo
    f = (x - lo[0]) / (hi[0] - lo[0]) if hi[0] != lo[0] else 0.0
    f = 0.0 if f < 0.0 else (1.0 if f > 1.0 else f)
    return [lo[k] + f * (hi[k] - lo[k]) for k in range(1, n + 1)]


def _sopdt(m, dt):
    # kp K, Ti wn, Td wn (interpolated in logarithms: kp falls about as 1 / L) and b from
    # the table over (zeta, (L + dt / 2) wn)
    wn = m["wn"]
    x = log((m["L"] + dt / 2.0 + _DL / m["w"]) * wn)
    rows = []
    for z, r in _SOPDT:
        v = _interp([(log(e[0] * 1e-4), log(e[1] * 1e-3), log(e[2] * 1e-4), log(e[3] * 1e-4),
                      e[4] * 1e-3) for e in r], x, 4)
        xl = log(r[-1][0] * 1e-4)
        if x > xl:                      # longer dead time than the row has: kp ~ 1 / L
            v[0] -= x - xl
        rows.append((z * 1e-3, v[0], v[1], v[2], v[3]))
    a, bi, c, b = _interp(rows, m["zeta"], 4)
    return exp(a) / m["K"], exp(bi) / wn, exp(c) / wn, b


def _point(m, dt):
    rt, psi, al = _POINT[0], _POINT[1], _POINT[2]
    w = m["w"]
    adv = psi - (pi - m["phase"] - w * dt / 2.0)      # phase lead the PID must add at w
    adv = -0.3 if adv < -0.3 else (1.2 if adv > 1.2 else adv)
    t = tan(adv)                                      # w Td - 1 / (w Ti) = t
    wtd = (t * al + sqrt(t * t * al * al + 4.0 * al)) / (2.0 * al)
    td = wtd / w
    return rt * cos(adv) / m["g"], al * td, td


def k2(m):
    """The double-integrator gain of the plant at high frequency from the measured point
    (see _DI): the integrator-plus-lag model through G(jw)."""
    w = m["w"]
    x = m["phase"] - pi / 2.0
    wt = tan(x) if x > 0.1 else tan(0.1)
    wt = wt if wt < 100.0 else 100.0
    return m["g"] * w * w * sqrt(1.0 + wt * wt) / wt


def lag_ratio(m, dt):
    """T / dt of the integrator-plus-lag model through the measured point (see _DI)."""
    x = m["phase"] - pi / 2.0
    wt = tan(x) if x > 0.1 else tan(0.1)
    return (wt if wt < 100.0 else 100.0) / m["w"] / dt


def tune(m, dt):
    """{"rule", "why", "kp", "ki", "kd", "d_filter", "sp_weight", "p_on_m"} for model m.
    "p_on_m", for a caller that does not set sp_weight, is the safe one of the two old
    choices: P on measurement unless b is about 1 (P on error with gains meant for b
    0.5-0.9 overshoots by 10-27 % on FOPDT plants; P on measurement only slows the
    setpoint response)."""
    cls = m.get("class", "fopdt")
    if cls == "lag":
        a, a1, bi, c, c1, b = _DI
        k = k2(m)
        x = lag_ratio(m, dt) - 12.0
        x = -4.0 if x < -4.0 else (10.0 if x > 10.0 else x)
        kp, ti, td = (a + a1 * x) / (k * dt * dt), bi * dt, (c + c1 * x) * dt
        why = "higher order, no dead time (%s): double integrator k2 %.4g from the " \
              "measured point |G| %.4g at %.1f deg, %.4g rad/s; loop in units of the " \
              "sample time" % (
                  "the waveform fit's lag at w is %.2f rad short" % -m["dphase"]
                  if m.get("fit") == "waveform" else "no FOPDT makes the waveform",
                  k, m["g"], -m["phase"] * 57.29578, m["w"])
    elif cls == "sopdt":
        kp, ti, td, b = _sopdt(m, dt)
        why = "second order plus dead time from two points: K %.4g, wn %.4g rad/s, " \
              "zeta %.2f, L %.4g s: table" % (m["K"], m["wn"], m["zeta"], m["L"])
    elif m.get("fit") == "harmonic":
        kp, ti, td = _point(m, dt)
        b = _POINT[3]
        why = "no FOPDT makes this waveform (sinusoidal: a resonance): placed the " \
              "measured point |G| %.4g at %.1f deg, %.4g rad/s" % (
                  m["g"], -m["phase"] * 57.29578, m["w"])
    else:
        L = m["L"] + dt / 2.0                         # the hold adds half a period of delay
        T = m["T"]
        tau = L / (L + T)
        t = _TABLE
        i = 0
        while i < len(t) - 2 and tau > t[i + 1][0]:
            i += 1
        lo, hi = t[i], t[i + 1]
        f = (tau - lo[0]) / (hi[0] - lo[0])
        f = 0.0 if f < 0.0 else (1.0 if f > 1.0 else f)
        a, bi, c, b = (lo[k] + f * (hi[k] - lo[k]) for k in (1, 2, 3, 4))
        kp = a / (m["K"] * tau)
        ti, td = bi * L, c * L
        why = "FOPDT K %.4g, T %.4g s, L %.4g s, L / (L + T) %.2f: table" % (
            m["K"], T, m["L"], tau)
    b = 0.0 if b < 0.0 else (1.0 if b > 1.0 else b)
    return {"rule": cls, "kp": kp, "ki": kp / ti, "kd": kp * td,
            "d_filter": td / 10.0, "sp_weight": b, "p_on_m": b < 0.95,
            "why": why + ", setpoint weight %.2f" % b}


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
