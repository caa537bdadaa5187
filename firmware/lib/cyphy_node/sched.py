# Fixed-rate scheduler: several control loops, one thread, drift-free deadlines.
#
# Timing model (docs/firmware.md has the full story):
# - A loop's deadlines are start + k * period_us, kept as ticks values and advanced with
#   ticks_add(deadline, period_us), never "now + period": lateness never accumulates.
# - Every comparison goes through ticks_diff, so the wrap of ticks_us (2**30 us, ~17.9 min,
#   on ESP32) is invisible.
# - Catch-up policy: a loop runs at most once per run_once(). When a tick ends after its next
#   deadline (an overrun), the deadlines already in the past are skipped (counted, not run) and
#   the loop resumes on the first deadline that is not in the past: no burst of late ticks.
# - Nothing here allocates once the loops are added: state lives in preallocated array('i')
#   and every int stays inside ESP32's 31-bit small-int range (see _BASE and _HMAX).
from array import array

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests)
    def const(x):
        return x

_HALF = const(1 << 29)          # ticks_diff results lie in [-_HALF, _HALF)
_STALL_US = const(1 << 28)      # lateness beyond this (~268 s) resyncs instead of skipping
_BASE = const(1 << 29)          # two-word counters: value = hi * _BASE + lo, 0 <= lo < _BASE
_HMAX = const(1 << 29)          # a histogram bucket reaching this halves every bucket
_BIG = const((1 << 30) - 1)     # min/max sentinels: the small-int limits
_SMALL = const(-(1 << 30))

# Per-loop statistics live in one array('i'); these are the slots. Two-word counters use
# slot i for the low word and i + 1 for the high word.
_N = const(0)        # ticks run (2 words)
_OVR = const(2)      # overruns (2 words)
_SKIP = const(4)     # skipped periods (2 words)
_JSUM = const(6)     # sum of jitter, us (2 words)
_CSUM = const(8)     # sum of compute time, us (2 words)
_JMIN = const(10)
_JMAX = const(11)
_CMIN = const(12)
_CMAX = const(13)
_JLAST = const(14)
_CLAST = const(15)
_NSLOTS = const(16)

# Jitter histogram: log-linear buckets, 16 per octave (like HdrHistogram): values 0-15 get a
# bucket each, then each power-of-two range [16 * 2**e, 32 * 2**e) is split into 16 equal
# buckets, so a bucket is at most 1/16 (6.25 %) of its value wide. 17 octaves reach 2**21 us
# (2.1 s, two periods of the slowest loop, 1 Hz: later than that a tick only starts after a
# stall); every larger jitter counts in the last bucket, whose upper bound is the small-int
# limit (a percentile there is the exact max). 288 buckets, 1,152 B a loop (26 octaves to
# 2**30 took 1,728 B).
_SUB = const(16)
_OCTAVES = const(17)
_NBUCKETS = const(16 + 17 * 16)


def _bucket(v):
    # Bucket index of a jitter value; negative (early) values count as 0.
    if v < _SUB:
        return v if v > 0 else 0
    e = 0
    while v >= 2 * _SUB:        # at most 25 halvings: cheap and allocation-free
        v >>= 1
        e += 1
    if e >= _OCTAVES:
        return _NBUCKETS - 1
    return _SUB + e * _SUB + (v - _SUB)


def bucket_bounds(i):
    # (lowest, highest) value that lands in bucket i.
    if i < _SUB:
        return i, i
    e = (i - _SUB) // _SUB
    m = (i - _SUB) % _SUB + _SUB
    if i == _NBUCKETS - 1:
        return m << e, _BIG
    return m << e, ((m + 1) << e) - 1


def _acc(a, i, v):
    # Add v (|v| < _BASE) to the two-word counter at a[i], a[i + 1]. lo stays in
    # [0, _BASE) so lo + v never leaves (-2**30, 2**30); hi moves by one per carry and
    # saturates at the small-int limits (unreachable: see docs/firmware.md, "Statistics").
    lo = a[i] + v
    if lo >= _BASE:
        lo -= _BASE
        if a[i + 1] < _BIG:
            a[i + 1] += 1
    elif lo < 0:
        lo += _BASE
        if a[i + 1] > _SMALL:
            a[i + 1] -= 1
    a[i] = lo


def _total(a, i):
    # Value of a two-word counter (may be a big int: only for stats(), which may allocate).
    return a[i + 1] * _BASE + a[i]


class HostClock:
    """Real time on CPython, with ESP32's 2**30 us ticks period (MicroPython uses `time`)."""

    def __init__(self):
        import time
        self._time = time

    def ticks_us(self):
        return (self._time.monotonic_ns() // 1000) & ((1 << 30) - 1)

    def ticks_add(self, t, delta):
        return (t + delta) & ((1 << 30) - 1)

    def ticks_diff(self, a, b):
        return ((a - b + (1 << 29)) & ((1 << 30) - 1)) - (1 << 29)

    def sleep_us(self, us):
        if us > 0:
            self._time.sleep(us / 1e6)


class VirtualClock:
    """Virtual time: sleep_us() just advances the clock, so runs are instant and repeatable.

    Ticks wrap at `period` (default 2**30, as ticks_us on ESP32); `start` lets a test begin
    just before the wrap. The arithmetic keeps every intermediate value a small int even
    for period 2**30, so the clock itself is safe under heap_lock on ESP32.
    """

    def __init__(self, start=0, period=1 << 30):
        if period & (period - 1) or period < 4:
            raise ValueError("period must be a power of two")
        self._mask = period - 1
        self._half = period >> 1
        self.t = start & self._mask

    def ticks_us(self):
        return self.t

    def ticks_add(self, t, delta):
        # Same contract as MicroPython's time.ticks_add: |delta| < period / 2.
        if not -self._half < delta < self._half:
            raise OverflowError("ticks interval overflow")
        if delta >= 0:
            if t > self._mask - delta:   # t + delta would pass the wrap (and 2**30 - 1)
                return t - (self._mask - delta) - 1
            return t + delta
        r = t + delta                    # in (-half, period)
        return r + self._mask + 1 if r < 0 else r

    def ticks_diff(self, a, b):
        d = a - b                        # in (-period, period)
        if d >= self._half:
            d = d - self._mask - 1
        elif d < -self._half:
            d = d + self._mask + 1
        return d

    def sleep_us(self, us):
        # Any non-negative duration; long sleeps advance in legal steps.
        while us > 0:
            step = us if us < self._half else self._half - 1
            self.t = self.ticks_add(self.t, step)
            us -= step

    advance = sleep_us


class Loop:
    """One periodic task: its deadline, its tick callable and its statistics."""

    def __init__(self, tick, rate_hz, name, deadline):
        if not isinstance(rate_hz, int) or isinstance(rate_hz, bool) or not 1 <= rate_hz <= 1000:
            raise ValueError("rate_hz must be an integer from 1 to 1000, got %r" % (rate_hz,))
        fn = getattr(tick, "tick", tick)     # a callable, or an object with a tick() method
        if not callable(fn):
            raise TypeError("tick must be callable or have a tick() method")
        self.name = name
        self.rate_hz = rate_hz
        # Whole microseconds: controllers take dt from period_us, so the control law is exact;
        # for rates that do not divide 10**6 the true rate is 10**6 / period_us (< 0.05 % off).
        self.period_us = (1000000 + rate_hz // 2) // rate_hz
        self.deadline = deadline
        self._clock = None  # the scheduler's clock, set by Scheduler.add()
        self.fn = fn
        # sized from a range (reset_stats() zeroes them): neither a temporary list of
        # _NBUCKETS objects (3 KB) nor a temporary buffer as large as the array, which a
        # stale reference (MicroPython's GC is conservative) can keep alive beside it
        self._st = array("i", range(_NSLOTS))
        self._hist = array("i", range(_NBUCKETS))
        self.reset_stats()

    def reset_stats(self):
        st = self._st
        for i in range(_NSLOTS):
            st[i] = 0
        st[_JMIN] = st[_CMIN] = _BIG
        st[_JMAX] = st[_CMAX] = _SMALL
        h = self._hist
        for i in range(_NBUCKETS):
            h[i] = 0

    def _due(self, early):
        # Run this loop if its deadline has come (or is within `early` us).
        now = self._clock.ticks_us()
        late = self._clock.ticks_diff(now, self.deadline)
        if late < -(self.period_us + early):
            # A deadline more than one period ahead is impossible unless the thread stalled
            # for over half the ticks period (~9 min on ESP32) and ticks_diff wrapped.
            # Resync to now rather than wait for a deadline that is really in the past.
            _acc(self._st, _OVR, 1)
            self.deadline = now
            late = 0
        if late >= -early:
            self._run(now, late)

    def _run(self, start, jitter):
        # Run one tick that started `jitter` us after its deadline; then pick the next deadline.
        self.fn()
        end = self._clock.ticks_us()
        comp = self._clock.ticks_diff(end, start)
        self._advance(end)
        self._record(jitter, comp)

    def _advance(self, end):
        nxt = self._clock.ticks_add(self.deadline, self.period_us)
        late = self._clock.ticks_diff(end, nxt)
        if late > 0:
            nxt = self._overrun(end, nxt, late)
        self.deadline = nxt

    def _overrun(self, end, nxt, late):
        # The next deadline passed while this tick ran. Skip every deadline that is already
        # in the past (ceil(late / p) of them); one that equals `end` still runs.
        _acc(self._st, _OVR, 1)
        n = (late + self.period_us - 1) // self.period_us
        _acc(self._st, _SKIP, n)
        if late <= _STALL_US:
            return self._clock.ticks_add(nxt, n * self.period_us)  # < late + p: a legal delta
        return self._clock.ticks_add(end, self.period_us)  # very long stall: resync

    def _record(self, jitter, comp):
        st = self._st
        _acc(st, _N, 1)
        _acc(st, _JSUM, jitter)
        _acc(st, _CSUM, comp)
        st[_JLAST] = jitter
        st[_CLAST] = comp
        if jitter < st[_JMIN]:
            st[_JMIN] = jitter
        if jitter > st[_JMAX]:
            st[_JMAX] = jitter
        if comp < st[_CMIN]:
            st[_CMIN] = comp
        if comp > st[_CMAX]:
            st[_CMAX] = comp
        b = _bucket(jitter)
        self._hist[b] += 1
        if self._hist[b] >= _HMAX:
            self._halve()

    def _halve(self):
        # Keep counts small ints: halve all buckets (the shape, hence p99, is kept; old
        # samples weigh less). Happens at most once per 2**28 ticks (3 days at 1 kHz).
        h = self._hist
        i = 0
        while i < _NBUCKETS:
            h[i] >>= 1
            i += 1

    def jitter_percentile(self, pct=99):
        # Upper bound of the bucket holding the pct-th percentile of jitter (never
        # under-reports), clamped to the observed [min, max]. None before the first tick.
        h = self._hist
        total = 0
        for i in range(_NBUCKETS):
            total += h[i]
        if total == 0:
            return None
        need = total - (total * (100 - pct)) // 100    # = ceil(total * pct / 100)
        seen = 0
        for i in range(_NBUCKETS):
            seen += h[i]
            if seen >= need:
                v = bucket_bounds(i)[1]
                st = self._st
                return max(st[_JMIN], min(v, st[_JMAX]))
        return self._st[_JMAX]

    def stats(self):
        """Statistics since the last reset_stats(), as a dict (allocates: not for the tick)."""
        st = self._st
        n = _total(st, _N)
        d = {
            "name": self.name, "rate_hz": self.rate_hz, "period_us": self.period_us,
            "ticks": n, "overruns": _total(st, _OVR), "skipped": _total(st, _SKIP),
        }
        for key, lo, hi, s, last in (("jitter", _JMIN, _JMAX, _JSUM, _JLAST),
                                     ("compute", _CMIN, _CMAX, _CSUM, _CLAST)):
            d[key + "_min_us"] = st[lo] if n else None
            d[key + "_max_us"] = st[hi] if n else None
            # Rounded to the nearest us: floor((2 * sum + n) / (2 * n)).
            d[key + "_mean_us"] = (2 * _total(st, s) + n) // (2 * n) if n else None
            d[key + "_last_us"] = st[last] if n else None
        d["jitter_p99_us"] = self.jitter_percentile(99)
        return d


class Scheduler:
    """Runs several fixed-rate loops from one thread.

    clock: anything with ticks_us(), ticks_add(), ticks_diff(), sleep_us(): MicroPython's
    `time` module (the default there), a VirtualClock, or HostClock (the default on CPython).
    early_us: a loop counts as due this many us before its deadline. Leave 0 when run() drives
    the scheduler; set it to absorb phase error when a periodic timer calls run_once().
    """

    def __init__(self, clock=None, early_us=0):
        if clock is None:
            try:
                import time
                time.ticks_us  # MicroPython's time module is already a clock
                clock = time
            except AttributeError:
                clock = HostClock()
        self.clock = clock
        # Whole milliseconds of a wait go through sleep_ms where the clock has one: on ESP32
        # sleep_ms yields to FreeRTOS while sleep_us busy-waits.
        self._sleep_ms = getattr(clock, "sleep_ms", None)
        self.early_us = early_us
        self.loops = []
        self._n = 0
        self._stop = False

    def add(self, tick, rate_hz, name=None, phase_us=0):
        """Add a loop running tick() at rate_hz (1-1000); its first deadline is now + phase_us.
        Loops added first run first when several are due at once (declare them by priority)."""
        c = self.clock
        lp = Loop(tick, rate_hz, name or "loop%d" % len(self.loops), c.ticks_us())
        if not 0 <= phase_us < lp.period_us:
            raise ValueError("phase_us must be in [0, period_us)")
        lp.deadline = c.ticks_add(lp.deadline, phase_us)
        lp._clock = c
        self.loops.append(lp)
        self._n = len(self.loops)
        return lp

    def loop(self, name):
        for lp in self.loops:
            if lp.name == name:
                return lp
        raise KeyError(name)

    # The pass below is split into small methods on purpose: MicroPython heap-allocates
    # the frame of any function needing more than about 11 words of locals and stack (and
    # heap_lock() hides it by falling back to the C stack), so each of these stays under
    # that; tests/sim/test_node_runtime.py counts the bytes with micropython.mem_total().
    def run_once(self):
        """Run every loop that is due (each at most once); return us until the next deadline
        (0: something is already due). Exceptions from a tick propagate; that loop's deadline
        is left as it was, so the caller (the safety layer) decides what happens next."""
        i = 0
        while i < self._n:
            self.loops[i]._due(self.early_us)
            i += 1
        return self._until_next()

    def _until_next(self):
        now = self.clock.ticks_us()
        wait = _HALF
        i = 0
        while i < self._n:
            w = self.clock.ticks_diff(self.loops[i].deadline, now)
            if w < wait:
                wait = w
            i += 1
        return wait if wait > 0 else 0

    def on_timer(self, _timer=None):
        """For machine.Timer(callback=...) or micropython.schedule: run what is due."""
        self.run_once()

    def stop(self):
        """Make run() return after the current pass (callable from a tick)."""
        self._stop = True

    def run(self, until=None, spin_us=0):
        """Run in real (or virtual) time: run_once(), then sleep until the next deadline.
        until: None (until stop() or an exception) or a ticks value; deadlines up to and
        including it run. spin_us: wake this early and busy-wait the rest, trading CPU for
        jitter (sleep_us overshoots on a busy OS or with Wi-Fi; ignored on a VirtualClock)."""
        c = self.clock
        if isinstance(c, VirtualClock):
            spin_us = 0                    # busy-waiting on a clock nobody advances never ends
        self._stop = False
        while True:
            wait = self.run_once()
            if self._stop:
                return
            if until is not None:
                left = c.ticks_diff(until, c.ticks_us())
                if left <= 0:
                    # the clock may have passed `until` after run_once() looked (a busy
                    # host): a deadline up to `until` that it did not see runs first
                    if not self._due_by(until):
                        return
                    wait = 0
                elif left < wait:
                    wait = left
            if wait > 0:
                self._wait(c, wait, spin_us)

    def _due_by(self, t):
        # Is some loop's deadline at or before ticks value t?
        i = 0
        while i < self._n:
            if self.clock.ticks_diff(self.loops[i].deadline, t) <= 0:
                return True
            i += 1
        return False

    def _wait(self, c, wait, spin_us):
        # Sleep `wait` us: whole ms via sleep_ms (if any), the rest via sleep_us, the final
        # spin_us busy-waiting. Re-reading the clock after each step absorbs oversleep.
        target = c.ticks_add(c.ticks_us(), wait)
        ms = (wait - spin_us) // 1000
        if ms > 0 and self._sleep_ms is not None:
            self._sleep_ms(ms)
        left = c.ticks_diff(target, c.ticks_us()) - spin_us
        if left > 0:
            c.sleep_us(left)
        while spin_us and c.ticks_diff(target, c.ticks_us()) > 0:
            pass

    def stats(self):
        """{loop name: Loop.stats()} for the REPL and telemetry (allocates)."""
        d = {}
        for lp in self.loops:
            d[lp.name] = lp.stats()
        return d

    def reset_stats(self):
        for lp in self.loops:
            lp.reset_stats()
