# The node runtime: IO channels and control loops from the config, run on the scheduler,
# with the safety layer (fail-safe outputs, watchdog, fault records). docs/firmware.md,
# "Runtime and safety".
#
# The tick (ControlLoop.tick) allocates nothing: ints in milli-units, preallocated state,
# small methods (MicroPython heap-allocates the frame of a function needing more than 11
# words of locals + stack). Everything else here (construction, REPL API, fault flush) may
# allocate.
#
# Contexts and owners (docs/firmware.md, "Who owns what"). In the background (start()) two
# soft callbacks do all the work: the timer's control pass (only control: ticks, telemetry
# sampling into preallocated buffers, fault records into preallocated arrays, the watchdog)
# and the service (micropython.schedule()d after a pass, or by serve(): protocol I/O, fault
# log flush, autotune results, reboot). MicroPython runs soft callbacks one at a time,
# never one inside another (py/scheduler.c), so everything they share has one owner: the
# soft context. The main thread (REPL, node.serve()) may be interrupted by them between any
# two bytecodes, so it changes nothing they own: its requests run in the soft context
# through soft_call(), and serve() hands received frames to the service one at a time.
import gc
import sys
import time

try:
    from micropython import schedule as _schedule
except ImportError:  # CPython (host-side tests): no scheduler, call at once
    def _schedule(fn, arg):
        fn(arg)

from .io import Input, Output
from .sched import Scheduler
from .blocks import LowPass, OnOff, Alarm
from .pid import PID, CLAMP, CONDITIONAL
from .fixed import to_fixed
from . import faults as _f

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# fault bits of a loop
F_SENSOR = const(1)
F_EXC = const(2)        # latched until clear()
F_COMMS = const(4)
F_STOP = const(8)       # node stopped / interrupted
F_PEER = const(16)      # held safe because another loop has a sensor or exception fault
_OWN = const(3)         # F_SENSOR | F_EXC: the faults that take the whole node safe

_OUT_KINDS = ("pwm", "dac", "dout")
_IN_KINDS = ("adc", "din")


class ControlLoop:
    """sensor -> optional low-pass -> PID or on/off -> actuator, alarms; one per config loop."""

    # where each value in force came from (params.py): src[i] indexes SOURCES
    SRC_KEYS = ("setpoint", "kp", "ki", "kd")
    SOURCES = ("config", "tune", "saved", "runtime")

    def __init__(self, idx, lc, inp, act, log):
        self.idx = idx
        self.name = lc.name
        self.rate_hz = lc.rate_hz
        self.inp = inp
        self.act = act
        self.log = log
        self.period_us = (1000000 + lc.rate_hz // 2) // lc.rate_hz
        dt = self.period_us / 1000000
        self.filt = LowPass(tau=lc.filter.tau_s, dt=dt) if lc.filter is not None else None
        c = lc.controller
        self.cfg_sp = c.setpoint     # the config's setpoint (params.forget returns to it)
        self.src = bytearray(4)      # SRC_KEYS' sources: all "config" at first
        self.pid = None
        self.onoff = None
        if c.type == "pid":
            self.pid = PID(c.kp, c.ki, c.kd, dt, out_min=c.out_min, out_max=c.out_max,
                           setpoint=c.setpoint, reverse=c.direction == "reverse",
                           p_on_m=c.p_on == "measurement", d_on_error=c.d_on == "error",
                           d_filter=c.d_filter_tau_s, sp_rate=c.ramp_per_s or 0.0,
                           anti_windup=CLAMP if c.anti_windup == "clamp" else CONDITIONAL,
                           deadband=c.deadband or None, avg=c.out_avg)
            # the config's tuning, what forget_tuning() returns to: kp, ki, kd, d_filter, p_on_m
            self.cfg_tuning = (c.kp, c.ki, c.kd, c.d_filter_tau_s, c.p_on == "measurement")
        else:
            h = c.hysteresis / 2
            self.onoff = OnOff(c.setpoint, h, h, c.direction == "reverse",
                               on=act.hi / 1000, off=act.lo / 1000)
        a = lc.alarms
        self.alarm = None if a is None else Alarm(a.high, a.low, a.hysteresis)
        self.alarms = 0          # active alarm bits (blocks.LOW = 1, HIGH = 2)
        self.y = 0               # measurement after the filter, milli-units
        self.u = act.failsafe    # last output written, milli-units
        self.fault = 0           # F_* bits
        self.busy = 0            # 1 while a tick runs (set when it raised)
        self.ran = 0             # set by every tick; the node clears it when it feeds the WDT
        self.ticks = 0
        self.last_exc = None
        self.auto = True         # the operator's mode (a fault overrides it)
        self.manual_out = act.failsafe
        self._held = False       # outputs held at fail-safe by a fault
        self.links = 0           # 1: the signal graph feeds this loop (graph.LinkedLoop)
        self.tuner = None        # a RelayTune while an autotune runs (it drives the output)
        self.tune_owner = None   # (port, addr) of the host that started it over the protocol
        self.tune_result = None  # the last run's result (applied or not) since boot

    # ---- the tick (allocation-free) ----

    def tick(self):
        # No try block here: it would grow the frame past the 11 words MicroPython keeps on
        # the C stack (a bigger frame is heap-allocated on every call). An exception leaves
        # `busy` set and propagates through the scheduler to Node._pass, which latches it.
        self.ran = 1
        self.busy = 1
        if self.fault & F_EXC:
            self._hold()
        else:
            self._step()
        self.busy = 0

    def _step(self):
        self.ticks += 1
        self._read()
        self._control()

    def _read(self):
        y = self.inp.read()
        if self.inp.ok(y):
            if self.fault & F_SENSOR:
                self.fault &= ~F_SENSOR
            if self.filt is not None:
                y = self.filt.update(y)
            self.y = y
            if self.alarm is not None:
                self.alarms = self.alarm.check(y)
        elif not self.fault & F_SENSOR:
            self.fault |= F_SENSOR
            self.log.record(self.idx, _f.SENSOR, y)

    def _control(self):
        if self.fault:
            self._hold()
            return
        if self._held:
            self._release()
            return
        if self.tuner is not None:
            u = self.tuner.update(self.y)
            self.pid.update(self.y)     # manual: it tracks the measurement...
            self.pid.track(u)           # ...and the relay's output: a bumpless hand-over
        elif self.pid is not None:
            if self.links:
                self._links()
            u = self.pid.update(self.y)
        else:
            if self.links:
                self._links()
            u = self.onoff.update(self.y)
        self.u = u
        self.act.write(u)

    def _hold(self):
        # Outputs at fail-safe; the PID tracks a valid measurement in manual (bumpless return).
        if not self._held:
            self._held = True
            if self.pid is not None:
                self.pid.set_manual(self.act.failsafe)
            if self.filt is not None and self.fault & F_SENSOR:
                self.filt.reset()
        if self.pid is not None and not self.fault & F_SENSOR:
            self.pid.update(self.y)
        self.u = self.act.failsafe
        self.act.write(self.u)

    def _release(self):
        # The fault has cleared: track this sample, hold fail-safe one more period, then
        # resume in the operator's mode from the held output (bumpless).
        if self.pid is not None:
            self.pid.update(self.y)
            if self.auto:
                self.pid.set_auto()
            else:
                self.pid.set_manual(self.manual_out)
        self._held = False
        self.act.write(self.u)

    def _exc(self, e):
        self.last_exc = e
        if not self.fault & F_EXC:
            self.fault |= F_EXC
            self.log.record(self.idx, _f.EXCEPTION, 0)
        self.safe()

    def peer(self, bad):
        # Another loop's sensor or exception fault holds this one at fail-safe too: every
        # output goes safe (docs/firmware.md, "Runtime and safety"). Cleared, the loop
        # resumes bumplessly like any fault.
        if bad and not self.fault & _OWN:
            if not self.fault & F_PEER:
                self.fault |= F_PEER
                self.safe()
        elif self.fault & F_PEER and not bad:
            self.fault &= ~F_PEER

    def safe(self):
        """Actuator to its fail-safe value now (allocation-free)."""
        self.u = self.act.failsafe
        self.act.write(self.u)
        if self.pid is not None and not self._held:
            self.pid.set_manual(self.u)
        self._held = True

    # ---- REPL API (allocates) ----

    @property
    def setpoint(self):
        c = self.pid or self.onoff
        return c.setpoint / 1000

    @setpoint.setter
    def setpoint(self, v):
        self._set1("setpoint", v)

    @property
    def measurement(self):
        return self.y / 1000

    @property
    def output(self):
        return self.u / 1000

    @output.setter
    def output(self, v):
        """Manual output (switches the loop to manual)."""
        self._set1("output", v)

    @property
    def mode(self):
        if self.fault:
            return "failsafe"
        return "auto" if self.auto else "manual"

    @mode.setter
    def mode(self, m):
        self._set1("mode", m)

    def set_tunings(self, kp, ki, kd):
        self.pid.set_tunings(kp, ki, kd)
        self.src[1] = self.src[2] = self.src[3] = 3     # a runtime change

    def _set1(self, key, v):
        fn, args = self.prepare(key, v, {})
        fn(*args)
        if key in self.SRC_KEYS:
            self.src[self.SRC_KEYS.index(key)] = 3

    def prepare(self, key, value, gains):
        """What setting key to value will do, checked now and changing nothing: (fn, args),
        and fn(*args) cannot fail. gains: {loop: [kp, ki, kd]} pending in the same request.
        ValueError (in the config's words and units) or KeyError (no such key)."""
        if key == "setpoint" or key == "output":
            sp = key == "setpoint"
            ch = self.inp if sp else self.act
            lo, hi = (ch.vmin, ch.vmax) if sp else (ch.lo, ch.hi)
            try:
                m = to_fixed(value, lo, hi)
            except ValueError:
                raise ValueError('%s is outside %s..%s %s, the %s of channel "%s" in the config'
                                 % (value, lo / 1000, hi / 1000, ch.units,
                                    "valid range" if sp else "range", ch.name))
            return (self._apply_setpoint if sp else self._apply_output), (m,)
        if key == "mode":
            if value not in ("auto", "manual"):
                raise ValueError('mode must be "auto" or "manual"')
            return self._apply_mode, (value,)
        if key in ("kp", "ki", "kd"):
            if self.pid is None:
                raise ValueError("%s is an on/off loop: it has no %s" % (self.name, key))
            g = gains.get(self) or list(self.pid.get_tunings())
            g[("kp", "ki", "kd").index(key)] = float(value)
            self.pid.check_tunings(*g)
            gains[self] = g
            return self.pid.set_tunings, tuple(g)
        raise KeyError(self.name + "." + key)

    def _apply_setpoint(self, m):
        (self.pid or self.onoff).set_setpoint(m)

    def _apply_output(self, m):
        self.auto = False
        self.manual_out = m
        self._apply_mode("manual")

    def _apply_mode(self, m):
        if self.auto and m == "manual" and self.pid is not None and not self._held:
            self.manual_out = self.u        # to manual: held where it is (bumpless)
        self.auto = m == "auto"
        if self.pid is None or self._held:
            return          # applied when the fault clears
        if self.auto:
            self.pid.set_auto()
        else:
            self.pid.set_manual(self.manual_out)

    def state(self):
        d = {"setpoint": self.setpoint, "measurement": self.measurement,
             "output": self.output, "mode": self.mode,
             "alarms": [n for b, n in ((1, "low"), (2, "high")) if self.alarms & b],
             "faults": [n for b, n in ((F_SENSOR, "sensor"), (F_EXC, "exception"),
                                       (F_COMMS, "comms"), (F_STOP, "stopped"),
                                       (F_PEER, "peer"))
                        if self.fault & b],
             "ticks": self.ticks}
        if self.pid is not None:
            d["working_setpoint"] = self.pid.sp / 1000
            d["kp"], d["ki"], d["kd"] = self.pid.get_tunings()
        d["sources"] = {k: self.SOURCES[self.src[i]]
                        for i, k in enumerate(self.SRC_KEYS) if k in d}
        return d


def _passes(node):
    # The guarded control pass, one per next(). A generator's frame is allocated once, when
    # it is made, so `except ... as e` here costs nothing per pass (in a function it would
    # make MicroPython heap-allocate the frame on every call), and the exception itself is
    # kept without sys.exc_info, which ESP32 builds do not have (MICROPY_PY_SYS_EXC_INFO
    # is off there). node._w: the us to wait, or -1 after a KeyboardInterrupt.
    while True:
        try:
            node._w = node._once()
        except KeyboardInterrupt:
            node._w = -1
        except Exception as e:  # noqa: BLE001 - latched on the loop that raised
            node._tick_failed(e)
            node._w = 0
        yield


def _run_boxed(box):
    # soft_call's side: box = [fn, args, result, exception, done, node]
    node = box[5]
    node._soft = 1
    try:
        box[2] = box[0](*box[1])
    except Exception as e:  # noqa: BLE001 - handed to the caller
        box[3] = e
    node._soft = 0
    box[4] = True


def _run_line(line):
    # The line a person (or pytest-embedded's dut.write) typed into a streaming console:
    # run it as the REPL would have, so that no input is lost.
    import __main__
    try:
        exec(compile(line, "<stdin>", "single"), __main__.__dict__)
    except Exception as e:  # noqa: BLE001 - shown like the REPL shows it
        sys.print_exception(e)


class Node:
    """Node(config, board): outputs at fail-safe at once, loops ready; start() or run()."""

    def __init__(self, config, board, watchdog_ms=None, fault_path="/faults.log",
                 tune_path="/autotune.json"):
        self.board = board
        ch = {}
        # device channels (sensors on buses, timed outputs: devices.py), only when used
        self.devices = None
        for c in config.channels:
            if c.kind not in _OUT_KINDS and c.kind not in _IN_KINDS and self.devices is None:
                from .devices import Devices
                self.devices = Devices(board)
        dev = self.devices
        # Outputs first: every actuator is at its fail-safe value before anything else.
        outs = []
        for c in config.channels:
            if c.kind in _OUT_KINDS:
                ch[c.name] = Output(c, board)
            elif dev is not None and dev.is_output(c.kind):
                ch[c.name] = dev.output(c)
            else:
                continue
            outs.append(ch[c.name])
        for c in config.channels:
            if c.kind in _IN_KINDS:
                ch[c.name] = Input(c, board)
            elif c.name not in ch:
                ch[c.name] = dev.input(c)
        self.channels = ch
        if dev is not None:
            dev.prime()     # bus sensors' first readings, before any loop ticks
        self._outs = tuple(outs)
        self._timed = () if dev is None else tuple(dev.timed)   # switched by the pass
        tasks = config.get("tasks") or ()
        self.log = _f.FaultLog(fault_path, [lc.name for lc in config.loops]
                               + [t.name for t in tasks])
        self.sched = Scheduler(board)
        self.loops = []
        # The signal graph (blocks in tasks, graph.py) only when the config has one.
        self.graph = None
        if tasks:
            from .graph import Graph
            self.graph = Graph(config, ch)
        for i in range(len(config.loops)):
            lc = config.loops[i]
            if self.graph is None:
                lp = ControlLoop(i, lc, ch[lc.sensor], ch[lc.actuator], self.log)
            else:
                lp = self.graph.loop(i, lc, self.log)
            self.loops.append(lp)
            # a loop's construction leaves garbage between what it keeps: collected before
            # the next, whose objects then fill those holes instead of splitting the heap
            # further (eight loops in a WROOM's heap ran out of contiguous blocks)
            gc.collect()
        in_tasks = () if self.graph is None else self.graph.link(self)
        gc.collect()    # the schedule's statistics arrays (1.7 KB a loop) want contiguous heap
        for lp in self.loops:
            if lp.name not in in_tasks:
                lp.sloop = self.sched.add(lp, lp.rate_hz, lp.name)
        self.tasks = () if self.graph is None else tuple(self.graph.tasks)
        # what the fault machinery walks: every loop and every task (same fault bits)
        self._units = tuple(self.loops) + self.tasks
        self._nunits = len(self._units)
        self._nloops = len(self.loops)
        fastest = min([lp.period_us for lp in self._units] or [100000])
        slowest = max([lp.period_us for lp in self._units] or [100000])
        # board.periodic takes whole ms or an integer rate in Hz
        if self.devices is not None:    # buses want service often, timed outputs fine edges
            fastest = min(fastest, self.devices.pass_us())
        p = fastest if 1000000 % fastest == 0 else max(1000, fastest // 1000 * 1000)
        self.period_us = max(1000, p)
        self.sched.early_us = self.period_us // 2   # timer phase vs. deadlines
        if watchdog_ms is None:
            watchdog_ms = max(2000, 3 * slowest // 1000)
        self.watchdog_ms = watchdog_ms
        self.wdt = None
        self.comms_timeout_ms = config.comms_timeout_ms
        self._touched = time.ticks_ms()
        self._comms_lost = False
        self._clear_req = False
        self._timer = None
        self._running = False
        self._on_timer_cb = self._on_timer      # bound once: the timer call allocates nothing
        self._service_cb = self._service_soft   # the same for scheduling the service
        self._soft = 0                          # 1 while a soft callback of ours runs
        self._svc_queued = 0                    # a service callback is scheduled (soft-owned)
        self.service_misses = 0                 # service requests the full queue refused
        self.dropped = []                       # parts that could not start (app.py: memory)
        self._w = 0                             # the last pass's wait (us), -1: Ctrl-C
        self._gen = _passes(self)               # the guarded pass (see _passes)
        self._tuning = 0                        # autotunes running
        self.tune_path = tune_path
        self.tuned = self._load_tunings()       # results kept on flash, applied at every boot
        self.fed = 0
        self.comms = None                       # a comms.Endpoint once attach()ed
        self.comms_errors = 0                   # failures in comms work (never stop loops)
        self.comms_last_error = None
        self._reboot_at = None

    # ---- driving ----

    def run_once(self):
        """One control pass: comms timeout check, every due loop, telemetry sampling,
        watchdog; returns the us to wait. A tick's exception is latched on its loop
        (fail-safe), never raised. The rest (protocol, fault log flush, autotune results)
        is the service's: run() calls both; by hand, call service() now and then."""
        w = self._pass()
        if w < 0:
            raise KeyboardInterrupt
        return w

    def _pass(self):
        try:
            next(self._gen)
        except StopIteration:   # the generator died (an exception inside its handler)
            self._gen = _passes(self)
            next(self._gen)
        return self._w

    def _once(self):
        # The control pass: only control (no flash, no protocol, no allocation).
        self._comms()
        if self._clear_req:
            self._do_clear()
        w = self.sched.run_once()
        if self._timed:
            self._switch()
        if self.comms is not None:
            self.comms.sample(time.ticks_ms())  # allocation-free: into a preallocated batch
        self._peers()
        self._health()
        return w

    def _switch(self):
        # timed outputs (time-proportioned): their pin follows the clock, every pass
        now = time.ticks_ms()
        i = 0
        while i < len(self._timed):
            self._timed[i].update(now)
            i += 1

    def _wants_service(self):
        return (self.comms is not None or self._reboot_at is not None or self.log.n
                or self._tuning or self.devices is not None)

    def _peers(self):
        # Small frames, index loops: this runs every pass and must not allocate.
        bad = self._own_faults()
        i = 0
        while i < self._nunits:
            self._units[i].peer(bad)
            i += 1

    def _own_faults(self):
        bad = 0
        i = 0
        while i < self._nunits:
            bad |= self._units[i].fault & _OWN
            i += 1
        return bad

    def _tick_failed(self, e):
        # The loop whose tick raised is the one still marked busy: latch it at fail-safe.
        # (Its deadline is unchanged, so it runs again at once, now only holding fail-safe.)
        hit = False
        for lp in self.loops:
            if lp.busy:
                lp.busy = 0
                lp._exc(e)
                hit = True
        for t in self.tasks:            # a task is busy around its loops' ticks too
            if t.busy:
                t.busy = 0
                if not hit:             # no loop of it was: one of its blocks raised
                    t._exc(e)
                    hit = True
        if not hit:
            self._fail(e)           # not from a tick: a bug in the node itself, all safe

    def _comms(self):
        t = self.comms_timeout_ms
        if not t:
            return
        age = time.ticks_diff(time.ticks_ms(), self._touched)
        if age >= t:
            if not self._comms_lost:
                self._lose_comms(age)
        elif self._comms_lost:
            self._comms_lost = False
            for lp in self._units:
                lp.fault &= ~F_COMMS

    def _health(self):
        # Feed the watchdog only when every loop has ticked since the last feed and none has
        # a latched exception. Handled faults (sensor, comms) still feed: the loop is alive
        # and holding its outputs at fail-safe, and a reset would not fix a broken sensor.
        for lp in self._units:
            if not lp.ran or lp.fault & F_EXC:
                return
        for lp in self._units:
            lp.ran = 0
        if self.wdt is not None:
            self.wdt.feed()
        self.fed += 1

    def _lose_comms(self, age):
        # Every output to its fail-safe value now, in this pass: a loop that is not due
        # holds it from its next tick on (F_COMMS).
        self._comms_lost = True
        self.log.record(-1, _f.COMMS, age)
        for lp in self.loops:
            lp.fault |= F_COMMS
            lp.u = lp.act.failsafe
            lp.act.write(lp.u)
        for t in self.tasks:
            t.fault |= F_COMMS
            t.safe()

    def _flush(self):
        try:
            self.log.flush()
        except (OSError, MemoryError):
            pass        # flash trouble (or a heap locked by an interrupt) must not stop the
                        # control loops; the records stay buffered and are retried next pass

    def _prepare(self, first_in_us=0):
        if self.watchdog_ms and self.wdt is None:
            self.wdt = self.board.watchdog(self.watchdog_ms)
        self._touched = time.ticks_ms()
        self._comms_lost = False
        b = self.board
        # The first deadline is when the first pass comes: at once in the foreground, one
        # timer period after start() in the background (a periodic timer first fires one
        # period after it is armed, on ESP32 too). So the first tick is on time.
        first = b.ticks_add(b.ticks_us(), first_in_us)
        for lp in self._units:
            lp.fault &= ~(F_STOP | F_COMMS)
            lp.sloop.deadline = first      # no backlog from the time since construction

    def start(self):
        """Run in the background (board.periodic at the fastest loop's period); the REPL
        stays usable."""
        if self._timer is not None:
            return
        self._prepare(self.period_us)
        self._running = True
        self._timer = self.board.periodic(self.period_us, self._on_timer_cb)

    def _on_timer(self, _h):
        # The control pass (soft callback). No `except ... as e` here: binding the
        # exception makes MicroPython heap-allocate this frame on every call.
        if not self._running:
            return              # a fire queued before stop() (ESP32 runs those too)
        self._soft = 1
        if self._pass() < 0:    # Ctrl-C landed in the pass
            self._interrupt()
            self.stop()
        self._soft = 0
        if not self._svc_queued and self._wants_service():
            self._svc_queued = 1
            self._wake(0)

    def _wake(self, urgent):
        # Schedule the service as its own soft callback: it runs after this pass, never
        # inside it, and never interleaved with another pass.
        try:
            _schedule(self._service_cb, urgent)
        except RuntimeError:    # the schedule queue is full: the next pass asks again
            self._svc_queued = 0
            self.service_misses += 1

    def wake_service(self):
        """Ask for a service pass now (serve() calls it when a frame came)."""
        if self._timer is None:
            self._service_soft(1)   # no background loops: this is the only context
        else:
            self._wake(1)

    def more_service(self):
        """The service has more to do (a port's backlog): another pass of it soon after
        this one. (In the foreground, run() serves after every pass anyway.)"""
        if self._timer is not None and not self._svc_queued:
            self._svc_queued = 1
            self._wake(1)

    def _service_soft(self, urgent):
        self._svc_queued = 0
        self._soft = 1
        self._service(urgent)
        self._soft = 0

    def _service(self, urgent=0):
        # Everything but control, outside the control pass (it may allocate, write flash
        # and take milliseconds). A failure here never stops the loops: the comms timeout
        # takes the outputs safe if the link stays down. Each step fails on its own: a
        # tune's trouble never keeps the comms unserved.
        if self.devices is not None:
            self.devices.step()     # bus transactions: one per bus, never raises
        if self._tuning:
            try:
                self._check_tuners()
            except Exception as e:  # noqa: BLE001 - counted; the comms are served anyway
                self.comms_errors += 1
                self.comms_last_error = e
        try:
            if self.comms is not None:
                self.comms.service(None, urgent)
            if self._reboot_at is not None:
                self._reboot_due()
        except Exception as e:  # noqa: BLE001 - counted; the loops run on
            self.comms_errors += 1
            self.comms_last_error = e
        if self.log.n and (self._running or self._timer is None):
            self._flush()

    def service(self):
        """One service pass by hand (foreground use of run_once())."""
        self._service(1)

    def soft_call(self, fn, *args):
        """Run fn(*args) in the soft context (between control passes, never inside one)
        and return its result or raise its exception. The REPL API uses it for every
        change to the loops, so a control pass never sees half of one."""
        if self._soft or self._timer is None:
            return fn(*args)
        box = [fn, args, None, None, False, self]
        while True:
            try:
                _schedule(_run_boxed, box)
                break
            except RuntimeError:
                time.sleep_ms(1)    # the queue is full: wait for a slot
        while not box[4]:
            time.sleep_ms(1)        # soft callbacks run meanwhile
        if box[3] is not None:
            raise box[3]
        return box[2]

    def _reboot_due(self):
        if time.ticks_diff(time.ticks_ms(), self._reboot_at) >= 0:
            self.safe_all(F_STOP)
            self._flush()
            self.board.reset()

    def run(self, seconds=None):
        """Run in the foreground for `seconds` (None: forever). Ctrl-C: every output to
        fail-safe, a fault record, then KeyboardInterrupt is re-raised. On return the
        outputs are at fail-safe (the loops have stopped)."""
        if self._timer is not None:
            raise RuntimeError("running in the background; stop() first")
        b = self.board
        self._prepare()
        self._running = True
        left = None if seconds is None else int(seconds * 1000000)
        last = b.ticks_us()
        try:
            while self._running:
                try:
                    wait = self._once()
                except Exception as e:
                    self._tick_failed(e)
                    wait = 0
                if self._wants_service():
                    self._service(0)
                if wait > self.period_us:   # the pass's own period (devices: switching,
                    wait = self.period_us   # bus service), as the timer gives in start()
                if left is not None:
                    now = b.ticks_us()
                    left -= b.ticks_diff(now, last)
                    last = now
                    if left <= 0:
                        break
                    if wait > left:
                        wait = left
                if wait > 0:
                    self._sleep(wait)
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            self._running = False
            self.safe_all(F_STOP)
            self._flush()

    def _sleep(self, us):
        if us >= 2000:
            time.sleep_ms(us // 1000)        # yields (ESP32: to FreeRTOS)
            us = us % 1000
        if us > 0:
            self.board.sleep_us(us)

    def stop(self):
        """Stop the loops; every output to fail-safe. (A running watchdog cannot be stopped:
        start() or run() again before it expires.)"""
        self._running = False       # a control pass still queued does nothing now
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.safe_all(F_STOP)
        self._flush()

    def safe_all(self, bit=0):
        for lp in self._units:
            lp.fault |= bit
            lp.safe()
        for o in self._outs:       # allocation-free: usable even where the heap is locked
            o.safe()

    def _interrupt(self):
        self.safe_all(F_STOP)
        self.log.record(-1, _f.INTERRUPT, 0)
        if not self._soft:
            self._flush()           # in the control pass the service (or stop()) flushes

    def _fail(self, e):
        # an exception outside the loop ticks (a bug in the node itself): all safe
        for lp in self._units:
            lp.last_exc = e
            lp.fault |= F_EXC
        self.safe_all()
        self.log.record(-1, _f.EXCEPTION, 0)
        if not self._soft:
            self._flush()

    # ---- REPL API ----

    def attach(self, endpoint):
        """Use a comms.Endpoint: telemetry is sampled in the pass, hosts are served."""
        self.comms = endpoint

    def serve(self):
        """Speak the protocol on this serial console (the host tools call this from the
        REPL); returns when the host leaves or a person types. The loops keep running."""
        from .console import serve
        if self.comms is None:
            raise RuntimeError("no comms endpoint: it did not start at boot (node.dropped: %r)"
                               % (self.dropped,))
        why, line = serve(self.comms, self)
        print("\ncyphy: protocol session ended (%s); the loops keep running" % why)
        if line:
            _run_line(line)

    def reboot_after(self, ms):
        """Outputs safe, then a hard reset of the board in ms milliseconds."""
        self._reboot_at = time.ticks_add(time.ticks_ms(), ms)

    def touch(self, t=None):
        """Comms alive: a fresh authenticated host frame arrived at ticks_ms t (default
        now). The comms timeout runs from the latest such arrival."""
        if t is None:
            t = time.ticks_ms()
        if time.ticks_diff(t, self._touched) > 0:
            self._touched = t

    def clear(self):
        """Clear latched exception faults; the loops resume (bumpless) on their next tick."""
        self.soft_call(self._do_clear)

    def _do_clear(self):
        self._clear_req = False
        for lp in self._units:
            lp.fault &= ~F_EXC
            lp.last_exc = None

    # ---- relay autotune (Astrom-Hagglund), result kept on flash: tuning.py ----

    def autotune(self, name, high, low, hyst=0.0, rule="auto", cycles=4, settle=2,
                 timeout_s=None):
        """Replace loop `name`'s PID by a relay (output high/low around its setpoint) until
        `cycles` oscillations are measured; then the PID gets the gains of `rule` ("auto":
        chosen from the model the run identified; or one of autotune.rules) and the result
        is written to /autotune.json, applied at every boot. A run that times out or is not
        stable changes nothing: the PID resumes from the output it had before."""
        from . import tuning

        return self.soft_call(tuning.start, self, name, high, low, hyst, rule, cycles,
                              settle, timeout_s)

    def tune(self, name, amplitude=0.0, hyst=0.0, rule="auto", timeout_s=None, apply=True,
             owner=None):
        """autotune() as a user starts it (cyphy tune, the protocol's TUNE): the relay swings
        the output by +-amplitude (default: a fifth of the actuator's range) around the
        output it has now, within the actuator's range; hyst defaults to 0.5 % of the
        sensor's valid range. apply=False: identify and report, keep the gains. owner: the
        (port, addr) of the host that asked; the run stops if that host goes away."""
        from . import tuning

        high, low, hyst = tuning.relay(self.loop(name), amplitude, hyst)
        return self.soft_call(tuning.start, self, name, high, low, hyst, rule, 4, 2,
                              timeout_s, apply, owner)

    def abort_tune(self, name, why="stopped"):
        """Stop a running autotune: the loop goes on with the gains and from the output it
        had before (bumpless), and the result says why. False if none was running."""
        if self.loop(name).tuner is None:
            return False
        from . import tuning

        return self.soft_call(tuning.abort, self, name, why)

    def forget_tuning(self, name):
        """Forget loop `name`'s persisted layer (an applied autotune, values saved with
        set --save): the values that came from it go back to the config's, now and at
        every boot (gains bumplessly); runtime changes stay. Returns the keys reverted."""
        from . import params, tuning

        self.loop(name)
        try:
            return self.soft_call(params.forget, self, name)
        finally:
            if not self._tuning:
                tuning.unload()

    def tune_status(self, name):
        """{"running": True, "cycles": (done, wanted), "period_s", "amplitude"} (the last
        measured cycle's, None before one) or {"running": False, "result": {...}}."""
        lp = self.loop(name)
        if lp.tuner is None:
            rec = self.tuned.get(name)
            return {"running": False,
                    "result": lp.tune_result or (rec if rec and "ok" in rec else None)}
        from . import tuning

        return tuning.progress(lp)

    def _check_tuners(self):
        from . import tuning

        tuning.check(self)

    def _load_tunings(self):
        import os

        try:
            os.stat(self.tune_path)
        except OSError:
            return {}           # nothing kept: params.py is not even loaded
        from . import params, tuning

        try:
            return params.load(self)
        finally:
            tuning.unload()

    def loop(self, name):
        for lp in self.loops:
            if lp.name == name:
                return lp
        raise KeyError(name)

    def set(self, path, value):
        """node.set("heater.setpoint", 60.0); also output, mode, kp, ki, kd. Applied in the
        soft context, between two control passes."""
        return self.set_many(((path, value),))

    def set_many(self, items, save=False):
        """node.set_many([("heater.setpoint", 60.0), ("heater.kp", 2.0)]): every assignment
        is checked before any is applied, then all are applied in one soft call, so a control
        pass sees all of them or none. ValueError or KeyError names the one refused.
        save=True also persists them (setpoints and gains only): in force after a reboot,
        over the config's values (params.py)."""
        return self.soft_call(self._set_many, items, save)

    def _set_many(self, items, save=False):
        plan = []
        gains = {}
        marks = []
        for path, value in items:
            name, _, key = path.partition(".")
            try:
                lp = self.loop(name)
                plan.append(lp.prepare(key, value, gains))
                if save and key not in lp.SRC_KEYS:
                    raise ValueError("%s is not persisted: --save keeps setpoints and gains"
                                     % key)
            except ValueError as e:
                raise ValueError("%s = %s refused%s: %s" % (
                    path, value, ", nothing was applied" if len(items) > 1 else "", e))
            if key in lp.SRC_KEYS:
                marks.append((lp, key))
        for fn, args in plan:
            fn(*args)
        for lp, key in marks:
            lp.src[lp.SRC_KEYS.index(key)] = 3
        if save and marks:
            from . import params, tuning

            try:
                for lp in self.loops:
                    keys = [k for q, k in marks if q is lp]
                    if keys:
                        params.save_values(self, lp, keys)
            finally:
                if not self._tuning:
                    tuning.unload()

    def get(self, path):
        """node.get("heater.measurement"), or node.get("heater") for the loop's state; a
        block's the same way (node.get("ff"), node.get("ff.value"))."""
        name, _, attr = path.partition(".")
        if self.graph is not None and name in self.graph.blocks:
            d = self.graph.state()[name]
        elif name in self.channels and hasattr(self.channels[name], "state"):
            d = self.channels[name].state()     # a device channel (devices.py)
        else:
            d = self.loop(name).state()
        return d[attr] if attr else d

    def set_param(self, path, value):
        """node.set_param("ratio1.ratio", 1.5): a block's parameter (graph.py), applied
        between two control passes. KeyError: no such parameter; ValueError: refused."""
        if self.graph is None:
            raise KeyError(path)
        self.soft_call(self.graph.setter(path, float(value)))

    MAX_SIGNALS = 16    # in each telemetry sample, after the loops (a frame's room)

    def signals(self):
        """[(name, object with .value in milli-units)]: what telemetry carries besides the
        loops (the graph's blocks, the device channels), at most MAX_SIGNALS."""
        out = [] if self.graph is None else self.graph.signals()
        if self.devices is not None:
            out += [(c.name, c) for c in self.devices.channels]
        return out[:self.MAX_SIGNALS]

    def blocks(self):
        """{block: {"type", "value", "units", and its parameters}} ({} without a graph)."""
        return {} if self.graph is None else self.graph.state()

    def state(self):
        return {lp.name: lp.state() for lp in self.loops}

    def stats(self):
        """The scheduler's per-loop statistics, plus compute time in chip microseconds
        (chip_compute_mean_us, chip_compute_max_us) and the loop's share of the CPU at the
        chip's speed (chip_cpu_pct): measured time x board.cpu_slowdown() (1 on a board;
        the sim's calibrated slowdown, docs/boards.md "Speed")."""
        st = self.sched.stats()
        k = self.board.cpu_slowdown() if hasattr(self.board, "cpu_slowdown") else None
        if k:
            for lp in self.loops:
                d = st.get(lp.name)
                if d and d.get("compute_mean_us") is not None:
                    mean = d["compute_mean_us"] * k
                    d["chip_compute_mean_us"] = int(mean + 0.5)
                    d["chip_compute_max_us"] = int(d["compute_max_us"] * k + 0.5)
                    d["chip_cpu_pct"] = round(100.0 * mean / lp.period_us, 1)
        return st

    def faults(self):
        """Fault records on flash (after flushing pending ones), oldest first:
        [(ticks_ms, loop or "-", kind, value, wall_ms or None)] (faults.py)."""
        self.soft_call(self._flush)
        return self.log.records()

    def running(self):
        return self._running
