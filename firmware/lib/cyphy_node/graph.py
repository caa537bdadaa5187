# The signal graph: standard blocks wired by the config, run in a declared order within a
# fixed-rate task, next to the node's loops (docs/config.md, "Blocks and tasks").
#
# Loaded only when the config has "blocks" or "tasks" (a node without them pays no RAM).
# A task's tick is a PLC scan: read every input channel its blocks use (an invalid reading
# is a sensor fault, which takes the node's outputs fail-safe like a loop's), then run its
# loops and blocks in the config's order, each block reading the values its inputs hold
# now (an input earlier in the order: this pass's value). A loop's output that goes to
# no channel is a Wire (a virtual actuator) that blocks and other loops read.
#
# Tick code follows docs/control.md, "Rules for tick code": ints in milli-units within
# 31 bits, no allocation, small frames (MicroPython heap-allocates the frame of a function
# needing more than about 11 words), signed constants as SGain.
from .fixed import VAL_MAX, VAL_MIN, Gain, to_fixed
from .blocks import LowPass, Ramp
from .node import ControlLoop
from .pid import SAT_UP, SAT_DOWN
from . import faults as _f

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_F_SENSOR = const(1)        # node.F_SENSOR (a scanned input out of its valid range)
_F_EXC = const(2)           # node.F_EXC (a block raised: latched until clear())
_F_PEER = const(16)         # node.F_PEER
_OWN = const(3)
_VMAX = const((1 << 29) - 1)  # fixed.VAL_MAX / VAL_MIN as this module's constants
_VMIN = const(-((1 << 29) - 1))


def _clip(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


def _sat(v):
    # into the signal range (the sum of two signals is still a small int)
    return _VMIN if v < _VMIN else (_VMAX if v > _VMAX else v)


class SGain:
    """A signed constant: Gain (non-negative) and a sign; mul(x) = round(x * g)."""

    def __init__(self, g):
        self.neg = g < 0
        self.g = Gain(-g if self.neg else g)

    def mul(self, x):
        # saturated to the signal range first: Gain.mul saturates at SMALL_MIN, whose
        # negation is no small int (a big int: an allocation on ESP32)
        v = self.g.mul(x)
        v = _VMIN if v < _VMIN else (_VMAX if v > _VMAX else v)
        return -v if self.neg else v


def mul(a, b):
    """a * b in milli-units (a, b milli-units), saturated to the signal range; exact to
    one milli-unit, no intermediate beyond 2**30 (a = q * 1000 + r, b = bh * 1000 + bl:
    q b <= VAL_MAX is checked first, r bh < 1000 * 2**29 / 1000)."""
    neg = (a < 0) != (b < 0)
    a = -a if a < 0 else a
    b = -b if b < 0 else b
    if a == 0 or b == 0:
        return 0
    q = a // 1000
    if q and q > VAL_MAX // b:
        return VAL_MIN if neg else VAL_MAX
    v = q * b + (a - q * 1000) * (b // 1000)
    v += ((a - q * 1000) * (b % 1000) + 500) // 1000
    v = VAL_MAX if v > VAL_MAX else v
    return -v if neg else v


def div(a, b):
    """a / b in milli-units (1000 * a / b, rounded), saturated; b = 0 saturates toward
    a's sign (0 / 0 = 0). The fraction comes from a 20-bit binary long division; no
    intermediate beyond 2**30."""
    neg = (a < 0) != (b < 0)
    a = -a if a < 0 else a
    b = -b if b < 0 else b
    if b == 0:
        return 0 if a == 0 else (VAL_MIN if neg else VAL_MAX)
    q = a // b
    if q > VAL_MAX // 1000:
        return VAL_MIN if neg else VAL_MAX
    v = q * 1000 + _frac(a - q * b, b)
    return -v if neg else v


def _frac(r, b):
    # round(1000 * r / b) for 0 <= r < b <= 2**29, through F = floor(2**20 r / b) (binary
    # long division): F * 1000 < 2**30, and the floor costs under 0.001 milli-units
    f = 0
    k = 0
    while k < 20:
        r <<= 1                 # < 2 b <= 2**30 - 2: a small int
        f <<= 1
        if r >= b:
            r -= b
            f |= 1
        k += 1
    return (f * 1000 + 524288) >> 20


class Wire:
    """A loop's output that goes to no channel (the outer loop of a cascade, a selector's
    input): the interface of io.Output without hardware. Its fail-safe is to hold the
    value it has (the real outputs downstream have their own fail-safe values)."""

    kind = "signal"

    def __init__(self, name, lo, hi, units, value):
        self.name = name
        self.units = units
        self.lo = to_fixed(lo)
        self.hi = to_fixed(hi)
        self.value = self.failsafe = _clip(to_fixed(value), self.lo, self.hi)
        self.raw = 0

    def write(self, u):
        u = self.lo if u < self.lo else (self.hi if u > self.hi else u)
        self.value = u
        self.failsafe = u

    def safe(self):
        pass


class LinkedLoop(ControlLoop):
    """A loop the graph feeds (every loop of a node with a graph): its setpoint from a
    signal (remote), a feedforward, and, as the outer loop of a cascade, the inner loop
    whose setpoint its output is. ControlLoop calls _links() before the controller runs."""

    def __init__(self, idx, lc, inp, act, log):
        ControlLoop.__init__(self, idx, lc, inp, act, log)
        self.remote = None      # the setpoint's source (setpoint_from)
        self.ffsrc = None       # the feedforward's source
        self.inner = None       # the loop whose setpoint this loop's output is (cascade)
        self._trk = 0           # 1 while this outer loop tracks an inner not following

    def _links(self):
        # The signal graph's inputs to this loop, before its controller's update.
        p = self.pid
        if p is None:
            self.onoff.set_setpoint(self.remote.value)
            return
        if self.remote is not None:
            if p.is_auto:       # remote setpoint, within the sensor's valid range
                v = self.remote.value
                p.set_setpoint(self.inp.vmin if v < self.inp.vmin else (
                    self.inp.vmax if v > self.inp.vmax else v))
            else:               # manual: the setpoint follows the measurement (bumpless)
                p.set_setpoint(self.y)
        if self.ffsrc is not None:
            p.set_ff(self.ffsrc.value)
        if self.inner is not None:
            self._cascade()

    def _cascade(self):
        # This loop's output is the inner loop's setpoint. While the inner follows it
        # (auto, no fault, no tune), this PID integrates only where the inner can still
        # act (limits_hit); otherwise it tracks the inner's setpoint (in manual, the
        # inner's measurement), so both hand-overs back are bumpless.
        c = self.inner
        p = self.pid
        if c.pid.is_auto and c.tuner is None:
            p.sat = c.limits_hit()
            if self._trk:
                self._trk = 0
                if self.auto:
                    p.set_auto()
        else:
            p.sat = 0
            self._trk = 1
            if p.is_auto:
                p.set_manual()
            p.track(c.pid.setpoint)
            self.manual_out = p.out

    def limits_hit(self):
        # For the outer loop of a cascade: the directions (pid.SAT_UP, SAT_DOWN) in which
        # a higher or lower setpoint of this loop cannot move its output further.
        q = self.pid
        hi = q.out >= q.out_max
        lo = q.out <= q.out_min
        if q.reverse:
            hi, lo = lo, hi
        return (SAT_UP if hi else 0) | (SAT_DOWN if lo else 0)

    def back(self, v):
        # A block downstream passed on v instead of this loop's output (a selector chose
        # another loop's, a limiter cut it): the PID continues from v.
        self.pid.retrack(v)

    def prepare(self, key, value, gains):
        if key == "setpoint" and self.remote is not None:
            raise ValueError('%s.setpoint follows "%s" (setpoint_from in the config): change '
                             'that signal, or put %s in manual' % (
                                 self.name, self.remote.name, self.name))
        return ControlLoop.prepare(self, key, value, gains)


class Block:
    """A block's output (`value`, milli-units, within `range`) and what a loop reading it
    as its sensor needs (read, ok, vmin, vmax, units)."""

    kind = "block"

    def __init__(self, bc):
        self.name = bc.name
        self.type = bc.type
        self.units = bc.get("units") or ""
        r = bc.get("range")
        self.vmin = VAL_MIN if r is None else to_fixed(r[0])
        self.vmax = VAL_MAX if r is None else to_fixed(r[1])
        self.value = 0
        self.raw = 0
        self.act = None             # an io.Output this block drives ("actuator")
        self.task = None
        self.src = ()               # input objects (value attribute), resolved by Graph
        # per input, what takes back a value this block passed on instead of the input's
        # (back()): a PID loop, a limiter or selector block in between, or None
        self.feeds = ()

    def read(self):
        return self.value

    def ok(self, v):
        return self.vmin <= v <= self.vmax

    def put(self, v):
        # the block's output: clipped to its range, driven to its actuator unless the
        # task holds the outputs fail-safe
        v = self.vmin if v < self.vmin else (self.vmax if v > self.vmax else v)
        self.value = v
        if self.act is not None and not self.task.fault:
            self.act.write(v)
        return v

    def track(self, v):
        # back-calculation: the PID loops upstream (directly, or through limiters and
        # selectors) continue from what this block passed on (a selector's choice, a
        # limiter's cut), so none winds up
        i = 0
        while i < len(self.feeds):
            f = self.feeds[i]
            if f is not None:
                f.back(v)
            i += 1

    def back(self, v):
        # v went on downstream instead of this block's value (limit, select: pass it up)
        self.track(v)

    def params(self):
        return {}

    # parameters node.set_param may change: key -> (lo, hi) allowed
    SETTABLE = {}

    def setter(self, key, v):
        """A function applying parameter key = v (checked now: ValueError names what is
        wrong; KeyError for a parameter this block has not)."""
        rng = self.SETTABLE.get(key)
        if rng is None:
            raise KeyError(key)
        if not rng[0] <= v <= rng[1]:
            raise ValueError("%s.%s must be from %s to %s, got %s" % (self.name, key, rng[0],
                                                                       rng[1], v))
        return lambda: self._set(key, v)


_GAIN = (-1000000.0, 1000000.0)
_ENG = (-536870.0, 536870.0)


class FeedForward(Block):
    """gain * LL(input) + bias, LL = (lead s + 1) / (lag s + 1) (1 without lag): the
    static or dynamic compensation of a measured disturbance. Written as lead/lag times
    the input plus (1 - lead/lag) times its first-order low-pass (lag), exactly
    discretised (blocks.LowPass)."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.gain = bc.gain
        self.bias_u = bc.bias
        self.lead_s = bc.lead_s
        self.lag_s = bc.lag_s
        self._k = SGain(bc.gain)
        self._b = to_fixed(bc.bias)
        if bc.lag_s > 0:
            self._lp = LowPass(tau=bc.lag_s, dt=dt)
            self._d = SGain(bc.lead_s / bc.lag_s)            # direct part
            self._l = SGain(1.0 - bc.lead_s / bc.lag_s)      # through the low-pass
        else:
            self._lp = None

    def tick(self):
        x = self.src[0].value
        if self._lp is not None:
            x = self._leadlag(x)
        self.put(_sat(self._k.mul(x)) + self._b)

    def _leadlag(self, x):
        y = _sat(self._l.mul(self._lp.update(x)))
        return _sat(_sat(self._d.mul(x)) + y)

    def params(self):
        return {"gain": self.gain, "bias": self.bias_u, "lead_s": self.lead_s,
                "lag_s": self.lag_s}

    SETTABLE = {"gain": _GAIN, "bias": _ENG}

    def _set(self, key, v):
        if key == "gain":
            self._k = SGain(v)
            self.gain = v
        else:
            self._b = to_fixed(v)
            self.bias_u = v


class Ratio(Block):
    """ratio * input + bias (ratio control: a flow kept at a ratio of a wild flow)."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.set_ratio(bc.ratio)
        self.bias_u = bc.bias
        self._b = to_fixed(bc.bias)

    def set_ratio(self, r):
        self._k = SGain(r)
        self.ratio = r

    def tick(self):
        self.put(_sat(self._k.mul(self.src[0].value)) + self._b)

    def params(self):
        return {"ratio": self.ratio, "bias": self.bias_u}

    SETTABLE = {"ratio": _GAIN, "bias": _ENG}

    def _set(self, key, v):
        if key == "ratio":
            self.set_ratio(v)
        else:
            self._b = to_fixed(v)
            self.bias_u = v


class Limit(Block):
    """The input clipped to [min, max] (the block's range); a PID loop feeding it directly
    continues from the clipped value (no windup against the limit)."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.vmin = to_fixed(bc.min)
        self.vmax = to_fixed(bc.max)

    def tick(self):
        x = self.src[0].value
        v = self.put(x)
        if v != x:
            self.track(v)

    def params(self):
        return {"min": self.vmin / 1000, "max": self.vmax / 1000}

    SETTABLE = {"min": _ENG, "max": _ENG}

    def setter(self, key, v):
        lo, hi = (v, self.vmax / 1000) if key == "min" else (self.vmin / 1000, v)
        if key in self.SETTABLE and not lo < hi:
            raise ValueError("%s: min must stay below max (min %s, max %s)" % (self.name, lo, hi))
        return Block.setter(self, key, v)

    def _set(self, key, v):
        if key == "min":
            self.vmin = to_fixed(v)
        else:
            self.vmax = to_fixed(v)


class RateLimit(Block):
    """The input followed at most up_per_s rising and down_per_s falling (units/s);
    a PID loop feeding it directly continues from the limited value."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.up = bc.up_per_s
        self.down = bc.down_per_s
        self.dt = dt
        self._up = Ramp(bc.up_per_s, dt)
        self._dn = Ramp(bc.down_per_s, dt)
        self._fresh = True
        self.start = None           # the first value: the actuator's it drives (Graph.link)

    def tick(self):
        x = self.src[0].value
        if self._fresh:
            # start from where the actuator it drives (directly or through other blocks)
            # is at boot, its fail-safe value; without one the first value passes
            self._fresh = False
            self._up.value = self._dn.value = x if self.start is None else self.start
        r = self._up if x > self.value else self._dn
        v = self.put(r.update(x))
        self._up.value = self._dn.value = v
        if v != x:
            self.track(v)

    def back(self, v):
        self._up.value = self._dn.value = v    # continue from what went on
        self.track(v)

    def params(self):
        return {"up_per_s": self.up, "down_per_s": self.down}

    SETTABLE = {"up_per_s": (1e-9, 536870.0), "down_per_s": (1e-9, 536870.0)}

    def _set(self, key, v):
        r = self._up if key == "up_per_s" else self._dn
        r.set_rate(v, self.dt)
        if key == "up_per_s":
            self.up = v
        else:
            self.down = v


class Select(Block):
    """The lowest ("min") or highest ("max") input: override control. The PID loops among
    the inputs continue from the value chosen (back-calculation), so the one not in
    control takes over without windup when its demand crosses the other's."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.low = bc.op == "min"
        self.chosen = 0                 # index of the input chosen

    def tick(self):
        s = self.src
        k = 0
        i = 1
        while i < len(s):
            if (s[i].value < s[k].value) == self.low and s[i].value != s[k].value:
                k = i
            i += 1
        self.chosen = k
        self.track(self.put(s[k].value))

    def params(self):
        return {"op": "min" if self.low else "max"}


class Math(Block):
    """sum: sum of gains[i] * inputs[i] + bias; mul: inputs[0] * inputs[1]; div:
    inputs[0] / inputs[1] (0 divides to the range's end, 0 / 0 = 0). Saturating."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.op = bc.op
        self.bias_u = bc.get("bias") or 0
        self._b = to_fixed(self.bias_u)
        g = bc.get("gains")
        self.gains = g
        self._g = tuple([SGain(x) for x in g]) if g else ()
        self.tick = self._sum if self.op == "sum" else (
            self._mul if self.op == "mul" else self._div)

    def _sum(self):
        s = self.src
        v = self._b
        i = 0
        while i < len(s):
            v = _sat(v + _sat(self._g[i].mul(s[i].value)))
            i += 1
        self.put(v)

    def _mul(self):
        self.put(mul(self.src[0].value, self.src[1].value))

    def _div(self):
        self.put(div(self.src[0].value, self.src[1].value))

    def params(self):
        d = {"op": self.op}
        if self.op == "sum":
            d["gains"], d["bias"] = self.gains, self.bias_u
        return d


class Segment:
    # one actuator of a split range: input [x0, x1] mapped linearly onto [y0, y1]
    def __init__(self, sc, act):
        self.act = act
        self.x0, self.x1 = to_fixed(sc.input[0]), to_fixed(sc.input[1])
        self.y0, self.y1 = to_fixed(sc.output[0]), to_fixed(sc.output[1])
        self._neg = self.y1 < self.y0
        self._k = Gain(abs(sc.output[1] - sc.output[0]) / float(sc.input[1] - sc.input[0]))

    def value(self, x):
        d = self._k.mul(_clip(x, self.x0, self.x1) - self.x0)
        return self.y0 - d if self._neg else self.y0 + d


class SplitRange(Block):
    """One input (a loop's output) over several actuators, each taking a segment of the
    input's range mapped onto its own (heating and cooling, two valves in sequence)."""

    def __init__(self, bc, dt):
        Block.__init__(self, bc)
        self.segments = ()          # Segments, built by Graph with their outputs

    def tick(self):
        x = self.put(self.src[0].value)
        if not self.task.fault:
            i = 0
            while i < len(self.segments):
                sg = self.segments[i]
                sg.act.write(sg.value(x))
                i += 1

    def params(self):
        return {"segments": len(self.segments)}


class Port:
    """One output of a user block, a signal of its own ("block.output")."""

    kind = "block"

    def __init__(self, name, units, vmin, vmax):
        self.name = name
        self.units = units
        self.vmin = vmin
        self.vmax = vmax
        self.value = 0
        self.act = None

    def read(self):
        return self.value

    def ok(self, v):
        return self.vmin <= v <= self.vmax


class UserBlock(Block):
    """The user's own code in the control pass (docs/user-blocks.md): module
    cyphy_user.<module> on the node, its class Block(params, dt) and its tick(x, y), x the
    inputs and y the outputs as array('i') in milli-units, both preallocated here. Its
    first output is also the block's own value; an exception in it latches the task's
    exception fault (outputs fail-safe), like any block's."""

    def __init__(self, bc, dt):
        from array import array
        Block.__init__(self, bc)
        self.module = bc.module
        self.budget_us = bc.budget_us
        try:
            mod = getattr(__import__("cyphy_user." + bc.module), bc.module)
        except ImportError:
            raise ValueError('user block "%s": no module /lib/cyphy_user/%s on the node '
                             '(cyphy provision sends it with the config)' % (bc.name, bc.module))
        try:
            self.impl = mod.Block(dict(bc.params), dt)
        except Exception as e:  # noqa: BLE001 - the node reports it as a config error
            raise ValueError('user block "%s" (%s.py) did not start: %s: %s'
                             % (bc.name, bc.module, type(e).__name__, e))
        self.x = array("i", [0] * len(bc.inputs))
        self.y = array("i", [0] * len(bc.outputs))
        self.ports = tuple([Port(bc.name + "." + o, self.units, self.vmin, self.vmax)
                            for o in bc.outputs])
        # its numeric params, settable at run time when the module's Block has set()
        self.pvals = None
        if hasattr(self.impl, "set"):
            self.pvals = {}
            for k in bc.params:
                v = bc.params[k]
                if isinstance(v, (int, float)) and v is not True and v is not False:
                    self.pvals[k] = v

    def tick(self):
        self._in()
        self.impl.tick(self.x, self.y)
        self._out()

    def _in(self):
        s = self.src
        x = self.x
        i = 0
        while i < len(s):
            x[i] = s[i].value
            i += 1

    def _out(self):
        i = 0
        while i < len(self.ports):
            self._put1(self.ports[i], self.y[i])
            i += 1
        self.value = self.ports[0].value

    def _put1(self, p, v):
        v = p.vmin if v < p.vmin else (p.vmax if v > p.vmax else v)
        p.value = v
        if p.act is not None and not self.task.fault:
            p.act.write(v)

    def params(self):
        d = {"module": self.module}
        if self.pvals:
            d.update(self.pvals)
        for p in self.ports:
            d[p.name.partition(".")[2]] = p.value / 1000
        return d

    def setter(self, key, v):
        # A numeric parameter of the config's params, when the module's Block has
        # set(name, value): called between two control passes, never inside tick; the
        # module refuses a value by raising (ValueError names it).
        if self.pvals is None or key not in self.pvals:
            raise KeyError(key)
        f = self.impl.set

        def apply():
            try:
                f(key, v)
            except Exception as e:  # noqa: BLE001 - the user's refusal, reported as such
                raise ValueError('user block "%s" (%s.py) refused %s = %s: %s'
                                 % (self.name, self.module, key, v, e))
            self.pvals[key] = v
        return apply


TYPES = {"feedforward": FeedForward, "ratio": Ratio, "limit": Limit,
         "rate_limit": RateLimit, "select": Select, "math": Math,
         "split_range": SplitRange, "user": UserBlock}


class Task:
    """Loops and blocks run in the config's order at one rate (one scheduler entry).
    Its fault bits are a loop's (node.py): a scanned input out of range, a block's
    exception, comms lost, stopped, another loop's fault; while any is set, the outputs
    its blocks drive are at their fail-safe values."""

    def __init__(self, idx, name, rate_hz, items, scan, outs, log):
        self.idx = idx
        self.name = name
        self.rate_hz = rate_hz
        self.period_us = (1000000 + rate_hz // 2) // rate_hz
        self.items = tuple(items)
        self.blocks = tuple([b for b in items if isinstance(b, Block)])
        self.loops = tuple([b for b in items if not isinstance(b, Block)])
        self.scan = tuple(scan)
        self.outs = tuple(outs)
        self.log = log
        self.fault = 0
        self.busy = 0
        self.ran = 0
        self.ticks = 0
        self.last_exc = None
        self.bad = None             # the name of the scanned input out of range
        self.sloop = None

    def tick(self):
        self.ran = 1
        self.busy = 1
        self.ticks += 1
        self._scan()
        if self.fault:
            self._hold()
        self._run()
        self.busy = 0

    def _scan(self):
        i = 0
        while i < len(self.scan):
            c = self.scan[i]
            if not c.ok(c.read()):
                self._bad(c)
                return
            i += 1
        if self.fault & _F_SENSOR:
            self.fault &= ~_F_SENSOR

    def _bad(self, c):
        if not self.fault & _F_SENSOR:
            self.fault |= _F_SENSOR
            self.bad = c.name
            self.log.record(self.idx, _f.SENSOR, c.value)

    def _run(self):
        # after a block's exception (latched) only the loops run: they hold fail-safe
        items = self.loops if self.fault & _F_EXC else self.items
        i = 0
        while i < len(items):
            items[i].tick()
            i += 1

    def _hold(self):
        i = 0
        while i < len(self.outs):
            self.outs[i].safe()
            i += 1

    def _exc(self, e):
        self.last_exc = e
        if not self.fault & _F_EXC:
            self.fault |= _F_EXC
            self.log.record(self.idx, _f.EXCEPTION, 0)
        self.safe()

    def peer(self, bad):
        if bad and not self.fault & _OWN:
            if not self.fault & _F_PEER:
                self.fault |= _F_PEER
                self.safe()
        elif self.fault & _F_PEER and not bad:
            self.fault &= ~_F_PEER

    def safe(self):
        self._hold()

    def state(self):
        return {b.name: b.value / 1000 for b in self.blocks}


class Graph:
    """Built by Node from the config: Blocks first (a loop may read one as its sensor),
    then Wires for loops without an actuator channel; link() once the loops exist."""

    def __init__(self, config, channels):
        self.cfg = config
        self.channels = channels
        self.blocks = {}
        self.wires = {}
        self.tasks = []
        self.task_of = {}               # loop or block name -> task config
        for t in config.get("tasks") or ():
            for n in t.order:
                self.task_of[n] = t
        self.ports = {}                 # a user block's outputs by "block.output"
        for bc in config.get("blocks") or ():
            t = self.task_of[bc.name]
            b = self.blocks[bc.name] = TYPES[bc.type](bc, 1.0 / t.rate_hz)
            for p in getattr(b, "ports", ()):
                self.ports[p.name] = p
        for lc in config.loops:
            if lc.get("actuator") is None:
                lo, hi = lc.controller.out_min, lc.controller.out_max
                units = lc.get("output_units") or ""
                start = lo
                inner = self._inner_of(lc.name)
                if inner is not None:       # a cascade's outer loop starts at the inner's setpoint
                    start = inner.controller.setpoint
                self.wires[lc.name] = Wire(lc.name, lo, hi, units, _clip(start, lo, hi))

    def _inner_of(self, name):
        for lc in self.cfg.loops:
            if lc.get("setpoint_from") == name:
                return lc
        return None

    def loop(self, idx, lc, log):
        """The node's loop for config loop lc: its sensor a channel or a block, its
        actuator a channel or a Wire."""
        a = lc.get("actuator")
        return LinkedLoop(idx, lc, self.channels.get(lc.sensor) or self.ports.get(lc.sensor)
                          or self.blocks[lc.sensor],
                          self.channels[a] if a is not None else self.wires[lc.name], log)

    def _source(self, name, loops):
        if name in self.ports:
            return self.ports[name]
        if name in self.blocks:
            return self.blocks[name]
        if name in loops:
            return loops[name].act
        return self.channels[name]

    def _downstream_act(self, b, depth=0):
        # the first actuator b's value reaches through the blocks reading it
        if b.act is not None:
            return b.act
        for c in self.blocks.values():
            if b in c.src and depth < 8:
                if isinstance(c, SplitRange):
                    continue
                a = self._downstream_act(c, depth + 1)
                if a is not None:
                    return a
        return None

    def _feed(self, name, loops):
        # who takes back a value passed on instead of this input's (Block.track)
        if name in loops:
            return loops[name] if loops[name].pid is not None else None
        b = self.blocks.get(name)
        return b if isinstance(b, (Limit, RateLimit, Select)) else None

    def link(self, node):
        """Resolve every name, wire remote setpoints, feedforwards and cascades, build the
        tasks and add them to node.sched. Returns the loops run by tasks."""
        loops = {lp.name: lp for lp in node.loops}
        for bc in self.cfg.get("blocks") or ():
            b = self.blocks[bc.name]
            names = bc.get("inputs") or [bc.input]
            b.src = tuple([self._source(n, loops) for n in names])
            b.feeds = tuple([self._feed(n, loops) for n in names])
            if bc.get("actuator") is not None:
                b.act = self.channels[bc.actuator]
            if bc.type == "split_range":
                b.segments = tuple([Segment(s, self.channels[s.actuator]) for s in bc.outputs])
            if bc.type == "user":
                for o, ch in bc.actuators.items():
                    self.ports[bc.name + "." + o].act = self.channels[ch]
        for b in self.blocks.values():
            if isinstance(b, RateLimit):
                a = self._downstream_act(b)
                b.start = None if a is None else a.value
        for lc in self.cfg.loops:
            lp = loops[lc.name]
            r = lc.get("setpoint_from")
            if r is not None:
                lp.remote = self._source(r, loops)
                if r in loops:
                    loops[r].inner = lp
            f = lc.get("feedforward")
            if f is not None:
                lp.ffsrc = self._source(f, loops)
        for lp in node.loops:
            lp.links = 1 if (lp.remote is not None or lp.ffsrc is not None
                             or lp.inner is not None) else 0
        in_tasks = set()
        for i, t in enumerate(self.cfg.get("tasks") or ()):
            items = [self.blocks[n] if n in self.blocks else loops[n] for n in t.order]
            scan = []
            outs = []
            for b in items:
                if not isinstance(b, Block):
                    in_tasks.add(b.name)
                    continue
                for s in b.src:
                    if getattr(s, "kind", "") in ("adc", "din") and s not in scan:
                        scan.append(s)
                if b.act is not None:
                    outs.append(b.act)
                if isinstance(b, SplitRange):
                    outs.extend([sg.act for sg in b.segments])
                for p in getattr(b, "ports", ()):
                    if p.act is not None:
                        outs.append(p.act)
            task = Task(len(node.loops) + i, t.name, t.rate_hz, items, scan, outs, node.log)
            for b in items:
                if isinstance(b, Block):
                    b.task = task
            task.sloop = node.sched.add(task, t.rate_hz, t.name)
            for b in items:
                if not isinstance(b, Block):
                    b.sloop = task.sloop
            self.tasks.append(task)
        # the config (every section's objects: several KB on a WROOM) is not needed once
        # linked; held here it would stay for the node's life
        self.cfg = self.task_of = None
        return in_tasks

    def signals(self):
        """[(name, object with .value)]: each block (a user block's outputs each, when it
        has several), by name, for telemetry (Node.signals)."""
        out = []
        for name in sorted(self.blocks):
            b = self.blocks[name]
            ports = getattr(b, "ports", ())
            out += [(p.name, p) for p in ports] if len(ports) > 1 else [(name, b)]
        return out

    def setter(self, path, value):
        """The function applying block parameter path ("block.param") = value, checked
        now (Node.set_param): KeyError for no such parameter, ValueError if refused."""
        name, _, key = path.partition(".")
        b = self.blocks.get(name)
        if b is None or not key:
            raise KeyError(path)
        return b.setter(key, value)

    def state(self):
        """{block: {"type", "value", "units", params...}} (REPL, protocol; allocates)."""
        d = {}
        for name in self.blocks:
            b = self.blocks[name]
            e = {"type": b.type, "value": b.value / 1000, "units": b.units}
            e.update(b.params())
            d[name] = e
        return d

