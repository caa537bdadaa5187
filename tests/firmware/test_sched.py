"""Scheduler (firmware/lib/cyphy_node/sched.py): timing, catch-up policy, statistics, no
allocation and small-int bounds. Scenarios run on real MicroPython (the `mpy` fixture) and,
where the behaviour must be identical, on CPython too; each prints one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

FIRMWARE_LIB = Path(__file__).resolve().parents[2] / "firmware" / "lib"

sys.path.insert(0, str(FIRMWARE_LIB))
from cyphy_node import sched  # noqa: E402  (CPython import of the same module)

WRAP = 1 << 30                 # ticks_us period on ESP32
SMALL_MIN, SMALL_MAX = -(1 << 30), (1 << 30) - 1


PRELUDE = """
import json
from cyphy_node.sched import Scheduler, VirtualClock, bucket_bounds
"""


# --- configuration ---------------------------------------------------------------------------

def test_rate_is_validated_and_period_rounded(both):
    out = both(PRELUDE + """
s = Scheduler(VirtualClock())
bad = []
for r in (0, 1001, 2.5, True, "10", -1):
    try:
        s.add(lambda: None, r)
    except ValueError:
        bad.append(1)
ok = [s.add(lambda: None, r).period_us for r in (1, 3, 7, 999, 1000)]
try:
    s.add(lambda: None, 100, phase_us=10000)
    phase = "accepted"
except ValueError:
    phase = "rejected"
try:
    s.add(42, 100)
    notcallable = "accepted"
except TypeError:
    notcallable = "rejected"
print(json.dumps([len(bad), ok, phase, notcallable]))
""")
    assert out == [6, [1000000, 333333, 142857, 1001, 1000], "rejected", "rejected"]


# --- drift-free deadlines --------------------------------------------------------------------

DRIFT = PRELUDE + """
class Oversleep(VirtualClock):
    # sleep_us overshoots by 0..OVER us, like a real OS: naive 'now + period' would drift.
    def __init__(self, start, over):
        VirtualClock.__init__(self, start)
        self.over = over
        self.seed = 12345
    def sleep_us(self, us):
        self.seed = (self.seed * 1103515245 + 12345) & 0x7fffffff
        VirtualClock.sleep_us(self, us + (self.seed >> 8) % (self.over + 1))

def drift(rate, n, start, over):
    clk = Oversleep(start, over) if over else VirtualClock(start)
    s = Scheduler(clk)
    bad = [0]
    k = [0]
    lp = None
    def tick():
        # every tick starts at start + k * period (+ the sleep overshoot, at most `over`)
        d = clk.ticks_diff(clk.ticks_us(), lp.deadline)
        if lp.deadline != want[0] or not 0 <= d <= over:
            bad[0] += 1
        want[0] = clk.ticks_add(want[0], lp.period_us)
        k[0] += 1
    want = [start]
    lp = s.add(tick, rate)
    # n periods in chunks (one ticks delta must stay below 2**29 us)
    done = 0
    while done < n:
        step = min(n - done, (1 << 28) // lp.period_us)
        s.run(until=clk.ticks_add(want[0], (step - 1) * lp.period_us))
        done += step
    st = lp.stats()
    return [k[0], bad[0], lp.deadline, clk.ticks_us(), st["overruns"], st["skipped"],
            st["jitter_min_us"], st["jitter_max_us"]]
"""


def test_drift_free_1e5_periods_end_exactly_at_start_plus_n_periods(both):
    n, start = 100_000, 123_456
    out = both(DRIFT + f"print(json.dumps(drift(1000, {n}, {start}, 0)))")
    ticks, bad, deadline, now, ovr, skip, jmin, jmax = out
    assert ticks == n and bad == 0 and ovr == skip == 0
    assert now == (start + (n - 1) * 1000) % WRAP          # the last tick ran on time...
    assert deadline == (start + n * 1000) % WRAP           # ...and the next is exactly n periods on
    assert jmin == jmax == 0


def test_no_drift_with_a_sleep_that_overshoots_and_at_rates_not_dividing_1e6(both):
    # 7 Hz: period 142857 us; 10**5 periods take 4 h 0 min of virtual time and cross the ticks
    # wrap 13 times; the sleep overshoots by up to 300 us every time.
    n, start = 100_000, WRAP - 500_000
    out = both(DRIFT + f"print(json.dumps(drift(7, {n}, {start}, 300)))")
    ticks, bad, deadline, now, ovr, skip, jmin, jmax = out
    assert ticks == n and bad == 0 and ovr == skip == 0
    assert deadline == (start + n * 142857) % WRAP
    assert 0 <= jmin and jmax <= 300


# --- ticks wrap-around -----------------------------------------------------------------------

WRAP_SCRIPT = PRELUDE + """
start = (1 << 30) - 1000000                  # 1 s before ESP32's ticks_us wraps
clk = VirtualClock(start)
s = Scheduler(clk)
served = []                                  # (start of the tick, the deadline it served)
def fast():
    served.append((clk.ticks_us(), a.deadline))
    clk.sleep_us(100)                        # 100 us of compute
slow_n = [0]
def slow():
    slow_n[0] += 1
    # the 10 Hz loop overruns right across the wrap: 2.5 periods of compute from t=0.9 s
    clk.sleep_us(250000 if slow_n[0] == 10 else 1000)
a = s.add(fast, 1000, "fast")
b = s.add(slow, 10, "slow")
s.run(until=clk.ticks_add(start, 2000000))   # 2 s: 1 s before the wrap and 1 s after
print(json.dumps([served, a.stats(), b.stats(), b.deadline]))
"""


def test_wraparound_deadlines_and_jitter_stay_right(both):
    served, fast, slow, slow_deadline = both(WRAP_SCRIPT)
    start = WRAP - 1_000_000
    raw = [t for t, _ in served]
    assert any(t < 1_000_000 for t in raw) and any(t > WRAP - 1_000_000 for t in raw)
    # unwrap relative to start: every served deadline is on the 1 ms grid, in order
    t = [(x - start) % WRAP for x, _ in served]
    d = [(y - start) % WRAP for _, y in served]
    assert all(x % 1000 == 0 for x in d) and all(q > p for p, q in zip(d, d[1:]))
    jit = [x - y for x, y in zip(t, d)]
    assert min(jit) == fast["jitter_min_us"] == 0 and max(jit) == fast["jitter_max_us"]
    # the slow loop's 250 ms tick (0.9 s to 1.15 s, across the wrap) blocks the fast loop once:
    # one late tick (for the 901 ms deadline), then straight back onto the grid at 1151 ms
    late = [i for i, j in enumerate(jit) if j > 100]
    assert len(late) == 1 and d[late[0]] == 901_000 and t[late[0]] == 1_150_100
    assert d[late[0] + 1] == 1_151_000 and jit[late[0] + 1] == 0
    # never a burst: the next deadline served is always after the previous tick started
    assert all(d[i + 1] > t[i] for i in range(len(t) - 1))
    assert fast["overruns"] == 1 and fast["skipped"] == 249
    assert fast["ticks"] + fast["skipped"] == 2001 and fast["ticks"] == len(served)
    # slow loop: one overrun, 2 periods (1.0 s, 1.1 s) skipped, deadlines still on its grid
    assert slow["overruns"] == 1 and slow["skipped"] == 2 and slow["ticks"] == 21 - 2
    assert (slow_deadline - start) % WRAP == 2_100_000
    assert slow["jitter_min_us"] == slow["jitter_max_us"] == 100   # behind the fast loop's tick


def test_a_deadline_at_until_runs_when_the_clock_passes_until_during_the_last_pass(both):
    # The 10 Hz loop's deadline at 100 ms is not due when the pass looks at it (99 ms);
    # the 1 kHz loop's tick then takes the clock past `until` (100.5 ms). Deadlines up to
    # and including `until` still run: the 10 Hz tick at 100 ms runs, 0.5 ms late (it
    # used to be neither run nor counted: a busy host did that to the real-time test below).
    a, b, b_skipped = both(PRELUDE + """
clk = VirtualClock()
s = Scheduler(clk)
a, b = [], []
def slow():
    a.append(clk.ticks_us())
def fast():
    b.append(clk.ticks_us())
    if clk.ticks_us() == 99000:
        clk.sleep_us(1500)
s.add(slow, 10)
fl = s.add(fast, 1000)
s.run(until=100000)
print(json.dumps([a, [len(b), b[-1]], fl.stats()["skipped"]]))
""")
    assert a == [0, 100500]
    assert b == [100, 99000] and b_skipped == 1      # its 100 ms deadline passed in the long tick


def test_real_time_on_micropython_time_module(mpy):
    # The default clock on MicroPython is the time module itself. Real sleeps overshoot and
    # the host may be busy, so only what cannot depend on load is checked: every deadline
    # from 0 to 200 ms was either run or counted as skipped, and the grid did not move.
    out = json.loads(mpy(PRELUDE + """
import time, micropython
s = Scheduler()
lp = s.add(lambda: None, 1000)
slow = s.add(lambda: None, 50)            # 20 ms waits: the sleep_ms path
t0 = lp.deadline
s.run(until=time.ticks_add(t0, 100000), spin_us=200)
micropython.heap_lock()                   # real sleeps allocate nothing either
s.run(until=time.ticks_add(t0, 200000))
micropython.heap_unlock()
st = lp.stats()
print(json.dumps([st["ticks"], st["skipped"], time.ticks_diff(lp.deadline, t0) % 1000,
                  st["jitter_min_us"] >= 0, slow.stats()["ticks"] + slow.stats()["skipped"]]))
"""))
    ticks, skipped, offgrid, nonneg, slow = out
    assert ticks + skipped == 201 and offgrid == 0 and nonneg and slow == 11


# --- overruns and the catch-up policy --------------------------------------------------------

OVERRUN = PRELUDE + """
def scenario(long_us, which=5):
    clk = VirtualClock(1000)
    s = Scheduler(clk)
    starts = []
    def tick():
        starts.append(clk.ticks_us())
        clk.sleep_us(long_us if len(starts) == which else 1000)
    lp = s.add(tick, 100)                     # period 10 ms
    s.run(until=clk.ticks_add(1000, 100000))  # deadlines 0..100 ms
    st = lp.stats()
    return [[t - 1000 for t in starts], st["overruns"], st["skipped"], st["ticks"],
            st["jitter_max_us"], st["compute_max_us"]]
print(json.dumps([scenario(25000), scenario(20000), scenario(10000), scenario(9999)]))
"""


def test_overrun_counted_missed_periods_skipped_never_burst(both):
    r25, r20, r10, r9 = both(OVERRUN)
    # 2.5 periods: the 5th tick (t=40 ms) ends at 65 ms: 50 and 60 ms are skipped, no burst
    assert r25 == [[0, 10000, 20000, 30000, 40000, 70000, 80000, 90000, 100000], 1, 2, 9, 0, 25000]
    # exactly 2 periods: ends at 60 ms; 50 ms skipped, 60 ms is due now and runs on time
    assert r20 == [[0, 10000, 20000, 30000, 40000, 60000, 70000, 80000, 90000, 100000], 1, 1, 10, 0, 20000]
    # exactly 1 period: ends on the next deadline, which still runs on time: no overrun
    assert r10[1:4] == [0, 0, 11] and r10[0] == list(range(0, 100001, 10000))
    assert r9[1:4] == [0, 0, 11]


def test_late_caller_runs_each_loop_once_and_skips_the_rest(both):
    # A caller that comes back 10.5 ms late (a GC pause, a blocking call) at a 1 kHz loop gets
    # one tick (for the 1 ms deadline, 9.5 ms late), nine skipped periods (2..10 ms) and the
    # loop back on its grid (11 ms).
    out = both(PRELUDE + """
clk = VirtualClock(0)
s = Scheduler(clk)
n = [0]
def tick():
    n[0] += 1
lp = s.add(tick, 1000)
s.run_once()                      # t=0: first tick
clk.sleep_us(10500)               # caller stalls
w = s.run_once()                  # t=10.5 ms
st = lp.stats()
print(json.dumps([n[0], st["overruns"], st["skipped"], st["jitter_max_us"], lp.deadline, w]))
""")
    assert out == [2, 1, 9, 9500, 11000, 500]


def test_timer_callback_with_early_window(both):
    # A periodic timer firing 30 us before each deadline (phase error): with early_us=50 every
    # call runs the loop (jitter -30); without it every call would come too early.
    out = both(PRELUDE + """
res = []
for early in (0, 50):
    clk = VirtualClock(0)
    s = Scheduler(clk, early_us=early)
    lp = s.add(lambda: None, 1000, phase_us=30)
    for i in range(1000):
        s.on_timer(None)          # what machine.Timer(callback=s.on_timer) would do
        clk.sleep_us(1000)
    st = lp.stats()
    res.append([st["ticks"], st["jitter_min_us"], st["jitter_max_us"]])
print(json.dumps(res))
""")
    assert out == [[999, 970, 970], [1000, -30, -30]]


# --- statistics ------------------------------------------------------------------------------

STATS = PRELUDE + """
import sys
class Jittery(VirtualClock):
    # sleep_us overshoots by a prescribed sequence of jitters
    def __init__(self, seq):
        VirtualClock.__init__(self, (1 << 30) - 50000000)
        self.seq = seq
        self.i = 0
    def sleep_us(self, us):
        if us > 0:
            VirtualClock.sleep_us(self, us + self.seq[self.i % len(self.seq)])
            self.i += 1

def run(seq, comp, n):
    clk = Jittery(seq)
    s = Scheduler(clk)
    k = [0]
    def tick():
        clk.t = clk.ticks_add(clk.t, comp[k[0] % len(comp)])
        k[0] += 1
    lp = s.add(tick, 100)            # period 10 ms: jitter + compute always fits
    while k[0] < n:
        clk.sleep_us(s.run_once())
    return lp.stats()
"""


def test_stats_uniform_jitter_min_mean_p99_max(both):
    out = both(STATS + """
st = run(list(range(1000)), [100, 200, 300, 400], 10000)
print(json.dumps(st))
""")
    # jitter: 0 (first tick) then 0..999 repeating: exact min/max/mean; p99 within a bucket
    assert out["ticks"] == 10000 and out["overruns"] == 0 and out["skipped"] == 0
    seq = [0] + [i % 1000 for i in range(9999)]
    assert out["jitter_min_us"] == 0 and out["jitter_max_us"] == 999
    assert out["jitter_mean_us"] == round(sum(seq) / len(seq))
    true_p99 = sorted(seq)[-(-len(seq) * 99 // 100) - 1]
    assert true_p99 <= out["jitter_p99_us"] <= true_p99 * 17 // 16
    assert out["compute_min_us"] == 100 and out["compute_max_us"] == 400
    assert out["compute_mean_us"] == 250
    assert out["period_us"] == 10000 and out["rate_hz"] == 100


def test_stats_skewed_distribution_p99_and_reset(both):
    # mostly 10-60 us with rare 2-4 ms spikes (a Wi-Fi burst): p99 must see the tail
    out = both(STATS + """
seq = []
x = 7
for i in range(5000):
    x = (x * 1103515245 + 12345) & 0x7fffffff
    seq.append(2000 + (x >> 4) % 2000 if (x >> 8) % 100 < 3 else 10 + (x >> 4) % 50)
st = run(seq, [50], 5001)
print(json.dumps([seq, st]))
""")
    seq, st = out
    samples = [0] + seq                                   # the first tick has no sleep before it
    samples = samples[:st["ticks"]]
    true_p99 = sorted(samples)[-(-len(samples) * 99 // 100) - 1]
    assert true_p99 <= st["jitter_p99_us"] <= true_p99 * 17 // 16
    assert st["jitter_max_us"] == max(samples) and st["jitter_min_us"] == min(samples)
    assert st["jitter_mean_us"] == round(sum(samples) / len(samples))

    after = both(PRELUDE + """
s = Scheduler(VirtualClock())
lp = s.add(lambda: None, 10, "x")
s.run_once()
s.reset_stats()
print(json.dumps(s.stats()))
""")
    assert after == {"x": {
        "name": "x", "rate_hz": 10, "period_us": 100000, "ticks": 0, "overruns": 0,
        "skipped": 0, "jitter_min_us": None, "jitter_max_us": None, "jitter_mean_us": None,
        "jitter_last_us": None, "jitter_p99_us": None, "compute_min_us": None,
        "compute_max_us": None, "compute_mean_us": None, "compute_last_us": None}}


def test_histogram_buckets_cover_the_range_at_1_16_resolution():
    # 1/16 of the value up to 2**21 us (two periods of a 1 Hz loop); the last bucket takes
    # everything above, up to the small-int limit
    prev_hi = -1
    last = sched._NBUCKETS - 1
    for i in range(sched._NBUCKETS):
        lo, hi = sched.bucket_bounds(i)
        assert lo == prev_hi + 1 and hi >= lo
        if i < last:
            assert hi - lo + 1 <= max(1, lo // 16)
        assert sched._bucket(lo) == i and sched._bucket(hi) == i
        prev_hi = hi
    assert sched.bucket_bounds(last)[0] == (31 << 16) and (1 << 21) - 1 < SMALL_MAX
    assert sched._bucket((1 << 21) - 1) == last and sched._bucket(1 << 21) == last
    assert sched._bucket((31 << 16) - 1) == last - 1
    assert prev_hi == SMALL_MAX
    assert sched._bucket(-5) == 0


def test_a_stall_beyond_the_histogram_is_reported_as_the_exact_max():
    lp = sched.Loop(lambda: None, 100, "l", 0)
    for _ in range(98):
        lp._record(10, 1)
    lp._record(3_000_000, 1)      # two ticks 3 s and 5 s late (after stalls)
    lp._record(5_000_000, 1)
    assert lp.jitter_percentile(99) == 5_000_000
    assert lp.jitter_percentile(50) == 10


# --- no allocation ---------------------------------------------------------------------------

def test_no_allocation_in_scheduler_iterations(mpy):
    out = mpy(PRELUDE + """
import micropython
start = (1 << 30) - 2000000
clk = VirtualClock(start)
s = Scheduler(clk)
class Ctl:
    def __init__(self):
        self.n = 0
    def tick(self):
        self.n += 1
        if self.n % 50 == 0:
            clk.sleep_us(25000)          # an overrun now and then: the skip path too
fast = s.add(lambda: None, 1000, "fast")
ctl = Ctl()
slow = s.add(ctl, 100, "slow")
for i in range(100):                     # warm up outside the lock
    clk.sleep_us(s.run_once())
fast._hist[0] = (1 << 29) - 5            # make the histogram halve while locked
until = clk.ticks_add(clk.ticks_us(), 3000000)
micropython.heap_lock()
try:
    for i in range(5000):                # run_once + sleep, as a real-time driver would
        clk.sleep_us(s.run_once())
    for i in range(2000):                # as a timer callback would
        s.on_timer(None)
        clk.sleep_us(1000)
    s.run(until=until)                   # run() itself
    clk.sleep_us((1 << 28) + 1000)       # a stall: the resync path in _run
    s.run_once()
    clk.sleep_us((1 << 29) + 1000)       # a stall past half the ticks period: run_once resyncs
    s.run_once()
    s.early_us = 50                      # the early window
    for i in range(1000):
        s.on_timer(None)
        clk.sleep_us(990)
    r = "ok"
except MemoryError:
    r = "allocated"
micropython.heap_unlock()
st = s.stats()
print(json.dumps([r, st["fast"]["ticks"], st["slow"]["overruns"], fast._hist[0] < (1 << 28) + 20000]))
""")
    r, ticks, overruns, halved = json.loads(out)
    assert r == "ok" and ticks > 5000 and overruns > 10 and halved


# --- small-int bounds ------------------------------------------------------------------------

# MicroPython does not export const names starting with "_": pass the slot numbers in
BOUNDS = PRELUDE + f"""
_N, _JSUM = {sched._N}, {sched._JSUM}
def bounded(lp, clk):
    vals = list(lp._st) + list(lp._hist) + [lp.deadline, lp.period_us, clk.t]
    return all(-(1 << 30) <= v <= (1 << 30) - 1 for v in vals)
"""


def test_small_int_bounds_of_accumulators_after_long_runs(mpy):
    # Fast path: 2*10**6 statistics updates with the largest values a 1 Hz loop can sustain
    # (jitter and compute just under a period each tick: the sums are bounded by elapsed
    # time), checked for bounds along the way and for exact totals at the end.
    out = json.loads(mpy(BOUNDS + """
clk = VirtualClock()
s = Scheduler(clk)
lp = s.add(lambda: None, 1)
rec = lp._record
ok = True
n = 2000000
for i in range(n // 1000):
    for j in range(1000):
        rec(999999, 999999)
    ok = ok and bounded(lp, clk)
st = lp.stats()
print(json.dumps([ok, st["ticks"], st["jitter_mean_us"], st["compute_mean_us"],
                  lp._st[_JSUM + 1], lp._st[_JSUM]]))
"""))
    ok, ticks, jmean, cmean, hi, lo = out
    assert ok and ticks == 2_000_000 and jmean == cmean == 999_999
    assert hi * (1 << 29) + lo == 999_999 * 2_000_000

    # Analytic extrapolation: a high word grows by one per 2**29 us of summed jitter or
    # compute, and those sums never exceed elapsed time (a tick's jitter is less than the time
    # since the loop's previous start). So 10**7 ticks at 1 Hz (116 days) leave the high word
    # near 18,600, and even 100 years of running stay below 1 % of the limit; the tick,
    # overrun and skip counters grow by at most 1000 per second (1 kHz), slower still.
    century_us = 100 * 365 * 86400 * 10**6
    assert 10**7 * 999_999 // (1 << 29) == 18_626
    assert century_us // (1 << 29) < SMALL_MAX // 100
    assert 1000 * century_us // 10**6 // (1 << 29) < SMALL_MAX // 100


def test_seeded_counters_near_limits_carry_and_saturate(mpy):
    # Counters seeded as if the node had run for ages: carries, saturation and readout work
    # and every slot stays a small int.
    out = json.loads(mpy(BOUNDS + """
clk = VirtualClock()
s = Scheduler(clk)
lp = s.add(lambda: None, 1000)
st = lp._st
st[_N] = (1 << 29) - 1; st[_N + 1] = 18626              # 10**13 ticks minus a few
st[_JSUM] = (1 << 29) - 1; st[_JSUM + 1] = (1 << 30) - 2  # almost saturated
for i in range(3):
    lp._record(1000, 5)
lp._hist[0] = (1 << 29) - 1
lp._record(0, 5)                       # this bucket reaches 2**29: all buckets halve
print(json.dumps([bounded(lp, clk), lp.stats()["ticks"], st[_JSUM + 1], lp._hist[0]]))
"""))
    ok, ticks, jhi, h0 = out
    assert ok
    assert ticks == 18627 * (1 << 29) + 3
    assert jhi == SMALL_MAX                   # saturated instead of overflowing
    assert h0 == (1 << 28)


def test_every_int_in_the_tick_path_is_a_small_int():
    # CPython trace of a run with wrap, overruns, skips, a stall and extreme values: every int
    # local, argument, return value and attribute in sched.py's tick path stays in ESP32's
    # 31-bit small-int range (the Unix port's 63-bit ints would hide an overflow).
    tick_path = {"_bucket", "_acc", "ticks_us", "ticks_add", "ticks_diff", "sleep_us",
                 "_run", "_record", "run_once", "on_timer", "run", "_wait"}
    bad = []

    def check(where, v):
        if isinstance(v, int) and not isinstance(v, bool) and not SMALL_MIN <= v <= SMALL_MAX:
            bad.append((where, v))

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != sched.__file__ or frame.f_code.co_name not in tick_path:
            return None

        def local(frame, event, arg):
            for k, v in frame.f_locals.items():
                check(f"{frame.f_code.co_name}.{k}", v)
                if k == "self" and not isinstance(v, sched.Scheduler):
                    for a, av in vars(v).items():
                        check(f"{frame.f_code.co_name}.self.{a}", av)
            if event == "return":
                check(f"{frame.f_code.co_name} returned", arg)
            return local
        return local

    clk = sched.VirtualClock(WRAP - 3_000_000)
    s = sched.Scheduler(clk, early_us=20)
    count = [0]

    def heavy():
        count[0] += 1
        if count[0] % 97 == 0:
            clk.sleep_us(35_000)                 # overruns and skips

    a = s.add(heavy, 1000, "a")
    s.add(lambda: clk.sleep_us(300), 7, "b")
    a._st[sched._JSUM] = (1 << 29) - 1
    a._st[sched._JSUM + 1] = SMALL_MAX - 1
    sys.settrace(tracer)
    try:
        s.run(until=clk.ticks_add(clk.ticks_us(), 6_000_000))   # across the wrap
        clk.sleep_us((1 << 28) + 12345)          # a stall past _STALL_US: resync in _run
        s.run_once()
        clk.sleep_us((1 << 29) + 5000)           # past half the ticks period: deadlines look
        s.run_once()                             # far ahead; run_once resyncs
        s.run(until=clk.ticks_add(clk.ticks_us(), 100_000))
        a._record((1 << 29) - 1, (1 << 29) - 1)
        for lp in s.loops:
            lp._record(-20, 0)
    finally:
        sys.settrace(None)
    assert count[0] > 1000 and not bad, bad[:5]
    st = a.stats()
    assert st["overruns"] > 10 and st["skipped"] > 100
    assert st["jitter_last_us"] == -20 and s.loops[0].deadline == a.deadline


def test_virtual_clock_matches_reference_ticks_arithmetic():
    from hypothesis import given, strategies as stn

    clk = sched.VirtualClock()

    @given(stn.integers(0, WRAP - 1), stn.integers(-(1 << 29) + 1, (1 << 29) - 1),
           stn.integers(0, WRAP - 1))
    def check(t, d, u):
        assert clk.ticks_add(t, d) == (t + d) % WRAP
        ref = (t - u) % WRAP
        assert clk.ticks_diff(t, u) == (ref - WRAP if ref >= WRAP // 2 else ref)
        assert clk.ticks_diff(clk.ticks_add(t, d), t) == d

    check()
    with pytest.raises(OverflowError):
        clk.ticks_add(0, 1 << 29)
