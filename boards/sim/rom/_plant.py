# The sim board's physical world: plant models wired to its ADC inputs and PWM/DAC outputs.
#
# Runs inside the MicroPython node process (Unix port) and on CPython alike: no typing,
# dataclasses or numpy. Floats are fine here: the plant is physics, stepped outside the
# control tick. step() builds no lists or dicts; what it allocates is MicroPython's boxed
# float results (32 bytes each on the Unix port): about 15 per step for fotd, 23 for
# dcmotor and 70 per RK4 sub-step for twotank.
#
#   p = make({"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12,
#             "noise": {"std": 0.05},
#             "disturbances": [{"at_s": 300, "input": "ambient", "value": 15.0}]}, seed=1)
#   p.set_input("heater", 40.0)      # engineering units, clamped to the physical range
#   p.step(0.1)                      # advance physics by 0.1 s
#   p.measure("temperature")         # sensor reading: true value + seeded Gaussian noise
#   p.true("temperature")            # noiseless value
#
# Types (docs/plants.md has the equations, defaults, units and accuracy):
#   fotd     heater % 0..100 -> temperature degC          loads: ambient degC
#   dcmotor  voltage V vmin..vmax -> speed rad/s, current A   loads: load_torque N m
#   twotank  pump V 0..vmax -> levels h1, h2 m           loads: valve 0..1 (tank 2 outlet)
#   second_order  drive umin..umax -> y (gain units)      loads: load (added to drive)
#
# Integration:
#   fotd     exact discretisation of the first-order lag over every segment in which the
#            delayed input is constant. The dead time is a preallocated ring buffer of the
#            input sampled every h = dead_time_s / n (n = ceil(dead_time_s / 0.1), at most
#            512), so an input change on that grid reaches the lag exactly dead_time_s later;
#            a change between grid points waits for the next one (<= h extra delay).
#   dcmotor  linear, so discretised exactly (zero-order hold on the inputs): exp(A*s) in
#            closed form for the 2x2 system matrix, cached per step length. Exact and stable
#            for any dt, so no sub-steps are needed even for dt >> L/R = 0.5 s or J/b = 0.1 s
#            (the anchor parameters); the 2x2 form costs 8 multiplies per step.
#   twotank  RK4 with sub-steps of at most 0.1 x the linearised time constant
#            (A/a)*sqrt(2h/g) of the faster tank at 1 % of its height; levels are clamped to
#            0..height after every sub-step (and inside the RK4 stages), and inflow to a full
#            tank spills over.
#   step(dt) also splits exactly at disturbance times and at the dead-time sampling grid.
#
# Determinism: same spec + seed + the same sequence of calls gives bit-identical results on
# one runtime. CPython and MicroPython's Unix port (both IEEE double) agree within float
# rounding (libm's exp/log/sin may differ in the last bit). On ESP32 MicroPython floats are
# single precision (and 32-bit PRNG state is a heap long int there), so results differ at
# the ~1e-7 relative level; the sim board runs on the Unix port.
import math
from array import array

_EPS = 1e-9  # s: two instants closer than this are the same instant
_INF = float("inf")
_MASK = 0xFFFFFFFF
_TWO_PI = 6.283185307179586
_TWO_M32 = 2.3283064365386963e-10  # 2**-32
_FOTD_SAMPLE_S = 0.1  # dead-time ring buffer: sampling step at most this
_FOTD_MAX_BUF = 512  # ... and at most this many entries

# event kinds
_EV_INPUT = 0
_EV_PARAM = 1
_EV_FAULT = 2
_FAULTS = ("stuck", "noise", "offset", "none")


def _bad(where, why):
    return ValueError("plant spec %s: %s" % (where, why))


def _num(v, where, kind="any"):
    """A finite number as float; kind 'pos' (> 0), 'nonneg' (>= 0) or 'any'."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(where, "must be a number (got %r)" % (v,))
    try:
        f = float(v)
    except OverflowError:
        raise _bad(where, "must be a finite number (got %r)" % (v,))
    if f != f or f == _INF or f == -_INF:
        raise _bad(where, "must be a finite number (got %r)" % (v,))
    if kind == "pos" and not f > 0.0:
        raise _bad(where, "must be > 0 (got %r)" % (v,))
    if kind == "nonneg" and not f >= 0.0:
        raise _bad(where, "must be >= 0 (got %r)" % (v,))
    return f


def _names(seq):
    return ", ".join("'%s'" % n for n in seq)


class Rng:
    """Deterministic PRNG: xorshift32 (Marsaglia 2003) and Box-Muller normals.

    Integer arithmetic masked to 32 bits, so the sequence is the same on every runtime;
    `stream` gives independent sequences from one seed (one per sensor)."""

    def __init__(self, seed=1, stream=0):
        s = (seed * 0x9E3779B1 + (stream + 1) * 0x85EBCA77) & _MASK
        s ^= s >> 16
        s = (s * 0x7FEB352D) & _MASK
        s ^= s >> 15
        self._s = s or 0x6A09E667  # xorshift's state must not be 0
        self._spare = 0.0
        self._has_spare = False
        for _ in range(8):  # let nearby seeds diverge
            self.next32()

    def next32(self):
        x = self._s
        x ^= (x << 13) & _MASK
        x ^= x >> 17
        x ^= (x << 5) & _MASK
        self._s = x
        return x

    def uniform(self):
        """In (0, 1): the state is never 0, and x * 2**-32 is exact in a double."""
        return self.next32() * _TWO_M32

    def gauss(self):
        """Standard normal; Box-Muller yields pairs, the second is kept for the next call."""
        if self._has_spare:
            self._has_spare = False
            return self._spare
        r = math.sqrt(-2.0 * math.log(self.uniform()))
        a = _TWO_PI * self.uniform()
        self._spare = r * math.sin(a)
        self._has_spare = True
        return r * math.cos(a)


class Plant:
    """Base of the models. Subclasses set the tables below and implement _setup (state,
    input ranges), _advance(s), _out(i), _set_out(i, v) and, as needed, _refresh (after a
    parameter change), _start (once the initial inputs are known) and _sync(t) (work on a
    sampling grid whose next instant is _next_b)."""

    TYPE = ""
    inputs = ()  # manipulated inputs (what the board's PWM/DAC outputs drive)
    outputs = ()  # measured outputs (what the board's ADC inputs read)
    loads = ()  # disturbance inputs (environment), settable like inputs
    LOAD_DEFAULTS = ()
    PARAMS = ()  # (name, default, kind) with kind 'pos' | 'nonneg' | 'any'
    LIVE_PARAMS = ()  # parameters a disturbance may change at run time
    _next_b = _INF  # next instant on the model's sampling grid

    def __init__(self, spec, seed):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("plant seed: must be an int (got %r)" % (seed,))
        known = ("type", "noise", "initial", "disturbances") + self.loads
        known += tuple(p[0] for p in self.PARAMS)
        for k in spec:
            if k not in known:
                raise _bad("'%s'" % (k,), "unknown key for type '%s' (known: %s)"
                           % (self.TYPE, _names(sorted(known))))
        for name, default, kind in self.PARAMS:
            setattr(self, name, _num(spec.get(name, default), "'%s'" % name, kind))
        self.time_s = 0.0
        names = self.inputs + self.loads
        self._uidx = {n: j for j, n in enumerate(names)}
        self._oidx = {n: i for i, n in enumerate(self.outputs)}
        self._u = [0.0] * len(names)
        self._lo = [-_INF] * len(names)
        self._hi = [_INF] * len(names)
        self._setup()
        self._refresh()
        for j, n in enumerate(self.loads):
            v = _num(spec.get(n, self.LOAD_DEFAULTS[j]), "'%s'" % n)
            self._u[len(self.inputs) + j] = self._in_range(j + len(self.inputs), v, "'%s'" % n)
        self._noise(spec.get("noise", {}), seed)
        initial = spec.get("initial", {})
        if not isinstance(initial, dict):
            raise _bad("'initial'", "must be a dict of input/output name -> value (got %r)"
                       % (initial,))
        self._set_out(-1, None)  # model default state (e.g. temperature = ambient)
        for k in initial:
            where = "'initial.%s'" % (k,)
            v = _num(initial[k], where)
            if k in self._oidx:
                self._set_out(self._oidx[k], v, where)
            elif k in self.inputs:
                self._u[self._uidx[k]] = self._in_range(self._uidx[k], v, where)
            else:
                raise _bad(where, "unknown name (inputs: %s; outputs: %s)"
                           % (_names(self.inputs), _names(self.outputs)))
        self._start()
        evs = spec.get("disturbances", [])
        if not isinstance(evs, (list, tuple)):
            raise _bad("'disturbances'", "must be a list of dicts (got %r)" % (evs,))
        self._events = []
        self._ev_i = 0
        for n, ev in enumerate(evs):
            self._schedule(self._event(ev, "'disturbances[%d]" % n, True))
        self._due(0.0)

    # ------------------------------------------------------------------ public API
    def set_input(self, name, value):
        """Set a manipulated input or a load, in engineering units; clamped to its range."""
        j = self._uidx.get(name)
        if j is None:
            raise ValueError("plant: unknown input %r (inputs: %s; loads: %s)"
                             % (name, _names(self.inputs), _names(self.loads)))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError("plant: input %r must be a number, not %r" % (name, value))
        v = float(value)
        self._u[j] = self._lo[j] if v < self._lo[j] else self._hi[j] if v > self._hi[j] else v

    def get_input(self, name):
        """The value an input or load holds now (after clamping)."""
        j = self._uidx.get(name)
        if j is None:
            raise ValueError("plant: unknown input %r" % (name,))
        return self._u[j]

    def limits(self, name):
        """(low, high) physical range of an input or load; +-inf when unbounded."""
        j = self._uidx.get(name)
        if j is None:
            raise ValueError("plant: unknown input %r" % (name,))
        return (self._lo[j], self._hi[j])

    def true(self, name):
        """Noiseless value of an output."""
        return self._out(self._o(name))

    def measure(self, name):
        """Sensor reading: true value (+ offset) + Gaussian noise (seeded, one stream per
        sensor), or the held value while the sensor is stuck."""
        i = self._o(name)
        if self._stuck[i]:
            return self._held[i]
        v = self._out(i) + self._off[i]
        s = self._std[i]
        if s > 0.0:
            v += s * self._rng[i].gauss()
        self._last[i] = v
        return v

    def step(self, dt_s):
        """Advance the physics by dt_s seconds, applying disturbances at their exact time."""
        if isinstance(dt_s, bool) or not isinstance(dt_s, (int, float)) or not 0 <= dt_s < _INF:
            raise ValueError("plant: step(dt_s) needs a number >= 0 (got %r)" % (dt_s,))
        end = self.time_s + dt_s
        events = self._events
        while True:
            t = self.time_s
            self._due(t)  # disturbances: as soon as time reaches at_s
            if end - t <= _EPS:
                break
            self._sync(t)  # the dead-time sample at `end` waits for the next step(), so it
            # takes the input the caller sets at that instant
            nxt = end
            if self._ev_i < len(events) and events[self._ev_i][0] < nxt:
                nxt = events[self._ev_i][0]
            if self._next_b < nxt:
                nxt = self._next_b
            self._advance(nxt - t)
            self.time_s = nxt
        self.time_s = end

    def disturb(self, event=None, **kw):
        """Inject a disturbance or sensor fault at run time, as a dict or keywords (same
        form as the spec's "disturbances" entries); without at_s, or with at_s <= now, it
        applies at once, otherwise when time passes at_s. E.g.
        disturb(input="load_torque", value=0.05); disturb(sensor="speed", fault="stuck")."""
        ev = dict(event) if event is not None else {}
        ev.update(kw)
        e = self._event(ev, "'disturbance", False)
        if e[0] <= self.time_s + _EPS:
            self._apply(e)
        else:
            self._schedule(e)

    def fault(self, name):
        """A sensor's fault now: ("none", 0.0), ("stuck", held value), ("noise", std) or
        ("offset", offset)."""
        i = self._o(name)
        f = self._fault[i]
        if f == "stuck":
            return (f, self._held[i])
        if f == "noise":
            return (f, self._std[i])
        return (f, self._off[i])

    def pending(self):
        """Number of scheduled disturbances not yet applied."""
        return len(self._events) - self._ev_i

    def __repr__(self):
        return "<plant %s t=%.3fs %s>" % (self.TYPE, self.time_s, " ".join(
            "%s=%.6g" % (n, self._out(i)) for i, n in enumerate(self.outputs)))

    # ------------------------------------------------------------------ internals
    def _o(self, name):
        i = self._oidx.get(name)
        if i is None:
            raise ValueError("plant: unknown output %r (outputs: %s)"
                             % (name, _names(self.outputs)))
        return i

    def _in_range(self, j, v, where):
        if v < self._lo[j] or v > self._hi[j]:
            raise _bad(where, "must be within %r..%r (got %r)" % (self._lo[j], self._hi[j], v))
        return v

    def _noise(self, noise, seed):
        n = len(self.outputs)
        if not isinstance(noise, dict):
            raise _bad("'noise'", "must be a dict like {\"std\": 0.05} (got %r)" % (noise,))
        for k in noise:
            if k != "std":
                raise _bad("'noise.%s'" % (k,), "unknown key (known: 'std')")
        std = noise.get("std", 0.0)
        if isinstance(std, dict):
            for k in std:
                if k not in self._oidx:
                    raise _bad("'noise.std.%s'" % (k,), "not an output (outputs: %s)"
                               % _names(self.outputs))
            self._std0 = [_num(std.get(o, 0.0), "'noise.std.%s'" % o, "nonneg")
                          for o in self.outputs]
        else:
            s = _num(std, "'noise.std'", "nonneg")
            self._std0 = [s] * n
        self._std = list(self._std0)
        self._rng = [Rng(seed, i) for i in range(n)]
        self._stuck = [False] * n
        self._held = [0.0] * n
        self._off = [0.0] * n  # offset fault: added to the true value
        self._fault = ["none"] * n
        self._last = [None] * n

    def _event(self, ev, where, need_at):
        """Validate one disturbance dict -> (at_s, kind, name, value, std)."""
        if not isinstance(ev, dict):
            raise _bad(where + "'", "must be a dict (got %r)" % (ev,))
        if "at_s" in ev:
            at = _num(ev["at_s"], where + ".at_s'", "nonneg")
        elif need_at:
            raise _bad(where + ".at_s'", "is required (time in s when it takes effect)")
        else:
            at = self.time_s
        which = [k for k in ("input", "param", "sensor") if k in ev]
        if len(which) != 1:
            raise _bad(where + "'", "needs exactly one of 'input', 'param' or 'sensor' (got %s)"
                       % _names(sorted(ev)))
        kind = which[0]
        allowed = {"input": ("at_s", "input", "value"), "param": ("at_s", "param", "value"),
                   "sensor": ("at_s", "sensor", "fault", "std", "value")}[kind]
        for k in ev:
            if k not in allowed:
                raise _bad(where + ".%s'" % (k,), "unknown key for a %s event (known: %s)"
                           % (kind, _names(allowed)))
        name = ev[kind]
        if kind == "input":
            if name not in self._uidx:
                raise _bad(where + ".input'", "unknown input %r (inputs: %s; loads: %s)"
                           % (name, _names(self.inputs), _names(self.loads)))
            if "value" not in ev:
                raise _bad(where + ".value'", "is required")
            return (at, _EV_INPUT, name, _num(ev["value"], where + ".value'"), 0.0)
        if kind == "param":
            if name not in self.LIVE_PARAMS:
                raise _bad(where + ".param'", "%r cannot change at run time (can: %s)"
                           % (name, _names(self.LIVE_PARAMS)))
            if "value" not in ev:
                raise _bad(where + ".value'", "is required")
            pkind = [p[2] for p in self.PARAMS if p[0] == name][0]
            return (at, _EV_PARAM, name, _num(ev["value"], where + ".value'", pkind), 0.0)
        if name not in self._oidx:
            raise _bad(where + ".sensor'", "unknown sensor %r (outputs: %s)"
                       % (name, _names(self.outputs)))
        fault = ev.get("fault")
        if fault not in _FAULTS:
            raise _bad(where + ".fault'", "must be one of %s (got %r)" % (_names(_FAULTS), fault))
        if fault == "noise":
            if "value" in ev or "std" not in ev:
                raise _bad(where + ".std'", "a 'noise' fault needs 'std' (and no 'value')")
            return (at, _EV_FAULT, name, 0.0, _num(ev["std"], where + ".std'", "nonneg"))
        if "std" in ev:
            raise _bad(where + ".std'", "only a 'noise' fault takes 'std'")
        if fault == "stuck":
            v = _num(ev["value"], where + ".value'") if "value" in ev else None
            return (at, _EV_FAULT, name, v, -1.0)
        if fault == "offset":
            if "value" not in ev:
                raise _bad(where + ".value'", "an 'offset' fault needs 'value' (added to the reading)")
            return (at, _EV_FAULT, name, _num(ev["value"], where + ".value'"), -3.0)
        if "value" in ev:
            raise _bad(where + ".value'", "a 'none' fault takes no 'value'")
        return (at, _EV_FAULT, name, 0.0, -2.0)

    def _schedule(self, e):
        i = len(self._events)
        while i > self._ev_i and self._events[i - 1][0] > e[0]:
            i -= 1  # after every event at the same time: spec order is kept
        self._events.insert(i, e)

    def _due(self, t):
        events = self._events
        while self._ev_i < len(events) and events[self._ev_i][0] <= t + _EPS:
            e = events[self._ev_i]
            self._ev_i += 1
            self._apply(e)
        if self._ev_i > 64 and self._ev_i == len(events):
            del events[:]  # applied events are not kept
            self._ev_i = 0

    def _apply(self, e):
        kind, name = e[1], e[2]
        if kind == _EV_INPUT:
            self.set_input(name, e[3])
        elif kind == _EV_PARAM:
            setattr(self, name, e[3])
            self._refresh()
        else:
            i = self._oidx[name]
            # a sensor has one fault at a time: a new fault replaces the old one
            self._off[i] = 0.0
            if e[4] >= 0.0:  # noise: the sensor's noise becomes std
                self._std[i] = e[4]
                self._stuck[i] = False
                self._fault[i] = "noise"
            elif e[4] == -3.0:  # offset: the reading is off by value (noise as configured)
                self._off[i] = e[3]
                self._std[i] = self._std0[i]
                self._stuck[i] = False
                self._fault[i] = "offset"
            elif e[4] == -1.0:  # stuck: holds the given value, else its last reading
                if e[3] is not None:
                    self._held[i] = e[3]
                elif self._last[i] is not None:
                    self._held[i] = self._last[i]
                else:
                    self._held[i] = self._out(i)
                self._stuck[i] = True
                self._std[i] = self._std0[i]
                self._fault[i] = "stuck"
            else:  # none: the sensor is healthy again
                self._std[i] = self._std0[i]
                self._stuck[i] = False
                self._fault[i] = "none"

    # model hooks
    def _setup(self):
        pass

    def _refresh(self):
        pass

    def _start(self):
        pass

    def _sync(self, t):
        pass


class FOTD(Plant):
    """Thermal first-order-plus-dead-time:
    tau dT/dt = ambient + gain * heater(t - dead_time) - T."""

    TYPE = "fotd"
    inputs = ("heater",)
    outputs = ("temperature",)
    loads = ("ambient",)
    LOAD_DEFAULTS = (20.0,)
    PARAMS = (("gain", 0.9, "any"), ("tau_s", 160.0, "pos"), ("dead_time_s", 12.0, "nonneg"))
    LIVE_PARAMS = ("gain", "tau_s")

    def _setup(self):
        self._lo[0], self._hi[0] = 0.0, 100.0
        th = self.dead_time_s
        n = 0 if th == 0.0 else int(math.ceil(th / _FOTD_SAMPLE_S - 1e-6))
        if n > _FOTD_MAX_BUF:
            n = _FOTD_MAX_BUF
        self._n = n
        self._h = th / n if n else 0.0
        self._buf = array("d", [0.0] * n)
        self._ri = 0
        self._k = 0
        self._ud = 0.0
        self._T = 0.0
        self._s_last = -1.0
        self._f = 0.0

    def _refresh(self):
        self._s_last = -1.0  # tau may have changed: recompute exp()

    def _start(self):
        u = self._u[0]  # the input is taken to have held its initial value for ever
        for j in range(self._n):
            self._buf[j] = u
        self._ud = u
        self._next_b = 0.0 if self._n else _INF

    def _set_out(self, i, v, where=None):
        self._T = self._u[1] if i < 0 else v

    def _out(self, i):
        return self._T

    def _sync(self, t):
        while self._next_b <= t + _EPS:
            j = self._ri
            self._ud = self._buf[j]  # the input of dead_time_s ago ...
            self._buf[j] = self._u[0]  # ... makes room for the input of now
            self._ri = j + 1 if j + 1 < self._n else 0
            self._k += 1
            self._next_b = self._k * self._h

    def _advance(self, s):
        ud = self._ud if self._n else self._u[0]
        target = self._u[1] + self.gain * ud
        if s != self._s_last:
            self._f = math.exp(-s / self.tau_s)
            self._s_last = s
        self._T = target + (self._T - target) * self._f


class DCMotor(Plant):
    """DC motor, armature voltage -> speed:
    L di/dt = V - R i - K w;  J dw/dt = K i - b w - load_torque.

    Linear, so it is discretised exactly (zero-order hold on V and load_torque):
    x' = Phi x + Gamma u with Phi = exp(A s) in closed form for 2x2 matrices and
    Gamma = A^-1 (Phi - I) B. Exact and stable for any step s, no sub-steps; Phi and
    Gamma are cached for the last step length."""

    TYPE = "dcmotor"
    inputs = ("voltage",)
    outputs = ("speed", "current")
    loads = ("load_torque",)
    LOAD_DEFAULTS = (0.0,)
    PARAMS = (("J", 0.01, "pos"), ("b", 0.1, "pos"), ("K", 0.01, "pos"), ("R", 1.0, "pos"),
              ("L", 0.5, "pos"), ("vmin", 0.0, "any"), ("vmax", 12.0, "any"))
    LIVE_PARAMS = ("J", "b", "K", "R", "L")

    def _setup(self):
        if not self.vmin < self.vmax:
            raise _bad("'vmin'", "must be < vmax (got %r >= %r)" % (self.vmin, self.vmax))
        self._lo[0], self._hi[0] = self.vmin, self.vmax
        self._w = 0.0
        self._i = 0.0

    def _refresh(self):
        # x = (i, w): dx/dt = A x + B (V, load_torque)
        self._a11, self._a12 = -self.R / self.L, -self.K / self.L
        self._a21, self._a22 = self.K / self.J, -self.b / self.J
        self._s_last = -1.0

    def _set_out(self, i, v, where=None):
        if i == 0:
            self._w = v
        elif i == 1:
            self._i = v

    def _out(self, i):
        return self._w if i == 0 else self._i

    def _discretise(self, s):
        p, g11, g12, g21, g22 = _zoh2(self._a11, self._a12, self._a21, self._a22, s)
        self._phi = p
        self._gam = (g11 / self.L, -g12 / self.J, g21 / self.L, -g22 / self.J)
        self._s_last = s

    def _advance(self, s):
        if s != self._s_last:
            self._discretise(s)
        p, g = self._phi, self._gam
        i, w, v, tl = self._i, self._w, self._u[0], self._u[1]
        self._i = p[0] * i + p[1] * w + g[0] * v + g[1] * tl
        self._w = p[2] * i + p[3] * w + g[2] * v + g[3] * tl


def _zoh2(a11, a12, a21, a22, s):
    """Phi = exp(A s) and A^-1 (Phi - I) of a 2x2 matrix A (det A != 0), in closed form:
    (Phi, g11, g12, g21, g22)."""
    half = 0.5 * (a11 + a22) * s  # exp(M) = e^half (cosh q I + sinh(q)/q (M - half I))
    d = half * half - (a11 * a22 - a12 * a21) * s * s  # q^2, q = eigenvalue spread / 2
    if -1e-3 < d < 1e-3:  # near-repeated eigenvalues: series of cosh(q), sinh(q)/q
        e = math.exp(half)
        c = e * (1.0 + d * (0.5 + d * (1.0 / 24.0 + d / 720.0)))
        sq = e * (1.0 + d * (1.0 / 6.0 + d * (1.0 / 120.0 + d / 5040.0)))
    elif d > 0.0:  # real eigenvalues (half +- q) * 1/s: no overflow since both < 0
        q = math.sqrt(d)
        e1, e2 = math.exp(half + q), math.exp(half - q)
        c, sq = 0.5 * (e1 + e2), 0.5 * (e1 - e2) / q
    else:  # complex pair
        q = math.sqrt(-d)
        e = math.exp(half)
        c, sq = e * math.cos(q), e * math.sin(q) / q
    diag = c - half * sq
    p11, p12 = diag + sq * a11 * s, sq * a12 * s
    p21, p22 = sq * a21 * s, diag + sq * a22 * s
    # Gamma = A^-1 (Phi - I) B; the caller multiplies by its B
    det = a11 * a22 - a12 * a21
    g11 = (a22 * (p11 - 1.0) - a12 * p21) / det
    g12 = (a22 * p12 - a12 * (p22 - 1.0)) / det
    g21 = (a11 * p21 - a21 * (p11 - 1.0)) / det
    g22 = (a11 * (p22 - 1.0) - a21 * p12) / det
    return (p11, p12, p21, p22), g11, g12, g21, g22


class SecondOrder(FOTD):
    """Second order plus dead time, possibly underdamped (a positioning stage on a flexible
    coupling, a thermal plant with two lags):
    y'' + 2 zeta wn y' + wn^2 y = wn^2 (gain * (drive(t - dead_time) + load)).

    Linear, so discretised exactly like dcmotor (zero-order hold, closed-form exp(A s));
    the dead time uses fotd's ring buffer."""

    TYPE = "second_order"
    inputs = ("drive",)
    outputs = ("y",)
    loads = ("load",)
    LOAD_DEFAULTS = (0.0,)
    PARAMS = (("gain", 1.0, "any"), ("wn_rad_s", 1.0, "pos"), ("zeta", 0.3, "pos"),
              ("dead_time_s", 0.0, "nonneg"), ("umin", 0.0, "any"), ("umax", 100.0, "any"))
    LIVE_PARAMS = ("gain", "wn_rad_s", "zeta")

    def _setup(self):
        if not self.umin < self.umax:
            raise _bad("'umin'", "must be < umax (got %r >= %r)" % (self.umin, self.umax))
        FOTD._setup(self)
        self._lo[0], self._hi[0] = self.umin, self.umax
        self._v = 0.0

    def _refresh(self):
        self._s_last = -1.0

    def _set_out(self, i, v, where=None):
        if i < 0:
            self._T = self.gain * self._u[1]
            self._v = 0.0
        else:
            self._T = v  # the rate starts at 0

    def _advance(self, s):
        if s != self._s_last:
            w = self.wn_rad_s
            self._phi, g11, g12, g21, g22 = _zoh2(0.0, 1.0, -w * w, -2.0 * self.zeta * w, s)
            self._gam = (g12 * w * w, g22 * w * w)  # B = (0, wn^2)
            self._s_last = s
        ud = self._ud if self._n else self._u[0]
        f = self.gain * (ud + self._u[1])
        p, g = self._phi, self._gam
        y, v = self._T, self._v
        self._T = p[0] * y + p[1] * v + g[0] * f
        self._v = p[2] * y + p[3] * v + g[1] * f


class TwoTank(Plant):
    """Two cascaded tanks, pump -> tank 1 -> tank 2 -> out:
    A1 dh1/dt = k*pump - a1 sqrt(2 g h1);  A2 dh2/dt = a1 sqrt(2 g h1) - valve*a2 sqrt(2 g h2)."""

    TYPE = "twotank"
    inputs = ("pump",)
    outputs = ("h1", "h2")
    loads = ("valve",)
    LOAD_DEFAULTS = (1.0,)
    PARAMS = (("A1", 28e-4, "pos"), ("A2", 32e-4, "pos"), ("a1", 7.1e-6, "pos"),
              ("a2", 5.7e-6, "pos"), ("k", 3.33e-6, "pos"), ("g", 9.81, "pos"),
              ("height", 0.2, "pos"), ("vmax", 10.0, "pos"))
    LIVE_PARAMS = ("A1", "A2", "a1", "a2", "k")

    def _setup(self):
        self._lo[0], self._hi[0] = 0.0, self.vmax
        self._lo[1], self._hi[1] = 0.0, 1.0
        self._h1 = 0.0
        self._h2 = 0.0

    def _refresh(self):
        r = math.sqrt(2.0 * self.g)
        self._c1 = self.a1 * r
        self._c2 = self.a2 * r
        t = math.sqrt(2.0 * 0.01 * self.height / self.g)
        self._hmax = 0.1 * t * min(self.A1 / self.a1, self.A2 / self.a2)

    def _set_out(self, i, v, where=None):
        if i >= 0 and not 0.0 <= v <= self.height:
            raise _bad(where, "must be within 0..height=%r (got %r)" % (self.height, v))
        if i == 0:
            self._h1 = v
        elif i == 1:
            self._h2 = v

    def _out(self, i):
        return self._h1 if i == 0 else self._h2

    def _d1(self, h1, q):
        d = (q - self._c1 * math.sqrt(h1)) / self.A1 if h1 > 0.0 else q / self.A1
        return 0.0 if d > 0.0 and h1 >= self.height else d  # a full tank spills over

    def _d2(self, h1, h2, c2):
        q12 = self._c1 * math.sqrt(h1) if h1 > 0.0 else 0.0
        d = (q12 - c2 * math.sqrt(h2)) / self.A2 if h2 > 0.0 else q12 / self.A2
        return 0.0 if d > 0.0 and h2 >= self.height else d

    def _advance(self, s):
        n = int(math.ceil(s / self._hmax - 1e-9))
        if n < 1:
            n = 1
        h = s / n
        hh = 0.5 * h
        H = self.height
        q = self.k * self._u[0]
        c2 = self._u[1] * self._c2
        x1, x2 = self._h1, self._h2
        for _ in range(n):
            k11 = self._d1(x1, q)
            k12 = self._d2(x1, x2, c2)
            y1, y2 = _clamp(x1 + hh * k11, H), _clamp(x2 + hh * k12, H)
            k21 = self._d1(y1, q)
            k22 = self._d2(y1, y2, c2)
            y1, y2 = _clamp(x1 + hh * k21, H), _clamp(x2 + hh * k22, H)
            k31 = self._d1(y1, q)
            k32 = self._d2(y1, y2, c2)
            y1, y2 = _clamp(x1 + h * k31, H), _clamp(x2 + h * k32, H)
            k41 = self._d1(y1, q)
            k42 = self._d2(y1, y2, c2)
            x1 = _clamp(x1 + h / 6.0 * (k11 + 2.0 * (k21 + k31) + k41), H)
            x2 = _clamp(x2 + h / 6.0 * (k12 + 2.0 * (k22 + k32) + k42), H)
        self._h1, self._h2 = x1, x2


def _clamp(x, hi):
    return 0.0 if x < 0.0 else hi if x > hi else x


TYPES = {"fotd": FOTD, "dcmotor": DCMotor, "twotank": TwoTank, "second_order": SecondOrder}


def make(spec, seed=1):
    """A plant from a config dict (see the top of this file and docs/plants.md);
    ValueError names the bad key and says why."""
    if not isinstance(spec, dict):
        raise ValueError("plant spec: must be a dict (got %r)" % (spec,))
    t = spec.get("type")
    cls = TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise _bad("'type'", "must be one of %s (got %r)" % (_names(sorted(TYPES)), t))
    return cls(spec, seed)
