# Config validation of the signal graph: "blocks", "tasks", and the loop keys that wire a
# loop into it (setpoint_from, feedforward, a block as sensor, no actuator channel).
# docs/config.md, "Blocks and tasks". Loaded by config.validate only for a config that has
# blocks or tasks, on the host (cyphy check / provision) and on a node validating its own
# /config.json; errors are config.ConfigError with the field's path, as everywhere.
from .config import (ConfigError, OUTPUTS, DEV_OUTPUTS, PID_OUT, _choice, _fields, _int, _list, _name, _num,
                     _opt, _range, _show, _text, _typed, _within)

MAX_BLOCKS = 32
MAX_TASKS = 4
MAX_INPUTS = 8
GAIN = 1000000          # |gain|, |ratio| at most this

# type -> (required keys, optional keys) besides name and type
_KEYS = {
    "feedforward": (("input", "gain"), ("bias", "lead_s", "lag_s")),
    "ratio": (("input", "ratio"), ("bias",)),
    "limit": (("input", "min", "max"), ()),
    "rate_limit": (("input", "up_per_s"), ("down_per_s",)),
    "select": (("inputs", "op"), ()),
    "math": (("inputs", "op"), ("gains", "bias")),
    "split_range": (("input", "outputs"), ()),
    "user": (("module",), ("inputs", "outputs", "params", "actuators", "budget_us")),
}
_COMMON = ("range", "units", "actuator")
LOOP_KEYS = ("setpoint_from", "feedforward", "output_units")


class Graph:
    """Phase 1 (blocks' and tasks' own fields) when built; loops then ask it about names
    (sensor, wire); check() resolves every reference once the loops are known."""

    LOOP_KEYS = LOOP_KEYS

    @staticmethod
    def signal(v, path):
        return signal(v, path)

    def __init__(self, d, chans):
        self.chans = chans
        raw = _list(_opt(d, "blocks", []), "blocks", MAX_BLOCKS)
        self.blocks = []
        self.by_name = {}
        for i in range(len(raw)):
            b = _block(raw[i], "blocks[%d]" % i)
            if b["name"] in self.by_name or b["name"] in chans:
                raise ConfigError("blocks[%d].name" % i, 'duplicate name "%s" (blocks, channels '
                                  'and loops share one namespace of signals)' % b["name"])
            self.by_name[b["name"]] = i
            self.blocks.append(b)
        raw = _list(_opt(d, "tasks", []), "tasks", MAX_TASKS)
        self.tasks = []
        self.task_of = {}           # name -> (task index, position in its order)
        for i in range(len(raw)):
            t = _task(raw[i], "tasks[%d]" % i)
            if t["name"] in [x["name"] for x in self.tasks]:
                raise ConfigError("tasks[%d].name" % i, 'duplicate name "%s"' % t["name"])
            for k in range(len(t["order"])):
                n = t["order"][k]
                if n in self.task_of:
                    raise ConfigError("tasks[%d].order[%d]" % (i, k), '"%s" is already in the '
                                      'order of task "%s": each block and loop runs in one task'
                                      % (n, self.tasks[self.task_of[n][0]]["name"]
                                         if self.task_of[n][0] < i else t["name"]))
                self.task_of[n] = (i, k)
            self.tasks.append(t)
        raws = d.get("loops") if isinstance(d.get("loops"), list) else []
        self.raw_loops = [x for x in raws if isinstance(x, dict)]

    # ---- what the loops ask while config.validate reads them ----

    def block_of(self, name):
        """The block a signal name is ("block", or a user block's "block.output"), or None."""
        if not isinstance(name, str):
            return None
        base, _, out = name.partition(".")
        i = self.by_name.get(base)
        if i is None or (out and (self.blocks[i]["type"] != "user"
                                  or out not in self.blocks[i]["outputs"])):
            return None
        return self.blocks[i]

    def sensor(self, name, path):
        """A block as a loop's sensor: a pseudo channel (its range is the valid range)."""
        b = self.block_of(name)
        if b["range"] is None:
            raise ConfigError(path, 'block "%s" has no "range": a loop\'s sensor needs a valid '
                                    'range (give the block a "range": [min, max])' % name)
        return {"name": name, "kind": "block", "valid": b["range"], "units": b["units"]}

    def wire(self, d, path):
        """A loop without an actuator channel: its output is a signal over the controller's
        out_min..out_max (a cascade's outer: default the inner's setpoint range)."""
        c = d.get("controller")
        if not isinstance(c, dict) or c.get("type") != "pid":
            raise ConfigError(path + ".actuator", "is required (only a pid loop's output can "
                                                  "be a signal without an actuator channel)")
        inner = self._inner_valid(d.get("name"))
        lo = c.get("out_min", inner[0] if inner else None)
        hi = c.get("out_max", inner[1] if inner else None)
        for k, v in (("out_min", lo), ("out_max", hi)):
            if v is None:
                raise ConfigError(path + ".controller." + k, "is required for a loop without "
                                  "an actuator (the range of its output signal)")
            if k not in c and not PID_OUT[0] <= v <= PID_OUT[1]:
                raise ConfigError(path + ".controller." + k, "is required: the default, the "
                                  "inner loop's setpoint range [%s, %s], is beyond a pid's output "
                                  "limits (%s to %s)" % (inner[0], inner[1], PID_OUT[0], PID_OUT[1]))
            _num(v, path + ".controller." + k, PID_OUT[0], PID_OUT[1])
            if inner and not inner[0] <= v <= inner[1]:
                raise ConfigError(path + ".controller." + k, "must be within the setpoint range "
                                  "of the loop that follows it [%s, %s] (its sensor's valid "
                                  "range), got %s" % (_show(inner[0]), _show(inner[1]), _show(v)))
        if not lo < hi:
            raise ConfigError(path + ".controller.out_max", "must be above out_min (%s), got %s"
                              % (_show(lo), _show(hi)))
        units = _text(_opt(d, "output_units", inner[2] if inner else ""),
                      path + ".output_units", 16)
        return {"name": d.get("name"), "kind": "signal", "range": [lo, hi], "units": units}

    def _inner_valid(self, name):
        # the setpoint range (sensor's valid range, units) of the loop that follows `name`
        for lp in self.raw_loops:
            if lp.get("setpoint_from") == name and isinstance(name, str):
                s = lp.get("sensor")
                ch = self.chans.get(s) if isinstance(s, str) else None
                if ch is not None and "valid" in ch:
                    return ch["valid"][0], ch["valid"][1], ch.get("units", "")
                if isinstance(s, str) and s in self.by_name:
                    b = self.blocks[self.by_name[s]]
                    if b["range"] is not None:
                        return b["range"][0], b["range"][1], b["units"]
        return None

    def rate(self, d, path):
        """A loop's rate: its task's (rate_hz may be left out, or must agree)."""
        name = d.get("name")
        t = self.task_of.get(name) if isinstance(name, str) else None
        if t is None:
            return None
        r = self.tasks[t[0]]["rate_hz"]
        if "rate_hz" in d and d["rate_hz"] != r:
            raise ConfigError(path + ".rate_hz", 'must be %d, the rate of its task "%s", or be '
                              'left out; got %s' % (r, self.tasks[t[0]]["name"], _show(d["rate_hz"])))
        return r

    # ---- phase 3: every reference, once channels, loops and blocks are known ----

    def check(self, cfg):
        loops = {lp["name"]: lp for lp in cfg["loops"]}
        chans = self.chans
        for i in range(len(cfg["loops"])):
            if cfg["loops"][i]["name"] in chans:
                raise ConfigError("loops[%d].name" % i, 'duplicate name "%s": a channel has it '
                                  '(channels, blocks and loops share one namespace of signals)'
                                  % cfg["loops"][i]["name"])
        for i in range(len(self.blocks)):
            n = self.blocks[i]["name"]
            if n in loops:
                raise ConfigError("blocks[%d].name" % i, 'duplicate name "%s": a loop has it '
                                  '(blocks, channels and loops share one namespace)' % n)
            if n not in self.task_of:
                raise ConfigError("blocks[%d]" % i, 'block "%s" is in no task\'s "order": add '
                                  'it where it should run' % n)
        for i in range(len(self.tasks)):
            t = self.tasks[i]
            if t["name"] in loops:
                raise ConfigError("tasks[%d].name" % i, '"%s" is a loop\'s name' % t["name"])
            for k in range(len(t["order"])):
                n = t["order"][k]
                if n not in loops and n not in self.by_name:
                    raise ConfigError("tasks[%d].order[%d]" % (i, k), 'no block or loop "%s" '
                                      '(blocks: %s; loops: %s)' % (
                                          n, ", ".join([b["name"] for b in self.blocks]) or "none",
                                          ", ".join(sorted(loops))))
        driven = {lp["actuator"]: 'loop "%s"' % lp["name"] for lp in cfg["loops"]
                  if lp.get("actuator")}
        read = set()
        for i in range(len(self.blocks)):
            b = self.blocks[i]
            p = "blocks[%d]" % i
            if b["type"] == "user" and b["budget_us"] is None:
                # default: a fifth of its task's period
                b["budget_us"] = 200000 // self.tasks[self.task_of[b["name"]][0]]["rate_hz"]
            ins = b["inputs"] if "inputs" in b else [b["input"]]
            key = "inputs" if "inputs" in b else "input"
            for k in range(len(ins)):
                q = "%s.%s[%d]" % (p, key, k) if key == "inputs" else p + ".input"
                self._source(ins[k], q, b["name"], loops)
                read.add(ins[k])
            acts = [(p + ".actuator", b.get("actuator"))]
            if b["type"] == "user":
                acts = [("%s.actuators.%s" % (p, k), b["actuators"][k])
                        for k in sorted(b["actuators"])]
            if b["type"] == "split_range":
                acts = [("%s.outputs[%d].actuator" % (p, k), s["actuator"])
                        for k, s in enumerate(b["outputs"])]
            for q, a in acts:
                if a is None:
                    continue
                ch = chans.get(a)
                if ch is None or ch["kind"] not in OUTPUTS + DEV_OUTPUTS:
                    raise ConfigError(q, "must name an output channel (%s), got %s" % (
                        ", ".join(sorted([c for c in chans
                                          if chans[c]["kind"] in OUTPUTS + DEV_OUTPUTS]))
                        or "none declared", _show(a)))
                if a in driven:
                    raise ConfigError(q, '"%s" is already driven by %s' % (a, driven[a]))
                driven[a] = 'block "%s"' % b["name"]
            if b["type"] == "split_range":
                for k, s in enumerate(b["outputs"]):
                    rng = chans[s["actuator"]]["range"]
                    for j in (0, 1):
                        _within(s["output"][j], "%s.outputs[%d].output[%d]" % (p, k, j), rng,
                                'the range of channel "%s"' % s["actuator"])
        for i in range(len(cfg["loops"])):
            lp = cfg["loops"][i]
            p = "loops[%d]" % i
            if self.block_of(lp["sensor"]) is not None:
                self._source(lp["sensor"], p + ".sensor", lp["name"], loops)
            for key in ("setpoint_from", "feedforward"):
                v = lp.get(key)
                if v is None:
                    continue
                if lp["controller"]["type"] != "pid" and key == "feedforward":
                    raise ConfigError(p + "." + key, "needs a pid controller")
                if v == lp["name"]:
                    raise ConfigError(p + "." + key, "cannot be the loop itself")
                self._source(v, p + "." + key, lp["name"], loops)
                read.add(v)
                if key == "setpoint_from" and v in loops:
                    self._cascade(loops[v], lp, p, cfg["loops"])
            if lp["name"] not in self.task_of and (
                    lp.get("setpoint_from") or lp.get("feedforward")
                    or self.block_of(lp["sensor"]) is not None
                    or lp.get("actuator") is None):
                raise ConfigError(p, 'loop "%s" is wired into the signal graph: put it in a '
                                     'task\'s "order"' % lp["name"])
        for i in range(len(cfg["loops"])):
            lp = cfg["loops"][i]
            if lp.get("actuator") is None and lp["name"] not in read:
                raise ConfigError("loops[%d].actuator" % i, 'is required: nothing reads loop '
                                  '"%s"\'s output (a block\'s input, or a loop\'s setpoint_from '
                                  'or feedforward)' % lp["name"])
        return self.blocks, self.tasks

    def _source(self, name, path, reader, loops):
        # name: a channel, a block or a loop; a block or loop must run in the reader's task,
        # before it
        if not isinstance(name, str):
            raise ConfigError(path, "must name a channel, block or loop, got " + _show(name))
        if name in self.chans:
            return
        base, _, out = name.partition(".")
        if out and base in self.by_name and self.blocks[self.by_name[base]]["type"] == "user":
            if out not in self.blocks[self.by_name[base]]["outputs"]:
                raise ConfigError(path, 'user block "%s" has no output "%s" (outputs: %s)' % (
                    base, out, ", ".join(self.blocks[self.by_name[base]]["outputs"])))
            name = base
        if name not in self.by_name and name not in loops:
            raise ConfigError(path, 'no channel, block or loop "%s"' % name)
        a, b = self.task_of.get(name), self.task_of.get(reader)
        what = "block" if name in self.by_name else "loop"
        if a is None:
            raise ConfigError(path, '%s "%s" is in no task\'s "order"' % (what, name))
        if b is None or a[0] != b[0]:
            raise ConfigError(path, '%s "%s" runs in task "%s": "%s" must run in the same task'
                              % (what, name, self.tasks[a[0]]["name"], reader))
        if a[1] >= b[1]:
            raise ConfigError(path, '%s "%s" must come before "%s" in task "%s"\'s order '
                              '(each value is computed before it is read)'
                              % (what, name, reader, self.tasks[a[0]]["name"]))

    def _cascade(self, outer, inner, p, all_loops):
        if inner["controller"]["type"] != "pid":
            raise ConfigError(p + ".setpoint_from", 'a cascade\'s inner loop needs a pid '
                                                    'controller')
        if outer.get("actuator") is not None:
            raise ConfigError(p + ".setpoint_from", 'loop "%s" drives channel "%s": the outer '
                              'loop of a cascade drives only this setpoint (leave its actuator '
                              'out)' % (outer["name"], outer["actuator"]))
        for q in all_loops:
            if q is not inner and q.get("setpoint_from") == outer["name"]:
                raise ConfigError(p + ".setpoint_from", 'loop "%s" already drives loop "%s"\'s '
                                  'setpoint' % (outer["name"], q["name"]))


def signal(v, path):
    """A signal's name: a channel, block or loop, or a user block's output "block.output"."""
    if isinstance(v, str) and v.count(".") == 1:
        a, b = v.split(".")
        _name(a, path)
        _name(b, path)
        return v
    return _name(v, path)


def _block(d, path):
    kind = _typed(d, path, tuple(sorted(_KEYS)))
    req, opt = _KEYS[kind]
    common = _COMMON if kind not in ("split_range", "user") else ("range", "units")
    _fields(d, path, ("name", "type") + req, opt + common)
    b = {"name": _name(d["name"], path + ".name"), "type": kind,
         "range": None if d.get("range") is None else _range(d["range"], path + ".range"),
         "units": _text(_opt(d, "units", ""), path + ".units", 16)}
    if kind == "user":
        return _user(d, path, b)
    if kind != "split_range":
        a = _opt(d, "actuator", None)
        b["actuator"] = None if a is None else _name(a, path + ".actuator")
    if "input" in req:
        b["input"] = signal(d["input"], path + ".input")
    if "inputs" in req:
        lo, hi = (2, 2) if d.get("op") in ("mul", "div") else (
            (1, MAX_INPUTS) if kind == "math" else (2, MAX_INPUTS))
        ins = _list(d["inputs"], path + ".inputs", MAX_INPUTS)
        if not lo <= len(ins) <= hi:
            raise ConfigError(path + ".inputs", "must list %s signals, got %d" % (
                str(lo) if lo == hi else "%d to %d" % (lo, hi), len(ins)))
        b["inputs"] = [signal(ins[i], "%s.inputs[%d]" % (path, i)) for i in range(len(ins))]
    if kind == "feedforward":
        b["gain"] = _num(d["gain"], path + ".gain", -GAIN, GAIN)
        b["bias"] = _num(_opt(d, "bias", 0), path + ".bias")
        b["lead_s"] = _num(_opt(d, "lead_s", 0), path + ".lead_s", 0, 100000)
        b["lag_s"] = _num(_opt(d, "lag_s", 0), path + ".lag_s", 0, 100000)
        if b["lead_s"] > 0 and b["lag_s"] == 0:
            raise ConfigError(path + ".lag_s", "must be > 0 with a lead (a pure lead is not "
                                               "realisable: give a lag of a few periods)")
        if b["lag_s"] > 0 and b["lead_s"] > 1000 * b["lag_s"]:
            raise ConfigError(path + ".lead_s", "must be at most 1000 x lag_s")
    elif kind == "ratio":
        b["ratio"] = _num(d["ratio"], path + ".ratio", -GAIN, GAIN)
        b["bias"] = _num(_opt(d, "bias", 0), path + ".bias")
    elif kind == "limit":
        b["min"] = _num(d["min"], path + ".min")
        b["max"] = _num(d["max"], path + ".max")
        if not b["min"] < b["max"]:
            raise ConfigError(path + ".max", "must be above min (%s), got %s"
                              % (_show(b["min"]), _show(b["max"])))
    elif kind == "rate_limit":
        b["up_per_s"] = _num(d["up_per_s"], path + ".up_per_s", above=0)
        b["down_per_s"] = _num(_opt(d, "down_per_s", b["up_per_s"]), path + ".down_per_s",
                               above=0)
    elif kind == "select":
        b["op"] = _choice(d["op"], path + ".op", ("min", "max"))
    elif kind == "math":
        b["op"] = _choice(d["op"], path + ".op", ("sum", "mul", "div"))
        if b["op"] != "sum":
            for k in ("gains", "bias"):
                if k in d:
                    raise ConfigError(path + "." + k, 'only for op "sum"')
        else:
            g = _list(_opt(d, "gains", [1] * len(b["inputs"])), path + ".gains", MAX_INPUTS)
            if len(g) != len(b["inputs"]):
                raise ConfigError(path + ".gains", "must have one gain per input (%d), got %d"
                                  % (len(b["inputs"]), len(g)))
            b["gains"] = [_num(g[i], "%s.gains[%d]" % (path, i), -GAIN, GAIN)
                          for i in range(len(g))]
            b["bias"] = _num(_opt(d, "bias", 0), path + ".bias")
    elif kind == "split_range":
        outs = _list(d["outputs"], path + ".outputs", 4)
        if len(outs) < 2:
            raise ConfigError(path + ".outputs", "must list 2 to 4 actuators, got %d" % len(outs))
        b["outputs"] = [_segment(outs[i], "%s.outputs[%d]" % (path, i)) for i in range(len(outs))]
    return b


def _user(d, path, b):
    # A user module's block (docs/user-blocks.md): module cyphy_user.<module> on the node
    m = d["module"]
    ok = isinstance(m, str) and 1 <= len(m) <= 32 and (m[0].isalpha() or m[0] == "_")
    if ok:
        for c in m:
            if not (c.isalpha() or c.isdigit() or c == "_") or ord(c) > 127:
                ok = False
    if not ok:
        raise ConfigError(path + ".module", "must be a module name (1 to 32 ASCII letters, "
                          "digits or _, not starting with a digit: the file <module>.py next "
                          "to the config), got " + _show(m))
    b["module"] = m
    ins = _list(_opt(d, "inputs", []), path + ".inputs", MAX_INPUTS)
    b["inputs"] = [signal(ins[i], "%s.inputs[%d]" % (path, i)) for i in range(len(ins))]
    outs = _list(_opt(d, "outputs", ["out"]), path + ".outputs", MAX_INPUTS)
    if not outs:
        raise ConfigError(path + ".outputs", "must name at least one output")
    b["outputs"] = [_name(outs[i], "%s.outputs[%d]" % (path, i)) for i in range(len(outs))]
    for i in range(len(outs)):
        if outs[i] in outs[:i]:
            raise ConfigError("%s.outputs[%d]" % (path, i), 'duplicate name "%s"' % outs[i])
    p = _opt(d, "params", {})
    if not isinstance(p, dict):
        raise ConfigError(path + ".params", "must be an object, got " + _show(p))
    for k in sorted(p):
        v = p[k]
        q = path + ".params." + k
        if isinstance(v, list):
            for i in range(len(v)):
                _num(v[i], "%s[%d]" % (q, i), -1e12, 1e12)
        elif isinstance(v, str):
            _text(v, q, 64)
        elif v is not True and v is not False:
            _num(v, q, -1e12, 1e12)
    b["params"] = p
    a = _opt(d, "actuators", {})
    if not isinstance(a, dict):
        raise ConfigError(path + ".actuators", "must be an object (output -> channel), got "
                          + _show(a))
    for k in sorted(a):
        if k not in b["outputs"]:
            raise ConfigError(path + ".actuators." + k, "no output \"%s\" (outputs: %s)"
                              % (k, ", ".join(b["outputs"])))
        _name(a[k], path + ".actuators." + k)
    b["actuators"] = a
    bu = _opt(d, "budget_us", None)
    b["budget_us"] = None if bu is None else _int(bu, path + ".budget_us", 1, 1000000)
    return b


def _segment(d, path):
    _fields(d, path, ("actuator", "input", "output"))
    s = {"actuator": _name(d["actuator"], path + ".actuator"),
         "input": _range(d["input"], path + ".input")}
    o = d["output"]
    if not isinstance(o, list) or len(o) != 2:
        raise ConfigError(path + ".output", "must be a list [at input's start, at its end], got "
                          + _show(o))
    s["output"] = [_num(o[0], path + ".output[0]"), _num(o[1], path + ".output[1]")]
    if s["output"][0] == s["output"][1]:
        raise ConfigError(path + ".output", "must differ at the two ends")
    return s


def _task(d, path):
    _fields(d, path, ("name", "rate_hz", "order"))
    t = {"name": _name(d["name"], path + ".name"),
         "rate_hz": _int(d["rate_hz"], path + ".rate_hz", 1, 1000)}
    order = _list(d["order"], path + ".order", MAX_BLOCKS + 8)
    if not order:
        raise ConfigError(path + ".order", "must list the blocks and loops to run, in order")
    t["order"] = [_name(order[i], "%s.order[%d]" % (path, i)) for i in range(len(order))]
    return t

