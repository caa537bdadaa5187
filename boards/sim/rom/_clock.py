# The sim board's clock and timers: ESP32's `time` ticks and `machine.Timer`.
#
# Ticks: ESP32 counts from boot and wraps at 2**30 (MicroPython's ticks period on 32-bit
# ports), so ticks_us wraps every ~17.9 minutes. The Unix port's ticks wrap at 2**62 and
# would hide wrap-around bugs; here they wrap as on the chip. `ticks_start=` (boot
# argument) starts the counter elsewhere, e.g. just before the wrap, to flush out bugs.
#
# Timers: ESP32 timer callbacks are "soft": the interrupt only schedules them and they run
# between bytecodes of whatever Python code is running. The sim runs them whenever the
# node waits: while the REPL waits for input, in time.sleep*(), machine.idle() and
# lightsleep(). Busy user code without sleeps holds them off (ESP32 would run them).
# Servicing allocates nothing, so it is safe under micropython.heap_lock().
#
# Virtual time (boot argument time=virtual): the clock only moves while the node sleeps
# (time.sleep*, machine.idle/lightsleep). A sleep jumps from one timer deadline to the
# next at once, stepping the plant and running callbacks on the way, so ten minutes of
# a 1 kHz loop take seconds and give the same result on every run. The REPL waiting for
# input does not move virtual time.
import gc
import time as _t
import micropython
from micropython import const

_PERIOD = const(1 << 30)
_MASK = const((1 << 30) - 1)
_HALF = const(1 << 29)
_MAX_TIMERS = const(4)  # ESP32 has four hardware timer channels: Timer(0)..Timer(3)


def repair_heap():
    """Unlock the heap if user code, or a Ctrl-C landing inside the allocator or the
    collector, left it locked. The Unix port raises KeyboardInterrupt from its signal
    handler wherever the process is (ESP32 raises it between bytecodes), so this undoes
    what that can break; ESP32's REPL also forces the lock off."""
    for _ in range(64):
        try:
            bytearray(8)
            return
        except MemoryError:
            pass
        # An interrupted collection leaves its "collecting" flag set; a full collection
        # clears it. A lock left by heap_lock() needs heap_unlock().
        gc.collect()
        try:
            bytearray(8)
            return
        except MemoryError:
            if micropython.heap_unlock() == 32767:  # it was not locked: a real OOM
                micropython.heap_lock()
                return


class Clock:
    def __init__(self, ticks_start=0, virtual=False):
        self.virtual = virtual
        # offset so that ticks_us() is ticks_start right now
        self._us0 = _t.ticks_us() - ticks_start
        self._vnow = ticks_start  # virtual time, microseconds since "boot" (not wrapped)
        self._timers = [None] * _MAX_TIMERS
        self._busy = False  # a callback is running: no nested servicing
        self.hardware = None  # object with advance(): the plant, stepped before timers run
        self.watchdog = None  # object with check(): may reset the node
        self.waiter = None  # real-time sleeps call waiter(us) instead of sleeping blindly

    # ---- ticks, as on a 32-bit port ----
    def _now_us(self):
        if self.virtual:
            return self._vnow
        return _t.ticks_us() - self._us0

    def now_us(self):
        """Microseconds since power-on, never wrapping (the board's own bookkeeping)."""
        return self._now_us()

    def ticks_us(self):
        return self._now_us() & _MASK

    def ticks_ms(self):
        return (self._now_us() // 1000) & _MASK

    def ticks_cpu(self):
        return self.ticks_us()

    @staticmethod
    def ticks_add(t, delta):
        return (t + delta) & _MASK

    @staticmethod
    def ticks_diff(a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    # ---- timers ----
    def add(self, timer):
        """Arm timer on its channel: Timer(id) names a hardware channel (0-3), so a new
        object with the same id replaces the old one, as on ESP32."""
        if not 0 <= timer.id < _MAX_TIMERS:
            raise ValueError("timer id must be 0-%d" % (_MAX_TIMERS - 1))
        self._timers[timer.id] = timer

    def remove(self, timer):
        if 0 <= timer.id < _MAX_TIMERS and self._timers[timer.id] is not None:
            if self._timers[timer.id].id == timer.id:
                self._timers[timer.id] = None

    def due_in_us(self):
        """Microseconds until the next timer is due (-1: none armed, or virtual time,
        where only sleeps move the clock)."""
        if self.virtual:
            return -1
        return self._next_due_us()

    def _next_due_us(self):
        now = self.ticks_us()
        best = -1
        for i in range(_MAX_TIMERS):
            tm = self._timers[i]
            if tm is not None:
                d = self.ticks_diff(tm.deadline, now)
                if d < 0:
                    d = 0
                if best < 0 or d < best:
                    best = d
        return best

    def service(self):
        """Run every timer callback that is due (soft-timer semantics)."""
        if self._busy:
            return
        self._busy = True
        try:
            if self.hardware is not None:
                self.hardware.advance()
            if self.watchdog is not None:
                self.watchdog.check()
            for i in range(_MAX_TIMERS):
                tm = self._timers[i]
                if tm is not None and self.ticks_diff(self.ticks_us(), tm.deadline) >= 0:
                    tm.fire(self)
        finally:
            self._busy = False

    def sleep_us(self, us):
        """Sleep, running due timers meanwhile (as ESP32's scheduler does)."""
        try:
            self._sleep(us)
        except KeyboardInterrupt:
            # Ctrl-C while sleeping is normal; but here it may have landed inside the
            # plant's arithmetic, i.e. inside the allocator: heal before user code goes on.
            repair_heap()
            raise

    def _sleep(self, us):
        if self.virtual:
            self._sleep_virtual(us)
            return
        end = self.ticks_add(self.ticks_us(), us)
        while True:
            self.service()
            left = self.ticks_diff(end, self.ticks_us())
            if left <= 0:
                return
            nxt = self.due_in_us()
            if 0 <= nxt < left:
                left = nxt
            if self.waiter is not None:
                self.waiter(left)  # the link: serves test-equipment requests meanwhile
            else:
                _t.sleep_us(left)


    def _sleep_virtual(self, us):
        end = self._vnow + us
        while True:
            self.service()
            if self._vnow >= end:
                return
            nxt = self._next_due_us()
            step = end - self._vnow
            if 0 <= nxt < step:
                step = nxt if nxt > 0 else 1
            self._vnow += step


class Timer:
    """machine.Timer for the sim: soft callbacks, ONE_SHOT or PERIODIC (ms resolution
    as on ESP32, or `period_us=` for finer periods on the sim)."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, clock, report, id=0, **kw):
        self._clock = clock
        self._report = report  # prints a callback's exception without stopping the node
        self.id = id
        self.deadline = 0
        self.period_us = 0
        self.mode = Timer.PERIODIC
        self.callback = None
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=-1, freq=-1, callback=None, period_us=-1, hard=False):
        if hard:
            raise ValueError("hard timers are not supported on ESP32; use hard=False")
        if freq > 0:
            period_us = 1_000_000 // freq
        elif period >= 0:
            period_us = period * 1000
        if period_us <= 0:
            raise ValueError("timer needs period=ms (or freq=Hz) greater than 0")
        self.mode = mode
        self.period_us = period_us
        self.callback = callback
        self.deadline = self._clock.ticks_add(self._clock.ticks_us(), period_us)
        self._clock.add(self)

    def deinit(self):
        self._clock.remove(self)

    def value(self):
        return self._clock.ticks_diff(self.deadline, self._clock.ticks_us()) // 1000

    def fire(self, clock):
        if self.mode == Timer.PERIODIC:
            # next deadline on the period grid; missed periods are skipped, never burst
            nxt = clock.ticks_add(self.deadline, self.period_us)
            now = clock.ticks_us()
            while clock.ticks_diff(nxt, now) <= 0:
                nxt = clock.ticks_add(nxt, self.period_us)
            self.deadline = nxt
        else:
            clock.remove(self)
        cb = self.callback
        if cb is not None:
            try:
                cb(self)
            except Exception as e:  # noqa: BLE001 - as ESP32: report, keep the node alive
                self._report(e)
