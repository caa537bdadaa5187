# PID controller for the fixed-rate tick: integer fixed point, allocation-free update().
#
# Semantics (tests/firmware/reference_pid.py is the same controller in floats):
#   sp  = setpoint moved toward the target by at most sp_rate * dt per tick (Ramp)
#   e   = sp - y (direct) or y - sp (reverse), then error_map(e) if given
#   dm  = -(y - y_prev) (direct) or +(y - y_prev): the measurement's contribution to de
#   P   = kp * b * e                  (b the setpoint weight, 0..1; deadband-shaped, below)
#   D   = b * D + kd / (tf + dt) * dm (first-order filtered derivative on measurement,
#                                      b = tf / (tf + dt); de instead of dm with d_on_error)
#   I  += ki * dt * e                 (integral kept in output units: changing ki never bumps)
#        - kp * (1 - b) * dy         (the rest of the P term, on measurement, lives in I as
#                                      Arduino PID's proportional-on-measurement does)
#   I is clamped to [i_min, i_max] (default: the output limits) and, with the default
#   anti-windup CONDITIONAL, the ki increment is skipped on a tick where it would push an
#   already saturated output further into saturation. CLAMP keeps only the clamp
#   (Arduino / simple-pid behaviour).
#   u   = clamp(P + I + D, out_min, out_max), then optionally the mean of the last `avg`
#         outputs (ESPHome output averaging; `avg_db` samples inside the deadband).
#   P, D and each integral increment are limited to +-4 * L, L the largest output or
#   integral limit magnitude: beyond that the output saturates for any realistic I.
# Setpoint weight b (Astrom & Hagglund 2006, *Advanced PID control*, ch. 3; AMIGO): P acts
# on b * sp - y, so b = 1 is P on error, b = 0 P on measurement (p_on_m=True, Arduino's
# P_ON_M), and 0 < b < 1 in between: the loop's response to load and noise is that of the
# gains alone, b only shapes the setpoint response. Here P = kp b e and I accumulates
# -kp (1 - b) dy, so P + I differs from kp (b sp - y) + I_classic by a constant that the
# integral absorbs; the same two gains as before (kp b for P, kp (1 - b) 2**F for the
# on-measurement part), so the tick costs nothing more.
# Deadband (ESPHome style, on the error): inside lo <= e <= hi the gains are multiplied by
# db_gains = (kp_mult, ki_mult, kd_mult) (default 0); outside, P is offset so that it is
# continuous at the band edges.
#
# Fixed point: signals and outputs in milli-units (fixed.py). I and D are kept with F extra
# fraction bits, F = min(20, 27 - bits(L)) (F = 10 for 0..100 %): the I increment is
# ki * dt * e with a resolution of 2**-F milli-units, so slow integrators at fast rates do not
# round to zero. With |outputs| < 2**25 (33554.431 units, enforced), every state and sum is
# below 2**29 and no intermediate leaves the small-int range (proofs in the comments below).
#
# Allocation: update() creates no objects. It is split into small methods on purpose:
# MicroPython heap-allocates the frame of any function needing more than 11 words of locals
# plus stack, so each method keeps its locals few and passes values through attributes.
from array import array

from .blocks import Ramp
from .fixed import VAL_MAX, VAL_MIN, SCALE, Gain, bits, to_fixed

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

CLAMP = const(0)
CONDITIONAL = const(1)
SAT_UP = const(1)       # PID.sat: downstream cannot follow a rising output
SAT_DOWN = const(2)     # ... or a falling one
# The transfer bias (see _absorb) fades with the integral time Ti, but never slower than
# with this time constant (s): a return from fail-safe far from the setpoint must not keep
# the output away from what the PID asks for minutes (a thermal loop's Ti), only ramp it.
TRANSFER_S = 2.0
_OUT_LIMIT = const((1 << 25) - 1)   # milli-units (33554.431): L < 2**25, so F >= 2, sums < 2**29
_AVG_MAX = const(32)                # 32 outputs of |u| < 2**25 sum below 2**30


def _weight(b):
    b = float(b)
    if not 0.0 <= b <= 1.0:
        raise ValueError("sp_weight must be 0..1")
    return b


def _tick_gain(name, g):
    try:
        return Gain(g)
    except ValueError:
        raise ValueError("the gains are too large for this loop's rate and output range "
                         "(%s = %r)" % (name, g))


class PID:
    def __init__(self, kp, ki, kd, dt, out_min=0.0, out_max=100.0, setpoint=0.0,
                 reverse=False, p_on_m=False, d_on_error=False, d_filter=0.0, sp_rate=0.0,
                 i_min=None, i_max=None, anti_windup=CONDITIONAL, deadband=None,
                 db_gains=(0.0, 0.0, 0.0), avg=1, avg_db=None, integral=0.0,
                 error_map=None, auto=True, sp_weight=None):
        if dt <= 0.0:
            raise ValueError("dt must be > 0 s")
        self.dt = float(dt)
        self.tf = float(d_filter)
        if self.tf < 0.0:
            raise ValueError("d_filter (s) must be >= 0")
        self.reverse = bool(reverse)
        if sp_weight is None:
            sp_weight = 0.0 if p_on_m else 1.0
        elif p_on_m and sp_weight != 0.0:
            raise ValueError("p_on_m means sp_weight 0")
        self.sp_weight = _weight(sp_weight)
        self.p_on_m = self.sp_weight == 0.0
        self.d_on_error = bool(d_on_error)
        self._cond = anti_windup == CONDITIONAL
        self._emap = error_map
        self.setpoint = to_fixed(setpoint, name="setpoint")
        self._ramp = Ramp(sp_rate, self.dt, setpoint)
        self.sp_rate = float(sp_rate)
        # Deadband on the error, in milli-units; gains inside it multiplied by db_gains.
        self._db = deadband is not None
        if deadband is None:
            lo, hi = 0.0, 0.0
        elif isinstance(deadband, (int, float)):
            lo, hi = -abs(deadband), abs(deadband)
        else:
            lo, hi = deadband
        if lo > 0.0 or hi < 0.0:
            raise ValueError("deadband (lo, hi) must satisfy lo <= 0 <= hi")
        self._db_lo = to_fixed(lo, name="deadband lo")
        self._db_hi = to_fixed(hi, name="deadband hi")
        self.db_gains = tuple(float(g) for g in db_gains)
        n1 = int(avg)
        n2 = n1 if avg_db is None else int(avg_db)
        if not (1 <= n1 <= _AVG_MAX and 1 <= n2 <= _AVG_MAX):
            raise ValueError("avg / avg_db must be 1..%d samples" % _AVG_MAX)
        self._n1, self._n2 = n1, n2
        self._nb = max(n1, n2)
        self._avg = n1 > 1 or n2 > 1
        self._buf = array("i", [0] * self._nb)
        self._k = 0
        self._s1 = self._s2 = 0
        # Limits (milli-units); F and the term limit depend on them.
        self._i_lim = (i_min, i_max)
        self.kp = self.ki = self.kd = 0.0
        self.out_min = self.out_max = 0
        self._F = 0
        self._I = self._D = 0
        # Per-tick values, readable for telemetry (milli-units).
        self.e = self.p = self.i = self.d = self.u = self.out = 0
        self.sp = self.setpoint
        self._y = self._e = self._dm = 0
        self._inb = False
        self._fresh = True          # next tick has no previous sample: no derivative kick
        self._fill = True           # next tick fills the averaging window
        self._bump = False          # next tick initialises I for a bumpless transfer
        # Transfer bias (milli-units): the part of a bumpless transfer (to auto, a gain
        # change) that I's limits could not take, added to the output and fading with
        # time constant min(Ti, TRANSFER_S) (ki = 0: TRANSFER_S).
        self.bias = self._B = 0     # milli-units; _B carries 2**F like I
        self._bk = Gain(0.0)
        self.is_auto = bool(auto)
        self._man = 0
        # Signal-graph inputs (graph.py), milli-units / bits, set before each update():
        # ff, a feedforward added inside the output limits (set_ff); sat, the directions the
        # output cannot move downstream (SAT_UP, SAT_DOWN: a cascade's inner loop at its
        # limit), where the integral then holds (conditional integration across loops).
        self.ff = 0
        self.sat = 0
        self.set_output_limits(out_min, out_max)
        self.set_tunings(kp, ki, kd)
        self.reset(to_fixed(integral, name="integral"))

    # ---- configuration (floats, engineering units; may allocate) ----

    def set_tunings(self, kp, ki, kd, p_on_m=None):
        """Gains in output units per input unit (ki per second, kd in seconds). Bumpless while
        running: the integral absorbs the change of the P term at the last error. p_on_m
        True / False sets the setpoint weight to 0 / 1; None keeps it."""
        old_kd = self.kd
        self._derive(*self.check_tunings(kp, ki, kd, p_on_m))
        self._rebump(old_kd)

    def set_sp_weight(self, b):
        """Setpoint weight b in [0, 1] of the P term (1: P on error, 0: P on measurement,
        i.e. p_on_m). Bumpless while running, as set_tunings."""
        b = _weight(b)
        self._derive(*self._check(self.kp, self.ki, self.kd, b))
        self._rebump(self.kd)

    def _rebump(self, old_kd):
        # Bumpless gain change (Astrom & Hagglund 2006, "Advanced PID control", 13.5): the
        # P and D terms under the new gains, at the last error and measurement change, and
        # I (with the transfer bias) takes the difference. D's filter state is rescaled to
        # the new kd (or, from kd = 0, set to what the last measurement change gives).
        old_p, old_d = self.p, self.d
        if not self.is_auto or self._fresh:
            return
        T = self._Text
        if old_kd > 0.0:
            D = int(self._D * (self.kd / old_kd))
        elif not self.d_on_error:
            D = int(self.kd / self.dt * self._dm) << self._F
        else:
            D = 0
        self._D = D = -T if D < -T else (T if D > T else D)
        self.d = (D + self._half) >> self._F
        self._inb = self._db and self._db_lo <= self.e <= self._db_hi
        self._p()
        self._absorb(self.i + old_p - self.p + old_d - self.d)

    def _absorb(self, i):
        # I takes i (milli-units) as far as its limits allow; the transfer bias the rest,
        # so that P + I + D + bias is unchanged (bumpless). |i| <= 9 L: see _i.
        T = self._T
        i = -T if i < -T else (T if i > T else i)
        self._I = self._clamp_i(i << self._F)
        self.i = (self._I + self._half) >> self._F
        r = i - self.i                           # |r| <= 2 T; clamped to +-T, r << F and
        r = -T if r < -T else (T if r > T else r)   # _B are each within Text < 2**29
        T = self._Text
        b = self._B + (r << self._F)
        self._B = b = -T if b < -T else (T if b > T else b)
        self.bias = (b + self._half) >> self._F

    def check_tunings(self, kp, ki, kd, p_on_m=None):
        """Raise ValueError if set_tunings(kp, ki, kd) would refuse them (changes nothing);
        the arguments of _derive for them."""
        if kp < 0.0 or ki < 0.0 or kd < 0.0:
            raise ValueError('gains must be >= 0 (for reverse action: "direction": "reverse" '
                             'in the loop\'s controller config)')
        b = self.sp_weight if p_on_m is None else (0.0 if p_on_m else 1.0)
        return self._check(kp, ki, kd, b)

    def _check(self, kp, ki, kd, b):
        a = (kp, ki, kd, self.dt, self.tf, self._F, b)
        self._gains(*a)
        return a

    def get_tunings(self):
        return (self.kp, self.ki, self.kd)

    def set_sample_time(self, dt):
        """New period (s): per-tick gains are rescaled (Arduino SetSampleTime); I and D are
        kept in output units, so the output does not jump."""
        if dt <= 0.0:
            raise ValueError("dt must be > 0 s")
        self._derive(self.kp, self.ki, self.kd, dt, self.tf, self._F, self.sp_weight)
        self._ramp.set_rate(self.sp_rate, self.dt)

    def set_sp_rate(self, rate):
        self.sp_rate = float(rate)
        self._ramp.set_rate(self.sp_rate, self.dt)

    def set_d_filter(self, tf):
        """Derivative filter time constant (s); 0 = unfiltered."""
        if tf < 0.0:
            raise ValueError("d_filter (s) must be >= 0")
        self._derive(self.kp, self.ki, self.kd, self.dt, tf, self._F, self.sp_weight)

    def set_direction(self, reverse):
        self.reverse = bool(reverse)

    def set_output_limits(self, out_min, out_max, i_min=None, i_max=None):
        """Output limits (units); the integral limits default to them (ESPHome min/max_integral
        may be narrower). Applied at once: I, D and the output are re-clamped."""
        if i_min is not None or i_max is not None:
            self._i_lim = (i_min, i_max)
        i_min, i_max = self._i_lim
        i_min = out_min if i_min is None else i_min
        i_max = out_max if i_max is None else i_max
        if not (out_min < out_max and i_min <= i_max):
            raise ValueError("need out_min < out_max and i_min <= i_max")
        lim = -_OUT_LIMIT, _OUT_LIMIT
        lo = to_fixed(out_min, *lim, name="out_min")
        hi = to_fixed(out_max, *lim, name="out_max")
        ilo = to_fixed(i_min, *lim, name="i_min")
        ihi = to_fixed(i_max, *lim, name="i_max")
        L = max(abs(lo), abs(hi), abs(ilo), abs(ihi))
        F = min(20, 27 - bits(L))
        self._derive(self.kp, self.ki, self.kd, self.dt, self.tf, F, self.sp_weight)
        i_now = self._I >> self._F
        d_now = self._D >> self._F
        self.out_min, self.out_max = lo, hi
        self.i_min, self.i_max = ilo, ihi
        self._F = F
        self._half = (1 << F) >> 1           # rounding of ext -> milli-units
        self._T = T = max(4 * L, 4)           # term limit, milli-units
        self._Text = T << F                   # < 2**29: 4 * L < 2**(bits(L) + 2)
        self._ilo, self._ihi = ilo << F, ihi << F
        self._I = self._clamp_i(i_now << F)
        self._D = max(-self._Text, min(self._Text, d_now << F))
        self._man = max(lo, min(hi, self._man))
        self.out = max(lo, min(hi, self.out))
        self._fill = True

    def _derive(self, kp, ki, kd, dt, tf, F, b):
        # Everything is computed first and assigned last: a refused value leaves the
        # controller unchanged.
        (self._kp, self._kp_db, self._kpf, self._kpf_db, self._ki, self._ki_db, self._kd,
         self._kd_db, self._b, self._poff_hi, self._poff_lo) = self._gains(
            kp, ki, kd, dt, tf, F, b)
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self.dt, self.tf = float(dt), float(tf)
        self.sp_weight = b
        self.p_on_m = b == 0.0
        self._pm = b < 1.0                  # a part of P on measurement (in I)
        # the transfer bias decays by dt / Tb per tick, Tb = min(Ti, TRANSFER_S), Ti = kp / ki
        tb = TRANSFER_S if ki <= 0.0 else (0.0 if kp <= 0.0 else min(kp / ki, TRANSFER_S))
        self._bk = Gain(1.0 if tb <= dt else dt / tb)

    def _gains(self, kp, ki, kd, dt, tf, F, b):
        # Per-tick gains from the engineering gains, dt, tf, F (the I and D gains carry
        # 2**F) and the setpoint weight b; ValueError for gains a tick cannot hold.
        # kp (1 - b) 2**F is only needed (and checked) with b < 1.
        f = 1 << F
        kpf = kp * (1.0 - b) * f
        kp = kp * b                                   # the P term's gain on the error
        mp, mi, md = self.db_gains
        half = VAL_MAX >> 1
        g = (_tick_gain("kp", kp),
             _tick_gain("kp*kp_mult", kp * mp),
             _tick_gain("kp*2**F", kpf),
             _tick_gain("kp*kp_mult*2**F", kpf * mp),
             _tick_gain("ki*dt*2**F", ki * dt * f),
             _tick_gain("ki*ki_mult*dt*2**F", ki * mi * dt * f),
             _tick_gain("kd/(tf+dt)*2**F", kd / (tf + dt) * f),
             _tick_gain("kd*kd_mult/(tf+dt)*2**F", kd * md / (tf + dt) * f),
             Gain(tf / (tf + dt)),
             # Offsets outside the band keep P continuous at the edges: kp*b*(1-mp)*edge.
             to_fixed(kp * (1.0 - mp) * self._db_hi / SCALE, -half, half, "kp * deadband"),
             to_fixed(kp * (1.0 - mp) * self._db_lo / SCALE, -half, half, "kp * deadband"))
        return g

    # ---- run-time control (ints, allocation-free: callable from the tick) ----

    def set_setpoint(self, sp):
        """Target in milli-units (int); the working setpoint ramps to it at sp_rate."""
        self.setpoint = VAL_MIN if sp < VAL_MIN else (VAL_MAX if sp > VAL_MAX else sp)

    def set_manual(self, out=None):
        """Manual mode: the output is held at `out` (milli-units, clamped) or at its current
        value. Measurement and setpoint are still tracked for a bumpless return."""
        self.is_auto = False
        if out is not None:
            self.out = out
        self.out = self._man = self._clamp_out(self.out)

    def track(self, out):
        """In manual, follow an output something else drives (a relay autotune): out in
        milli-units, clamped; allocation-free. update() meanwhile tracks the measurement,
        so set_auto() later takes over from the output really applied, with no stale
        derivative (bumpless)."""
        self.out = self._man = self._clamp_out(out)

    def set_ff(self, v):
        """Feedforward (milli-units) added to P + I + D inside the output limits from the
        next update() (auto only; manual holds its output). Allocation-free."""
        T = self._T
        self.ff = -T if v < -T else (T if v > T else v)

    def retrack(self, u):
        """The output applied downstream was u (milli-units), not this PID's: a selector
        chose another loop's, or a limiter cut it. I takes the difference (back-calculation
        with a tracking time of one period, Astrom & Hagglund 2006, 3.5), so the loop
        continues from u and takes over without windup when its own demand is chosen
        again. Auto only; allocation-free."""
        if not self.is_auto:
            return
        u = self._clamp_out(u)
        d = u - self.out                  # both within the limits: |d| <= 2 L < 2**26
        if d:
            self._I = self._clamp_i(self._I + (d << self._F))   # < 2**28: see set_output_limits
            self.i = (self._I + self._half) >> self._F
            self.out = self._man = u

    def set_auto(self):
        """Automatic mode. The first tick sets I so that P + I + D equals the last (manual)
        output: no bump, even with P on error (Arduino only seeds I with the output)."""
        if not self.is_auto:
            self.is_auto = True
            self._bump = True
            self._fill = True
            self._D = 0

    def reset(self, integral=0):
        """Forget the history: I = integral (milli-units), D = 0, no derivative kick."""
        # Clamp in milli-units first: integral << F of an arbitrary int could overflow.
        i = self.i_min if integral < self.i_min else (
            self.i_max if integral > self.i_max else integral)
        self._I = i << self._F
        self._D = 0
        self.i = self.d = self.bias = self._B = 0
        self._fresh = True
        self._fill = True
        self._bump = False

    # ---- the tick ----

    def update(self, y):
        """One period: measurement y (milli-units) -> output (milli-units)."""
        y = VAL_MIN if y < VAL_MIN else (VAL_MAX if y > VAL_MAX else y)
        sp = self._ramp.update(self.setpoint)
        self.sp = sp
        if self._fresh:
            self._y = y
        # sp - y and y_prev - y: differences of two VAL-range values fit a small int.
        if self.reverse:
            e = y - sp
            self._dm = y - self._y
        else:
            e = sp - y
            self._dm = self._y - y
        self._y = y
        if self._emap is not None:
            e = self._emap(e)
        e = VAL_MIN if e < VAL_MIN else (VAL_MAX if e > VAL_MAX else e)
        self.e = e
        if self._fresh:
            self._fresh = False
            self._e = e
        if not self.is_auto:
            self._e = e
            return self.out
        self._inb = self._db and self._db_lo <= e <= self._db_hi
        self._p()
        self._d()
        self._i()
        return self._output()

    def _p(self):
        if self.p_on_m:
            self.p = 0
            return
        e = self.e
        T = self._T
        if self._inb:
            p = self._kp_db.mul(e)
        else:
            p = self._kp.mul(e)
            p = -T if p < -T else (T if p > T else p)
            if self._db:
                # |p| <= T < 2**27 and |offset| < 2**28: the difference fits.
                p -= self._poff_hi if e > self._db_hi else self._poff_lo
        self.p = -T if p < -T else (T if p > T else p)

    def _d(self):
        # D(ext) = b * D + kd/(tf+dt) * dx: |b * D| <= Text < 2**29 and the product is
        # clamped to +-Text too, so the sum stays below 2**30.
        T = self._Text
        dx = self.e - self._e if self.d_on_error else self._dm
        self._e = self.e
        g = self._kd_db.mul(dx) if self._inb else self._kd.mul(dx)
        g = -T if g < -T else (T if g > T else g)
        D = self._b.mul(self._D) + g
        D = -T if D < -T else (T if D > T else D)
        self._D = D
        self.d = (D + self._half) >> self._F

    def _i(self):
        if self._bump:
            # Bumpless transfer: P + I + D + bias == the held output (I as far as its
            # limits allow, the bias the rest).
            self._bump = False
            self.bias = self._B = 0
            self._absorb(self._man - self.p - self.d - self.ff)  # <= L + 3 T = 13 L < 2**29
            return
        T = self._Text
        s = 0
        if self._pm:
            s = self._kpf_db.mul(self._dm) if self._inb else self._kpf.mul(self._dm)
            s = -T if s < -T else (T if s > T else s)
        inc = self._ki_db.mul(self.e) if self._inb else self._ki.mul(self.e)
        inc = -T if inc < -T else (T if inc > T else inc)
        # |I| < 2**27 and |s|, |inc| <= Text < 2**29: I + s + inc can reach 2**30 + 2**27,
        # so s + inc (< 2**30) is clamped to +-Text first; that never changes the clamped
        # result because |I| <= Text / 4.
        pm = s
        s += inc
        s = -T if s < -T else (T if s > T else s)
        new = self._clamp_i(self._I + s)
        if inc and self._cond and self._winds(new, inc):
            new = self._clamp_i(self._I + pm)               # keep only the P-on-m part
        self._I = new
        self.i = (new + self._half) >> self._F

    def _winds(self, new, inc):
        # Conditional integration: would this increment drive a saturated output further?
        u = self.p + self.d + self.bias + self.ff + ((new + self._half) >> self._F)
        if inc > 0:
            return u > self.out_max or self.sat & SAT_UP
        return u < self.out_min or self.sat & SAT_DOWN

    def _output(self):
        b = self._B
        if b:
            u = self._clamp_out(self.p + self.i + self.d + self.bias + self.ff)  # 17 L < 2**30
            k = self._bk.mul(b)                 # decay by dt / Ti (at least 2**-F milli)
            if k == 0 and self._bk.m | self._bk.i:
                k = 1 if b > 0 else -1
            b -= k
            self._B = b
            self.bias = (b + self._half) >> self._F
        else:
            u = self._clamp_out(self.p + self.i + self.d + self.ff)   # each < 2**27: fits
        self.u = u
        if self._avg:
            u = self._average(u)
        self.out = u
        self._man = u
        return u

    def _average(self, u):
        # Running sums over the last n1 and n2 outputs in one ring buffer; |u| < 2**25 and
        # n <= 32 keep the sums below 2**30 (u - old is added, never u alone first).
        buf = self._buf
        k = self._k
        if self._fill:
            self._fill = False
            self._refill(u)
        nb = self._nb
        self._s1 += u - buf[(k - self._n1) % nb]
        self._s2 += u - buf[(k - self._n2) % nb]
        buf[k] = u
        self._k = k + 1 if k + 1 < nb else 0
        if self._inb:
            return (self._s2 + (self._n2 >> 1)) // self._n2
        return (self._s1 + (self._n1 >> 1)) // self._n1

    def _refill(self, u):
        buf = self._buf
        k = 0
        while k < self._nb:
            buf[k] = u
            k += 1
        self._s1 = u * self._n1
        self._s2 = u * self._n2

    def _clamp_i(self, v):
        return self._ilo if v < self._ilo else (self._ihi if v > self._ihi else v)

    def _clamp_out(self, v):
        return self.out_min if v < self.out_min else (self.out_max if v > self.out_max else v)
