# Number conventions for every firmware module: integer fixed point that never leaves
# ESP32's small-int range.
#
# Why: on MicroPython every float is a heap object, and on ESP32 (32-bit words, 1 tag bit)
# an int outside [-2**30, 2**30 - 1] silently becomes a heap-allocated big int. A control
# tick that must not allocate therefore works on ints whose every value AND every
# intermediate result stays inside SMALL_MIN..SMALL_MAX. The Unix port's 63-bit small ints
# would hide a violation, so tests check the bounds with an asserting int subclass on CPython.
#
# Conventions
# - Engineering values are ints in milli-units: 23.456 degC -> 23456, 0..100 % -> 0..100000.
# - A signal lies in VAL_MIN..VAL_MAX (+-2**29 - 1, i.e. +-536870.911 units), so the
#   difference of any two signals is still a small int.
# - Gains are Gain objects: multiplying a signal by one rounds to nearest, saturates instead
#   of overflowing, and has a relative precision of 2**-20 (about 1e-6).
# - Floats appear only at configuration time (to_fixed, Gain(...)), never in a tick.
try:
    from micropython import const
except ImportError:  # CPython: host tools and tests import this file too
    def const(x):
        return x

SCALE = const(1000)
SMALL_MIN = const(-(1 << 30))
SMALL_MAX = const((1 << 30) - 1)
VAL_MAX = const((1 << 29) - 1)
VAL_MIN = const(-((1 << 29) - 1))

_M_BITS = const(20)                 # gain mantissa bits: relative precision 2**-20
_M_ONE = const(1 << 20)
_LO_MASK = const(1023)              # the operand is split into 10-bit pieces
_HALF19 = const(1 << 19)            # 0.5 in units of 2**-20 (rounding constant)
_S_MAX = const(62)                  # smallest gain kept at full precision: ~2**-42


def to_fixed(x, lo=VAL_MIN, hi=VAL_MAX, name="value"):
    """Engineering value (float or int, units) -> int milli-units. Config time only.

    ESP32 builds use single-precision floats: a float converts exactly only while
    |x * 1000| < 2**24 (16777.216 units); pass larger values as ints (exact)."""
    v = x * SCALE if isinstance(x, int) else int(round(x * SCALE))
    if v < lo:
        raise ValueError("%s %r is below the limit %r" % (name, x, lo / SCALE))
    if v > hi:
        raise ValueError("%s %r is above the limit %r" % (name, x, hi / SCALE))
    return v


def from_fixed(v):
    """int milli-units -> float engineering units (allocates: not for the tick)."""
    return v / SCALE


def clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


def sat_add(a, b):
    # a + b for small ints, saturated instead of overflowing. The tests on each branch
    # only form SMALL_MAX - b (b >= 0) or SMALL_MIN - b (b < 0): both stay in range.
    if b >= 0:
        return SMALL_MAX if a > SMALL_MAX - b else a + b
    return SMALL_MIN if a < SMALL_MIN - b else a + b


def sat_sub(a, b):
    # a - b, saturated. SMALL_MIN + b (b > 0) and SMALL_MAX + b (b < 0) stay in range.
    if b > 0:
        return SMALL_MIN if a < SMALL_MIN + b else a - b
    return SMALL_MAX if a > SMALL_MAX + b else a - b


def bits(n):
    """Bit length of abs(n) (config time; int.bit_length is missing on some ports)."""
    n = abs(n)
    b = 0
    while n:
        n >>= 1
        b += 1
    return b


class Gain:
    """A non-negative constant g = i + m / 2**(20 + sh) and an allocation-free x * g.

    - g < 1: i = 0 and m is normalised into [2**19, 2**20), so the representation error is
      at most 2**-21 / 2**-1 = 2**-20 relative (sh grows for small gains, capped at 42).
    - g >= 1: sh = 0 and m / 2**20 is the fractional part: the error is at most 2**-21 absolute,
      i.e. below 2**-21 relative.
    mul(x) returns round(x * g) (ties up) for any small int x, exactly for the represented g,
    whenever that result fits a small int; otherwise SMALL_MAX or SMALL_MIN (saturation).
    """

    def __init__(self, g=0.0):
        self.set(g)

    def set(self, g):
        # Config time: may allocate. Rejects NaN, negatives and gains >= 2**30.
        if not 0.0 <= g < 1073741824.0:
            raise ValueError("gain %r outside [0, 2**30)" % (g,))
        i = int(g)
        f = g - i
        s = _M_BITS
        if i == 0 and f > 0.0:
            while f * (1 << s) < _HALF19 and s < _S_MAX:
                s += 1
        m = int(round(f * (1 << s)))
        if m >= _M_ONE:             # rounded up to the next power of two
            if s > _M_BITS:
                m >>= 1
                s -= 1
            else:
                i += 1
                m = 0
        self.i = i
        self.m = m
        self.sh = s - _M_BITS
        self.sh1 = self.sh - 1
        # Rounding constant for the 2**-20 stage when there is no final shift (sh == 0);
        # with a final shift the rounding happens there instead (no double rounding).
        self.rc = _HALF19 if self.sh == 0 else 0
        # g >= 1 (sh == 0): |x| <= lim = floor(SMALL_MAX / g) means |x * g| <= SMALL_MAX, so
        # x * i and x * i + round(x * frac) (same signs) fit. Exact integer division (config).
        self.lim = (SMALL_MAX << _M_BITS) // ((i << _M_BITS) + m) if i else SMALL_MAX

    def value(self):
        """The exact gain represented (float, config time)."""
        return self.i + self.m / float(1 << (self.sh + _M_BITS))

    def mul(self, x):
        # round(x * g) without any intermediate leaving the small-int range.
        # Proof, with m <= 2**20 - 1 and x in [-2**30, 2**30 - 1]:
        # - -1024 <= x < 1024: x * m + rc lies in [-2**30 + 2**10, 2**30 - 2**19 - 1023].
        # - otherwise x = hi * 2**20 + mid * 2**10 + lo, hi in [-2**10, 2**10 - 1],
        #   mid, lo in [0, 1023]; every product of a 10-bit piece with m is below 2**30:
        #   t1 = (lo * m) >> 10                      < 2**20
        #   mid * m + t1 + (rc >> 10) <= (2**30 - 2**20 - 2**10 + 1) + (2**20 - 1) + 2**9
        #                             < 2**30
        #   hi * m + (that >> 10) lies in [-2**30 + 2**10, 2**30 - 2**10]: in range.
        #   Nested floors of integer divisions equal one floor, so
        #   t = floor((x * m + rc) / 2**20) exactly, and |t| < |x| + 1.
        # - final shift (sh >= 1): floor((floor(t / 2**(sh-1)) + 1) / 2) = round(x*m/2**(20+sh));
        #   t >> (sh - 1) is at most |t|, so the +1 cannot overflow.
        # - integer part (g >= 1): |x| <= lim keeps |x * g|, hence x * i and x * i + t, in range.
        m = self.m
        if -1024 <= x < 1024:
            t = (x * m + self.rc) >> 20
        else:
            t = ((x & _LO_MASK) * m) >> 10
            t = (((x >> 10) & _LO_MASK) * m + t + (self.rc >> 10)) >> 10
            t = (x >> 20) * m + t
        if self.sh:
            t = ((t >> self.sh1) + 1) >> 1
        i = self.i
        if i == 0:
            return t
        if x > self.lim:
            return SMALL_MAX
        if x < -self.lim:
            return SMALL_MIN
        return x * i + t


class Acc:
    """Wide accumulator (about 50 bits) made of two small ints: value = hi * 2**20 + lo.

    add(v) takes |v| <= 2**29; lo is folded into hi whenever it leaves +-2**29, so lo + v stays
    within +-2**30 - 1 and hi moves by at most 2**10 per fold. Allocation-free; read the total
    with value() (a float, allocates) outside the tick.
    """

    def __init__(self):
        self.hi = 0
        self.lo = 0

    def add(self, v):
        lo = self.lo + v
        if lo > VAL_MAX or lo < VAL_MIN:
            self.hi += lo >> 20
            lo &= 0xFFFFF
        self.lo = lo

    def clear(self):
        self.hi = 0
        self.lo = 0

    def value(self):
        return self.hi * 1048576.0 + self.lo
