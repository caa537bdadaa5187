# Small control blocks for the tick: rate limiter, first-order low-pass, on/off with
# hysteresis, high/low alarms.
#
# Constructors take engineering units as floats (config time, may allocate). update()/check()
# take and return ints in milli-units (fixed.py) and never allocate: no floats, no tuples, no
# new attributes, and every method keeps its frame within the 11 words MicroPython places on
# the C stack (bigger frames are heap-allocated on every call, see docs/control.md).
# Signals are expected in VAL_MIN..VAL_MAX (the loop clamps sensors to their valid range);
# blocks whose arithmetic needs it clamp again, so any small int is safe to pass.
from math import exp

from .fixed import VAL_MAX, VAL_MIN, SMALL_MAX, SMALL_MIN, Gain, to_fixed

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_RFRAC = const(24)                  # ramp: fraction bits of the per-tick step
_RMASK = const((1 << 24) - 1)
_FRAC = const(16)                   # low-pass: fraction bits carried between ticks
_FMASK = const(0xFFFF)


class Ramp:
    """Rate limiter: the value moves toward the target by at most `rate` units/s.

    The per-tick step is rate * dt milli-units, usually not an integer: the fraction is kept
    (24 bits) and carried, so a slow ramp (0.1 degC/min at 100 Hz is 0.017 milli-units per
    tick) still moves at the right average speed. rate <= 0 means unlimited.
    """

    def __init__(self, rate, dt, value=0.0):
        self.value = to_fixed(value)
        self.acc = 0
        self.set_rate(rate, dt)

    def set_rate(self, rate, dt):
        step = rate * dt * 1000.0
        if rate <= 0.0 or step >= VAL_MAX:
            self.whole, self.frac = SMALL_MAX - 1, 0     # covers any |target - value|
        else:
            self.whole = int(step)
            self.frac = int(round((step - self.whole) * (1 << _RFRAC)))
            if self.frac > _RMASK:
                self.whole += 1
                self.frac = 0

    def update(self, target):
        # target - v: both in VAL range, so the difference fits; step <= SMALL_MAX.
        target = VAL_MIN if target < VAL_MIN else (VAL_MAX if target > VAL_MAX else target)
        v = self.value
        d = target - v
        if d == 0:
            return v
        a = self.acc + self.frac                    # < 2**25
        step = self.whole + (a >> _RFRAC)
        self.acc = a & _RMASK
        if d > step:
            v += step
        elif d < -step:
            v -= step
        else:
            v = target
            self.acc = 0
        self.value = v
        return v


class LowPass:
    """First-order low-pass: y += alpha * (x - y), exact average, no dead zone.

    Give tau (s) and dt (s): alpha = 1 - exp(-dt / tau), the exact discretisation of
    1 / (tau s + 1) for an input held over each period. Or give alpha directly (0 < alpha <= 1,
    ESPHome's exponential_moving_average). The first sample initialises the state (no
    start-up ramp from zero).

    Why the carried fraction: in plain integer arithmetic y stops moving as soon as
    alpha * (x - y) rounds to 0, i.e. up to 1 / alpha milli-units away from x. Here the part
    of alpha * (x - y) below one milli-unit is kept in 16 fraction bits and carried to the
    next tick, so y reaches x exactly.
    """

    def __init__(self, tau=None, dt=None, alpha=None):
        if alpha is None:
            if tau is None or dt is None or dt <= 0.0:
                raise ValueError("LowPass needs tau and dt (s), or alpha")
            alpha = 1.0 if tau <= 0.0 else 1.0 - exp(-dt / tau)
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha %r outside (0, 1]" % (alpha,))
        self.alpha = alpha
        self._a = Gain(alpha)
        self._af = Gain(alpha * 65536.0)     # alpha in units of 2**-16
        # Exact path while |alpha * d| < 2**13 (8 units per tick): then alpha * 2**16 * d
        # stays below 2**29. Beyond, a rounding of half a milli-unit is irrelevant.
        self._fine = min(int(8191 / alpha), VAL_MAX)
        self.value = 0
        self._r = 0                         # carried fraction, 0 <= r < 2**16
        self._fresh = True

    def reset(self, x=None):
        self._fresh = x is None
        self.value = 0 if x is None else x
        self._r = 0

    def update(self, x):
        x = VAL_MIN if x < VAL_MIN else (VAL_MAX if x > VAL_MAX else x)
        if self._fresh:
            self._fresh = False
            self.value = x
            return x
        y = self.value
        d = x - y                           # both in VAL range: fits
        if -self._fine < d < self._fine:
            # |alpha * 2**16 * d| < 2**29, + r < 2**16: in range. y + w >> 16 lies between y
            # and x (alpha <= 1), so y stays in VAL range.
            w = self._af.mul(d) + self._r
            y += w >> _FRAC
            self._r = w & _FMASK
        else:
            # Far from x: half a milli-unit of rounding is irrelevant; no fraction to carry.
            # |round(alpha * d)| <= |d|, so y stays between y and x.
            y += self._a.mul(d)
        self.value = y
        return y


class OnOff:
    """On/off (bang-bang) controller with hysteresis.

    Direct action (heating): turns on when x < setpoint - below, off when x > setpoint + above.
    Reverse action (cooling): on when x > setpoint + above, off when x < setpoint - below.
    Between the two thresholds the state is held. min_on / min_off (ticks) keep the output in
    a state at least that long (compressor and relay protection). update() returns the
    on or off output value (milli-units); `state` is 1 when on.
    """

    def __init__(self, setpoint=0.0, below=0.5, above=0.5, reverse=False,
                 on=100.0, off=0.0, min_on=0, min_off=0):
        if below < 0.0 or above < 0.0:
            raise ValueError("hysteresis below/above must be >= 0")
        self.setpoint = to_fixed(setpoint, name="setpoint")
        self.below = to_fixed(below, 0, VAL_MAX, "below")
        self.above = to_fixed(above, 0, VAL_MAX, "above")
        self.reverse = bool(reverse)
        self.on = to_fixed(on, name="on")
        self.off = to_fixed(off, name="off")
        self.min_on = int(min_on)
        self.min_off = int(min_off)
        self.state = 0
        self.held = SMALL_MAX >> 1          # ticks in the current state (saturating)

    def set_setpoint(self, sp):
        # Allocation-free; sp in milli-units, clamped to the signal range.
        self.setpoint = VAL_MIN if sp < VAL_MIN else (VAL_MAX if sp > VAL_MAX else sp)

    def update(self, x):
        held = self.held
        if held < SMALL_MAX:
            held += 1
        s = self.state
        if s:
            if held >= self.min_on and self._wants(x) < 0:
                s = 0
                held = 0
        elif held >= self.min_off and self._wants(x) > 0:
            s = 1
            held = 0
        self.state = s
        self.held = held
        return self.on if s else self.off

    def _wants(self, x):
        # +1: demand (x beyond the "on" threshold), -1: satisfied, 0: inside the band.
        # setpoint -/+ band: both in VAL range, so the sums fit.
        lo = self.setpoint - self.below
        hi = self.setpoint + self.above
        if self.reverse:
            return 1 if x > hi else (-1 if x < lo else 0)
        return 1 if x < lo else (-1 if x > hi else 0)


LOW = const(1)
HIGH = const(2)


class Alarm:
    """High/low alarms with hysteresis, an optional on-delay and latched flags.

    The high alarm becomes active when x > high for `delay` consecutive ticks and clears when
    x < high - hyst; the low alarm mirrors it. check(x) returns the active bits (LOW = 1,
    HIGH = 2). `latched` keeps every bit that was ever active until ack(), which clears the
    latched bits whose condition has gone (like an alarm panel's acknowledge). `trips` counts
    activations (saturating).
    """

    def __init__(self, high=None, low=None, hyst=0.0, delay=0):
        self.high = SMALL_MAX if high is None else to_fixed(high, name="high")
        self.low = SMALL_MIN if low is None else to_fixed(low, name="low")
        self.hyst = to_fixed(hyst, 0, VAL_MAX >> 1, "hyst")
        self.delay = int(delay)
        self.active = 0
        self.latched = 0
        self.trips = 0
        self._nh = 0                        # consecutive ticks beyond high / low
        self._nl = 0

    def check(self, x):
        a = self.active
        if a & HIGH:
            if x < self.high - self.hyst:   # high - hyst: never below SMALL_MIN (see hyst range)
                a &= ~HIGH
        elif x > self.high:
            self._nh += 1
            if self._nh > self.delay:
                a |= HIGH
                self._nh = 0
                self._trip()
        else:
            self._nh = 0
        if a & LOW:
            if x > self.low + self.hyst:
                a &= ~LOW
        elif x < self.low:
            self._nl += 1
            if self._nl > self.delay:
                a |= LOW
                self._nl = 0
                self._trip()
        else:
            self._nl = 0
        self.active = a
        self.latched |= a
        return a

    def _trip(self):
        if self.trips < SMALL_MAX:
            self.trips += 1

    def ack(self):
        self.latched = self.active
