# The sim board's clock and timers: ESP32's `time` ticks and `machine.Timer`.
#
# Ticks: ESP32 counts from boot and wraps at 2**30 (MicroPython's ticks period on 32-bit
# ports), so ticks_us wraps every ~17.9 minutes. The Unix port's ticks wrap at 2**62 and
# would hide wrap-around bugs; here they wrap as on the chip. `ticks_start=` (boot
# argument) starts the counter elsewhere, e.g. just before the wrap, to flush out bugs.
#
# Timers: ESP32 timer callbacks are "soft". The timer's ISR only calls mp_sched_schedule()
# (ports/esp32/machine_timer.c, machine_timer_handler), and the VM runs the callback at the
# next jump of whatever bytecode the main thread executes, or while it waits; callbacks
# never nest; the schedule queue holds MICROPY_SCHEDULER_DEPTH = 8 entries
# (ports/esp32/mpconfigport.h) and a fire that finds it full is lost (mp_sched_schedule
# returns false). The sim does the same in real time: a second thread plays the timer
# hardware (it only touches preallocated int arrays), queues each fire in an 8-entry ring
# (full: dropped and counted) and calls micropython.schedule(), so the callbacks run
# between bytecodes of busy main-thread code, and back to back when several are late.
# While the node waits (REPL input, sleeps), the waits end at the next deadline so the
# callbacks also run on time there. Draining the ring allocates nothing, so it is safe
# under micropython.heap_lock(), as on the chip (a callback then runs with the heap locked).
#
# Virtual time (boot argument time=virtual): the clock only moves while the node sleeps
# (time.sleep*, machine.idle/lightsleep). A sleep jumps from one timer deadline to the
# next at once, stepping the plant and running callbacks on the way, so ten minutes of
# a 1 kHz loop take seconds and give the same result on every run. The REPL waiting for
# input does not move virtual time.
import gc
import time as _t
import micropython
from array import array
from micropython import const

try:
    import _thread
except ImportError:  # a Unix port built without threads: timers run only in waits
    _thread = None

_PERIOD = const(1 << 30)
_MASK = const((1 << 30) - 1)
_HALF = const(1 << 29)
_MAX_TIMERS = const(4)  # ESP32 has four hardware timer channels: Timer(0)..Timer(3)
_DEPTH = const(8)  # ESP32's MICROPY_SCHEDULER_DEPTH (ports/esp32/mpconfigport.h)
_QMASK = const(0xFFFF)
_STALL_SRC_MAX_US = const(500)  # --speed chip: a callback's host time counted at most (x slowdown)
_ISR_IDLE_US = const(2000)  # the timer thread looks for newly armed timers this often
# indices into Clock._q (written by one side each: no locks needed)
_HEAD = const(0)  # fires queued (timer thread)
_TAIL = const(1)  # fires taken (main thread)
_DROPPED = const(2)  # fires lost to a full queue (timer thread)
_FIRED = const(3)  # fires queued in all (timer thread)


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


current = None  # the board's clock (tests read its stats(): `import _clock`)


class Clock:
    def __init__(self, ticks_start=0, virtual=False):
        global current
        current = self
        self.virtual = virtual
        # offset so that ticks_us() is ticks_start right now
        self._us0 = _t.ticks_us() - ticks_start
        self._vnow = ticks_start  # virtual time, microseconds since "boot" (not wrapped)
        self._timers = [None] * _MAX_TIMERS
        self.n_timers = _MAX_TIMERS  # the chip's hardware timers (the board sets it)
        self._busy = False  # a callback is running: no nested servicing
        # Shared with the timer thread: ints in arrays, each slot written by one side.
        # ('i', not 'q': reading a 'q' item allocates a long int on this port)
        self._dl = array("i", [0] * _MAX_TIMERS)  # deadline, in ticks_us (wraps at 2**30)
        self._per = array("i", [0] * _MAX_TIMERS)  # period us (0: one-shot)
        self._armed = bytearray(_MAX_TIMERS)  # main arms; the thread disarms a one-shot
        self._ring = [None] * _DEPTH  # the Timer of each queued fire (as mp_sched_schedule
        # keeps the callback: a fire queued before deinit() still runs)
        self._q = array("i", [0, 0, 0, 0])  # _HEAD, _TAIL, _DROPPED, _FIRED
        self._isr = False  # the timer thread runs
        # > 0 while the ROM does what a board does in one C function (console I/O, _link.py):
        # a soft callback never runs inside one there, so none runs inside one here either
        self.hold = 0
        self._dispatch_cb = self._dispatch  # bound once: scheduling it allocates nothing
        # micropython.schedule() of user code: the same 8-deep queue as the timer's fires
        # (on ESP32 both go through mp_sched_schedule), main-thread only
        self._uf = [None] * _DEPTH  # callables
        self._ua = [None] * _DEPTH  # their arguments
        self._uq = array("i", [0, 0])  # head, tail
        self.report_scheduled = None  # prints an exception a scheduled callback raised
        # The speed model (host/cyphy/sim/speed.py): how many times slower the chip runs
        # MicroPython (x1000, 0: unknown) and whether soft callbacks take the chip's time.
        self.scale_x1000 = 0
        self.slow = False
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
        if not 0 <= timer.id < self.n_timers:  # machine_timer.c's words
            raise ValueError("Timer(%d) doesn't exist, there are only %d hardware timers"
                             % (timer.id, self.n_timers))
        i = timer.id
        self._armed[i] = 0
        self._timers[i] = timer
        self._dl[i] = (self._now_us() + timer.period_us) & _MASK
        self._per[i] = timer.period_us if timer.mode == Timer.PERIODIC else 0
        self._armed[i] = 1
        if not self.virtual and not self._isr and _thread is not None:
            self._isr = True
            _thread.start_new_thread(self._isr_main, ())

    def remove(self, timer):
        i = timer.id  # any Timer object of that channel stops it, as on ESP32
        if 0 <= i < _MAX_TIMERS:
            self._armed[i] = 0
            self._timers[i] = None

    def remaining_us(self, timer):
        return self.ticks_diff(self._dl[timer.id], self.ticks_us())

    def stats(self):
        """(fires queued, fires dropped because the 8-entry queue was full)."""
        return self._q[_FIRED], self._q[_DROPPED]

    # ---- the timer hardware (real time): its own thread ----
    def _isr_main(self):
        while True:
            try:
                self._isr_loop()
            except BaseException:  # noqa: B036 - a stray signal must not stop the timers
                pass

    def _isr_loop(self):
        # Runs beside the main thread with no GIL: it touches only the arrays above and
        # calls micropython.schedule(), which is safe from another thread. No allocation.
        dl = self._dl
        per = self._per
        armed = self._armed
        sched = micropython.schedule
        cb = self._dispatch_cb
        us0 = self._us0
        while True:
            now = (_t.ticks_us() - us0) & _MASK
            wait = _ISR_IDLE_US
            i = 0
            while i < _MAX_TIMERS:
                if armed[i]:
                    late = ((now - dl[i] + _HALF) & _MASK) - _HALF
                    if late >= 0:
                        self._queue(i)
                        try:
                            sched(cb, None)
                        except RuntimeError:
                            pass  # the port's own queue is full: a queued dispatch drains ours
                        p = per[i]
                        if p:
                            # the alarm reloads in hardware: one fire per wake, missed
                            # periods are not replayed
                            late = late % p - p
                            dl[i] = (now - late) & _MASK
                        else:
                            armed[i] = 0
                            i += 1
                            continue
                    if -late < wait:
                        wait = -late
                i += 1
            if wait > 0:
                _t.sleep_us(wait)

    def _queue(self, i):
        q = self._q
        h = q[_HEAD]
        if (h - q[_TAIL]) & _QMASK >= _DEPTH:
            q[_DROPPED] += 1
            return
        self._ring[h % _DEPTH] = self._timers[i]
        q[_FIRED] += 1
        q[_HEAD] = (h + 1) & _QMASK

    def _dispatch(self, _arg=None):
        """The scheduled side (main thread): run every queued fire, back to back."""
        if self.hold:
            return  # inside a "C function" of the ROM: unlock() runs them
        self._run()

    def unlock(self):
        """The end of a ROM section that a board does in C: fires queued meanwhile run now,
        as they would right after that function returned."""
        self.hold -= 1
        if not self.hold and (self._q[_TAIL] != self._q[_HEAD] or self._uq[0] != self._uq[1]):
            self._run()

    def _run(self):
        if self._busy:
            return  # callbacks never nest; the running dispatch takes the rest
        self._busy = True
        try:
            if self.hardware is not None:
                self.hardware.advance()
            if self.watchdog is not None:
                self.watchdog.check()
            self._drain()
            self._drain_user()
        finally:
            self._busy = False

    def schedule(self, fn, arg):
        """micropython.schedule(): queue fn(arg) to run as a soft callback, between
        bytecodes of the main thread (RuntimeError when the 8-entry queue is full)."""
        uq = self._uq
        n = ((uq[0] - uq[1]) & _QMASK) + ((self._q[_HEAD] - self._q[_TAIL]) & _QMASK)
        if n >= _DEPTH:
            raise RuntimeError("schedule queue full")  # modmicropython.c's words
        h = uq[0]
        self._uf[h % _DEPTH] = fn
        self._ua[h % _DEPTH] = arg
        uq[0] = (h + 1) & _QMASK
        try:
            micropython.schedule(self._dispatch_cb, None)
        except RuntimeError:
            pass  # the port's own queue is full: a dispatch already queued runs ours

    def _drain_user(self):
        uq = self._uq
        h = uq[0]
        while uq[1] != h:
            t = uq[1]
            fn = self._uf[t % _DEPTH]
            arg = self._ua[t % _DEPTH]
            self._uf[t % _DEPTH] = self._ua[t % _DEPTH] = None
            uq[1] = (t + 1) & _QMASK
            t0 = _t.ticks_us()
            try:
                fn(arg)
            except BaseException as e:  # noqa: B036 - as mp_call_function_1_protected
                if self.report_scheduled is not None:
                    self.report_scheduled(e)
            self._stall(t0)

    def _stall(self, t0):
        # --speed chip: the callback took (scale - 1) times longer on the chip. d is wall
        # time, so a host that preempted the node inflates it: capped, so that one
        # preemption does not turn into seconds of stall.
        if self.slow:
            d = _t.ticks_us() - t0
            if d > _STALL_SRC_MAX_US:
                d = _STALL_SRC_MAX_US
            end = _t.ticks_us() + d * (self.scale_x1000 - 1000) // 1000
            while _t.ticks_us() < end:
                pass

    def _drain(self):
        # Only the fires queued before it began, as ESP32's scheduler runs one callback per
        # pending check: the code that was interrupted makes progress between them.
        q = self._q
        h = q[_HEAD]
        while q[_TAIL] != h:
            t = q[_TAIL]
            tm = self._ring[t % _DEPTH]
            self._ring[t % _DEPTH] = None
            q[_TAIL] = (t + 1) & _QMASK
            if tm is not None:
                t0 = _t.ticks_us()
                tm.fire(self)
                self._stall(t0)

    def due_in_us(self):
        """Microseconds until the next timer is due (-1: none armed, or virtual time,
        where only sleeps move the clock)."""
        if self.virtual:
            return -1
        return self._next_due_us()

    def _next_due_us(self):
        if self._q[_TAIL] != self._q[_HEAD] or self._uq[0] != self._uq[1]:
            return 0  # callbacks are waiting to run
        now = self.ticks_us()
        best = -1
        i = 0
        while i < _MAX_TIMERS:
            if self._armed[i]:
                d = self.ticks_diff(self._dl[i], now)
                if d < 0:
                    d = 0
                if best < 0 or d < best:
                    best = d
            i += 1
        return best

    def service(self):
        """Run every timer callback that is due (soft-timer semantics)."""
        if self.virtual or not self._isr:
            self._fire_due()  # virtual time: this thread plays the hardware itself
        self._run()  # a wait is a safe point, even inside a held section (as
        # MICROPY_EVENT_POLL_HOOK runs callbacks inside a board's blocking reads)

    def _fire_due(self):
        now = self.ticks_us()
        i = 0
        while i < _MAX_TIMERS:
            late = self.ticks_diff(now, self._dl[i])
            if self._armed[i] and late >= 0:
                p = self._per[i]
                if p:
                    late = late % p - p  # missed periods are skipped, never burst
                    self._dl[i] = (now - late) & _MASK
                else:
                    self._armed[i] = 0
                self._queue(i)
            i += 1

    def busy_us(self, us):
        """The CPU is busy for us microseconds inside one C function (a bus transaction):
        time passes and timers fall due, but no soft callback runs until the next safe
        point (a sleep, or the VM between two calls)."""
        if self.virtual:
            self._vnow += us
            self._fire_due()            # queued, not run: they run at the next safe point
            return
        end = _t.ticks_us() + us
        while _t.ticks_us() < end:
            pass

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
                left = nxt if nxt > 0 else 50  # the timer thread is about to queue it
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
        if not 0 <= id < clock.n_timers:  # checked when made, as machine_timer_create does
            raise ValueError("Timer(%d) doesn't exist, there are only %d hardware timers"
                             % (id, clock.n_timers))
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
        self._clock.add(self)

    def deinit(self):
        self._clock.remove(self)

    def value(self):
        return self._clock.remaining_us(self) // 1000

    def fire(self, clock):
        i = self.id
        if self.mode != Timer.PERIODIC and clock._timers[i] is self and not clock._armed[i]:
            clock._timers[i] = None  # a one-shot is done (unless it was armed again)
        cb = self.callback
        if cb is not None:
            try:
                cb(self)
            except Exception as e:  # noqa: BLE001 - as ESP32: report, keep the node alive
                self._report(e)
