# Node config (/config.json): load, validate, fill defaults. Schema: docs/config.md.
#
# Runs on MicroPython (at boot, on the node) and on CPython (the host validates before
# provisioning), with the same messages on both: every error is a ConfigError whose text is
# "<field path>: <why>", e.g. 'loops[0].controller.kp: must be a number, got "abc"'.
# Fields are checked in schema order, never in dict order (MicroPython's dicts are not
# insertion-ordered), so the first error reported is the same on both runtimes.
# This runs once at boot, not in the tick: it may allocate and use floats freely.
import json

from .fixed import SCALE, VAL_MAX

# An engineering value becomes an int in milli-units in the tick (fixed.py) and must stay
# within +-VAL_MAX there: so config values are limited to +-536870 units.
ENG = VAL_MAX // SCALE
# pid.py keeps |output| below 2**25 milli-units so that its integral and sums stay small ints
PID_OUT = (-33554, 33554)
INPUTS = ("adc", "din")
OUTPUTS = ("pwm", "dout", "dac")
# device channels (cfgdev.py, loaded only for a config with one); keep in step with
# cfgdev.INPUTS / cfgdev.OUTPUTS (tests/firmware/test_devices.py checks)
DEV_INPUTS = ("counter", "ds18b20", "encoder", "max31855", "modbus_in", "sht3x")
DEV_OUTPUTS = ("modbus_out", "tpo")
MAX_CHANNELS = 32
MAX_LOOPS = 8       # each loop's scheduler statistics take ~1.8 KB of RAM
MV_MAX = 3300      # millivolts: an ESP32-family pin takes at most its 3.3 V supply
_INF = float("inf")

# Sim plant parameters and loads per type; keep in step with boards/sim/rom/_plant.py
# (tests/firmware/test_config.py checks). Their meaning and defaults: docs/plants.md.
PLANTS = {
    "fotd": ("gain", "tau_s", "dead_time_s", "ambient"),
    "dcmotor": ("J", "b", "K", "R", "L", "vmin", "vmax", "load_torque"),
    "twotank": ("A1", "A2", "a1", "a2", "k", "g", "height", "vmax", "valve"),
    "second_order": ("gain", "wn_rad_s", "zeta", "dead_time_s", "umin", "umax", "load"),
}


class ConfigError(ValueError):
    """A config that cannot be used; .path names the field, .reason says why."""

    def __init__(self, path, reason):
        super().__init__("%s: %s" % (path, reason))
        self.path = path
        self.reason = reason


# Plant details passed through unchecked to the sim's plant model: kept as plain dicts, so
# their keys can never clash with Section's own attributes.
_PLAIN = ("noise", "initial", "disturbances", "params", "actuators")


class Section:
    """A validated config object: its fields are attributes (cfg.loops[0].controller.kp)."""

    def __init__(self, d):
        self._keys = tuple(sorted(d))
        for k in self._keys:
            v = d[k]
            if k in _PLAIN:
                pass
            elif isinstance(v, dict):
                v = Section(v)
            elif isinstance(v, list):
                v = [Section(x) if isinstance(x, dict) else x for x in v]
            setattr(self, k, v)

    def get(self, key, default=None):
        return getattr(self, key, default) if key in self._keys else default

    def to_dict(self):
        """The validated config as plain dicts/lists, defaults filled in."""
        d = {}
        for k in self._keys:
            v = getattr(self, k)
            if isinstance(v, Section):
                v = v.to_dict()
            elif isinstance(v, list):
                v = [x.to_dict() if isinstance(x, Section) else x for x in v]
            d[k] = v
        return d

    def __repr__(self):
        return "<%s>" % ", ".join(self._keys)


class Config(Section):
    """The whole node config, with lookups by name."""

    def channel(self, name):
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise KeyError(name)

    def loop(self, name):
        for lp in self.loops:
            if lp.name == name:
                return lp
        raise KeyError(name)


# --- helpers: each checks one value at `path` and returns it (normalised) -------------------

def _show(v):
    # How a bad value appears in a message: JSON spelling, identical on both runtimes.
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, str):
        return '"%s"' % (v if len(v) <= 40 else v[:37] + "...")
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "a list"
    return "a %s" % type(v).__name__


def _at(path, key):
    # path.key, or path["key"] for a key that would not read clearly after a dot (a typo'd
    # key can be anything: "", "k p", "a.b")
    if not isinstance(key, str):
        key = repr(key)          # only from Python callers: JSON keys are strings
    plain = len(key) > 0
    for c in key:
        if not (c.isalpha() or c.isdigit() or c == "_") or ord(c) > 127:
            plain = False
    if not plain:
        return '%s["%s"]' % (path, key)
    return "%s.%s" % (path, key) if path else key


def _fields(d, path, required, optional=()):
    # An object with exactly these keys: unknown keys first (a typo explains a "missing" key
    # better than the missing-key message would), then required keys in schema order.
    if not isinstance(d, dict):
        raise ConfigError(path or "config", "must be an object, got " + _show(d))
    allowed = required + optional
    unknown = sorted(k if isinstance(k, str) else repr(k) for k in d if k not in allowed)
    if unknown:
        raise ConfigError(_at(path, unknown[0]), "unknown key; allowed: " + ", ".join(allowed))
    for k in required:
        if k not in d:
            raise ConfigError(_at(path, k), "is required")


def _num(v, path, lo=-ENG, hi=ENG, above=None):
    # A finite number in [lo, hi] (or (above, hi] when `above` is given).
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(path, "must be a number, got " + _show(v))
    if v != v or v == _INF or v == -_INF:
        raise ConfigError(path, "must be a finite number, got " + _show(v))
    if above is not None:
        if not above < v <= hi:
            raise ConfigError(path, "must be > %s and <= %s, got %s" % (above, hi, _show(v)))
    elif not lo <= v <= hi:
        raise ConfigError(path, "must be from %s to %s, got %s" % (lo, hi, _show(v)))
    return v


def _int(v, path, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(path, "must be an integer from %d to %d, got %s" % (lo, hi, _show(v)))
    return v


def _choice(v, path, choices):
    if not isinstance(v, str) or v not in choices:
        raise ConfigError(path, "must be one of %s; got %s" % (", ".join(choices), _show(v)))
    return v


def _bool(v, path):
    if v is not True and v is not False:
        raise ConfigError(path, "must be true or false, got " + _show(v))
    return v


def _text(v, path, maxlen):
    if not isinstance(v, str) or len(v) > maxlen:
        raise ConfigError(path, "must be a string of at most %d characters, got %s"
                          % (maxlen, _show(v)))
    return v


def _name(v, path):
    # Names appear in telemetry, REPL lookups and file names: keep them plain.
    ok = isinstance(v, str) and 1 <= len(v) <= 32 and v[0].isalpha()
    if ok:
        for c in v:
            if not (c.isalpha() or c.isdigit() or c in "_-") or ord(c) > 127:
                ok = False
    if not ok:
        raise ConfigError(path, "must be a name of 1 to 32 ASCII letters, digits, _ or -, "
                                "starting with a letter; got " + _show(v))
    return v


def _range(v, path):
    # [min, max] in engineering units, min < max.
    if not isinstance(v, list) or len(v) != 2:
        raise ConfigError(path, "must be a list [min, max], got " + _show(v))
    lo = _num(v[0], path + "[0]")
    hi = _num(v[1], path + "[1]")
    if not lo < hi:
        raise ConfigError(path, "min (%s) must be below max (%s)" % (_show(lo), _show(hi)))
    return [lo, hi]


def _unit(v, path, kind):
    if v != [0, 1] or isinstance(v[0], bool) or isinstance(v[1], bool):
        raise ConfigError(path, "must be [0, 1] for a %s channel, got %s" % (kind, _show(v)))
    return [0, 1]


def _list(v, path, maxlen):
    if not isinstance(v, list):
        raise ConfigError(path, "must be a list, got " + _show(v))
    if len(v) > maxlen:
        raise ConfigError(path, "must have at most %d entries, got %d" % (maxlen, len(v)))
    return v


def _within(v, path, rng, what):
    if not rng[0] <= v <= rng[1]:
        raise ConfigError(path, "must be within %s [%s, %s], got %s"
                          % (what, _show(rng[0]), _show(rng[1]), _show(v)))
    return v


def _opt(d, key, default):
    return d[key] if key in d else default


def _typed(d, path, types):
    # Objects with a "type" key: check the type first, since it decides the allowed keys.
    if not isinstance(d, dict):
        raise ConfigError(path, "must be an object, got " + _show(d))
    if "type" not in d:
        raise ConfigError(path + ".type", "is required")
    return _choice(d["type"], path + ".type", types)


# --- sections -------------------------------------------------------------------------------

def _channel(d, path):
    if not isinstance(d, dict):
        raise ConfigError(path, "must be an object, got " + _show(d))
    if "kind" not in d:
        raise ConfigError(path + ".kind", "is required")    # it decides the allowed keys
    kind = _choice(d["kind"], path + ".kind", INPUTS + OUTPUTS + DEV_INPUTS + DEV_OUTPUTS)
    if kind in DEV_INPUTS or kind in DEV_OUTPUTS:
        from .cfgdev import channel
        return channel(d, path, kind)
    base = ("name", "pin", "kind")
    # din "valid" and dout "range" may only be [0, 1]: they exist so that every input has a
    # valid range and every output a range, and so that to_dict() output validates again.
    opt = {"adc": ("atten_db",), "din": ("invert", "pull", "valid"),
           "pwm": ("units", "freq_hz", "invert"), "dout": ("invert", "range"),
           "dac": ("units",)}.get(kind, ())
    req = {"adc": ("scale", "units", "valid"), "pwm": ("range", "failsafe"),
           "dout": ("failsafe",), "dac": ("range", "failsafe")}.get(kind, ())
    _fields(d, path, base + req, opt)
    c = {"name": _name(d["name"], path + ".name"), "pin": _int(d["pin"], path + ".pin", 0, 48),
         "kind": kind}
    if kind == "adc":
        s = d["scale"]
        sp = path + ".scale"
        if isinstance(s, dict) and ("raw_min" in s or "raw_max" in s):
            k = "raw_min" if "raw_min" in s else "raw_max"
            raise ConfigError(sp + "." + k, "raw ADC counts are not accepted (ADC.read_u16() is the "
                              "chip's uncalibrated, non-linear reading); give mv_min and mv_max, the "
                              "pin's millivolts at eng_min and eng_max (read calibrated)")
        _fields(s, sp, ("mv_min", "mv_max", "eng_min", "eng_max"))
        # mv: millivolts at the pin, as the board's calibrated ADC.read_uv() measures them
        # (the pins take at most 3.3 V; which range is measurable depends on the chip and
        # atten_db, checked by the board and by cyphy provision)
        sc = {"mv_min": _num(s["mv_min"], sp + ".mv_min", 0, MV_MAX),
              "mv_max": _num(s["mv_max"], sp + ".mv_max", 0, MV_MAX),
              "eng_min": _num(s["eng_min"], sp + ".eng_min"),
              "eng_max": _num(s["eng_max"], sp + ".eng_max")}
        if sc["mv_min"] == sc["mv_max"]:
            raise ConfigError(sp + ".mv_max", "must differ from mv_min")
        if sc["eng_min"] == sc["eng_max"]:
            raise ConfigError(sp + ".eng_max", "must differ from eng_min")
        c["scale"] = sc
        c["units"] = _text(d["units"], path + ".units", 16)
        c["valid"] = _range(d["valid"], path + ".valid")
        c["atten_db"] = _opt(d, "atten_db", 11)
        if c["atten_db"] not in (0, 2.5, 6, 11) or isinstance(c["atten_db"], bool):
            raise ConfigError(path + ".atten_db", "must be one of 0, 2.5, 6, 11; got "
                              + _show(c["atten_db"]))
    elif kind == "din":
        c["invert"] = _bool(_opt(d, "invert", False), path + ".invert")
        c["pull"] = _choice(_opt(d, "pull", "none"), path + ".pull", ("none", "up", "down"))
        c["valid"] = _unit(_opt(d, "valid", [0, 1]), path + ".valid", kind)
    elif kind == "dout":
        c["invert"] = _bool(_opt(d, "invert", False), path + ".invert")
        c["range"] = _unit(_opt(d, "range", [0, 1]), path + ".range", kind)
        fs = d["failsafe"]
        if fs is True or fs is False:
            fs = int(fs)
        if fs not in (0, 1) or isinstance(fs, float):
            raise ConfigError(path + ".failsafe", "must be 0 or 1, got " + _show(d["failsafe"]))
        c["failsafe"] = fs
    else:   # pwm, dac: an analog output over `range`
        c["range"] = _range(d["range"], path + ".range")
        c["failsafe"] = _within(_num(d["failsafe"], path + ".failsafe"), path + ".failsafe",
                                c["range"], "range")
        c["units"] = _text(_opt(d, "units", ""), path + ".units", 16)
        if kind == "pwm":
            c["freq_hz"] = _int(_opt(d, "freq_hz", 1000), path + ".freq_hz", 1, 40000000)
            c["invert"] = _bool(_opt(d, "invert", False), path + ".invert")
    return c


def _controller(d, path, sensor, act):
    kind = _typed(d, path, ("pid", "onoff"))
    span = act["range"]
    pv = sensor["valid"]
    if kind == "pid":
        _fields(d, path, ("type", "kp", "setpoint"),
                ("ki", "kd", "out_min", "out_max", "ramp_per_s", "direction",
                 "d_filter_tau_s", "p_on", "d_on", "deadband", "anti_windup", "out_avg"))
        c = {"type": kind}
        for k in ("kp", "ki", "kd"):
            c[k] = _num(_opt(d, k, 0), path + "." + k, 0, ENG)
        c["setpoint"] = _within(_num(d["setpoint"], path + ".setpoint"), path + ".setpoint",
                                pv, "the sensor's valid range")
        for k, i in (("out_min", 0), ("out_max", 1)):
            c[k] = _within(_num(_opt(d, k, span[i]), path + "." + k), path + "." + k,
                           span, "the actuator's range")
            _within(c[k], path + "." + k, PID_OUT, "the pid's output limits")
        if not c["out_min"] < c["out_max"]:
            raise ConfigError(path + ".out_max", "must be above out_min (%s), got %s"
                              % (_show(c["out_min"]), _show(c["out_max"])))
        r = _opt(d, "ramp_per_s", None)
        c["ramp_per_s"] = None if r is None else _num(r, path + ".ramp_per_s", above=0)
        c["direction"] = _choice(_opt(d, "direction", "direct"), path + ".direction",
                                 ("direct", "reverse"))
        c["d_filter_tau_s"] = _num(_opt(d, "d_filter_tau_s", 0), path + ".d_filter_tau_s",
                                   0, 100000)
        c["p_on"] = _choice(_opt(d, "p_on", "error"), path + ".p_on", ("error", "measurement"))
        c["d_on"] = _choice(_opt(d, "d_on", "measurement"), path + ".d_on",
                            ("measurement", "error"))
        c["deadband"] = _num(_opt(d, "deadband", 0), path + ".deadband", 0, ENG)
        c["anti_windup"] = _choice(_opt(d, "anti_windup", "conditional"), path + ".anti_windup",
                                   ("conditional", "clamp"))
        c["out_avg"] = _int(_opt(d, "out_avg", 1), path + ".out_avg", 1, 32)
        if c["kp"] == 0 and c["ki"] == 0 and c["kd"] == 0:
            raise ConfigError(path, "kp, ki and kd are all 0")
        return c
    _fields(d, path, ("type", "setpoint"), ("hysteresis", "direction"))
    return {"type": kind,
            "setpoint": _within(_num(d["setpoint"], path + ".setpoint"), path + ".setpoint",
                                pv, "the sensor's valid range"),
            "hysteresis": _num(_opt(d, "hysteresis", 0), path + ".hysteresis", 0, ENG),
            "direction": _choice(_opt(d, "direction", "direct"), path + ".direction",
                                 ("direct", "reverse"))}


def _loop(d, path, chans, used, graph=None):
    # graph: a cfggraph.Graph when the config has blocks or tasks (a block as sensor, no
    # actuator channel, setpoint_from, feedforward; a loop in a task takes its rate)
    if graph is None:
        _fields(d, path, ("name", "rate_hz", "sensor", "controller", "actuator"),
                ("filter", "alarms"))
    else:
        _fields(d, path, ("name", "sensor", "controller"),
                ("rate_hz", "actuator", "filter", "alarms") + graph.LOOP_KEYS)
    lp = {"name": _name(d["name"], path + ".name")}
    rate = None if graph is None else graph.rate(d, path)
    if rate is None and "rate_hz" not in d:
        raise ConfigError(path + ".rate_hz", "is required (or put the loop in a task)")
    lp["rate_hz"] = rate or _int(d["rate_hz"], path + ".rate_hz", 1, 1000)
    ends = {}
    for key, kinds, what in (("sensor", INPUTS + DEV_INPUTS, "input"),
                             ("actuator", OUTPUTS + DEV_OUTPUTS, "output")):
        p = path + "." + key
        if graph is not None and key == "actuator" and d.get(key) is None:
            ends[key] = graph.wire(d, path)     # the output is a signal only
            lp[key] = None
            continue
        if graph is not None and key == "sensor" and graph.block_of(d[key]) is not None:
            ends[key] = graph.sensor(d[key], p)
            lp[key] = d[key]
            continue
        ch = chans.get(d[key]) if isinstance(d[key], str) else None
        if ch is None:
            raise ConfigError(p, "must name a channel (%s)%s, got %s"
                              % (", ".join(sorted(chans)) or "none declared",
                                 "" if graph is None or key != "sensor" else " or a block",
                                 _show(d[key])))
        if ch["kind"] not in kinds:
            other = "output" if what == "input" else "input"
            raise ConfigError(p, '"%s" is an %s channel (%s); a loop\'s %s must be an %s '
                                 'channel (%s)' % (ch["name"], other, ch["kind"], key, what,
                                                   ", ".join(kinds)))
        lp[key] = ch["name"]
        ends[key] = ch
    if lp["actuator"] is not None:
        if lp["actuator"] in used:
            raise ConfigError(path + ".actuator", '"%s" is already driven by loop "%s"'
                              % (lp["actuator"], used[lp["actuator"]]))
        used[lp["actuator"]] = lp["name"]
    else:
        lp["output_units"] = ends["actuator"]["units"]
    if graph is not None:
        for k in ("setpoint_from", "feedforward"):
            lp[k] = None if d.get(k) is None else graph.signal(d[k], path + "." + k)
    sensor, act = ends["sensor"], ends["actuator"]
    f = _opt(d, "filter", None)
    if f is not None:
        _typed(f, path + ".filter", ("lowpass",))
        _fields(f, path + ".filter", ("type", "tau_s"))
        f = {"type": "lowpass", "tau_s": _num(f["tau_s"], path + ".filter.tau_s", 0, 100000,
                                              above=0)}
    lp["filter"] = f
    c = d["controller"]
    if act["kind"] == "dout" and isinstance(c, dict) and c.get("type") == "pid":
        # checked first: the pid's output limits would otherwise complain about [0, 1]
        raise ConfigError(path + ".actuator", '"%s" is a dout channel; a pid controller needs '
                                              'a pwm, dac or tpo (time-proportioned) actuator' % act["name"])
    lp["controller"] = _controller(c, path + ".controller", sensor, act)
    a = _opt(d, "alarms", None)
    if a is not None:
        ap = path + ".alarms"
        _fields(a, ap, (), ("high", "low", "hysteresis"))
        if "high" not in a and "low" not in a:
            raise ConfigError(ap, "needs high, low or both")
        al = {"hysteresis": _num(_opt(a, "hysteresis", 0), ap + ".hysteresis", 0, ENG)}
        for k in ("low", "high"):
            v = _opt(a, k, None)
            al[k] = None if v is None else _within(_num(v, ap + "." + k), ap + "." + k,
                                                    sensor["valid"], "the sensor's valid range")
        if al["low"] is not None and al["high"] is not None and not al["low"] < al["high"]:
            raise ConfigError(ap + ".high", "must be above low (%s), got %s"
                              % (_show(al["low"]), _show(al["high"])))
        a = al
    lp["alarms"] = a
    return lp


def _finite(v, path):
    # Passed-through plant data: any JSON shape, but no NaN or infinity anywhere in it.
    if isinstance(v, float) and (v != v or v == _INF or v == -_INF):
        raise ConfigError(path, "must be a finite number, got " + _show(v))
    if isinstance(v, dict):
        for k in sorted(v, key=str):
            _finite(v[k], _at(path, k))
    elif isinstance(v, list):
        for i in range(len(v)):
            _finite(v[i], "%s[%d]" % (path, i))
    return v


def _plant(d, path):
    # Only the shape: the sim's plant model checks the details (events, ranges) when built.
    kind = _typed(d, path, tuple(sorted(PLANTS)))
    params = PLANTS[kind]
    _fields(d, path, ("type",), params + ("noise", "initial", "disturbances", "seed"))
    p = {"type": kind}
    for k in params:
        if k in d:
            p[k] = _num(d[k], path + "." + k, -10 ** 12, 10 ** 12)
    if "seed" in d:
        p["seed"] = _int(d["seed"], path + ".seed", 0, 2 ** 31 - 1)
    for k in ("noise", "initial"):
        if k in d:
            if not isinstance(d[k], dict):
                raise ConfigError(path + "." + k, "must be an object, got " + _show(d[k]))
            p[k] = _finite(d[k], path + "." + k)
    evs = _list(_opt(d, "disturbances", []), path + ".disturbances", 64)
    for i in range(len(evs)):
        ep = "%s.disturbances[%d]" % (path, i)
        if not isinstance(evs[i], dict):
            raise ConfigError(ep, "must be an object, got " + _show(evs[i]))
        if "at_s" not in evs[i]:
            raise ConfigError(ep + ".at_s", "is required")
        _num(evs[i]["at_s"], ep + ".at_s", 0, 10 ** 9)
        _finite(evs[i], ep)
    p["disturbances"] = evs
    return p


def _comms(d, path):
    # How the node talks to hosts (docs/protocol.md): the serial console always; UDP when
    # "udp" is true (needs Wi-Fi credentials from provisioning, /secrets.json). "follow":
    # loops whose setpoint follows another node's loop over UDP (docs/config.md).
    _fields(d, path, (), ("udp", "udp_port", "follow"))
    c = {"udp": _bool(_opt(d, "udp", False), path + ".udp"),
         "udp_port": _int(_opt(d, "udp_port", 5477), path + ".udp_port", 1, 65535)}
    fl = _list(_opt(d, "follow", []), path + ".follow", MAX_LOOPS)
    if fl and not c["udp"]:
        raise ConfigError(path + ".follow", "needs udp: true (followers talk UDP)")
    c["follow"] = [_follow(fl[i], "%s.follow[%d]" % (path, i)) for i in range(len(fl))]
    return c


def _follow(d, path):
    _fields(d, path, ("loop", "peer", "peer_loop"),
            ("port", "value", "gain", "offset", "period_ms"))
    peer = d["peer"]
    parts = peer.split(".") if isinstance(peer, str) else []
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ConfigError(path + ".peer", "must be the other node's IPv4 address, got " + _show(peer))
    return {"loop": _name(d["loop"], path + ".loop"), "peer": peer,
            "port": _int(_opt(d, "port", 5477), path + ".port", 1, 65535),
            "peer_loop": _name(d["peer_loop"], path + ".peer_loop"),
            "value": _choice(_opt(d, "value", "measurement"), path + ".value",
                             ("setpoint", "measurement", "output")),
            "gain": _num(_opt(d, "gain", 1.0), path + ".gain", -1000, 1000),
            "offset": _num(_opt(d, "offset", 0.0), path + ".offset"),
            "period_ms": _int(_opt(d, "period_ms", 100), path + ".period_ms", 10, 60000)}


def _pins_of(c):
    # [(pin, the key naming it)]: one "pin", or a device's bus pins (cfgdev.PINS)
    if "pin" in c:
        return [(c["pin"], "pin")]
    from .cfgdev import PINS
    return [(c[r], r) for r in PINS[c["kind"]] if c.get(r) is not None]


def _shared(a, b, ra, rb):
    # two channels on one pin: only devices of one bus (cfgdev.BUS) in the same role,
    # e.g. 1-Wire sensors on their data pin, I2C sensors on SDA and SCL
    if ra != rb or a["kind"] in INPUTS + OUTPUTS or b["kind"] in INPUTS + OUTPUTS:
        return False
    from .cfgdev import shares
    return shares(a, b, ra)


def validate(d):
    """Check a config dict (as parsed from JSON); return a Config or raise ConfigError."""
    _fields(d, "", ("name", "comms_timeout_ms", "channels", "loops"),
            ("schema", "node_id", "comms", "plant", "blocks", "tasks"))
    v = _opt(d, "schema", 1)
    if v != 1 or isinstance(v, (bool, float)):
        raise ConfigError("schema", "must be 1 (the only version so far), got " + _show(v))
    cfg = {"schema": 1, "name": _name(d["name"], "name")}
    t = d["comms_timeout_ms"]
    if t != 0 or isinstance(t, (bool, float)):
        try:
            _int(t, "comms_timeout_ms", 50, 3600000)
        except ConfigError:
            raise ConfigError("comms_timeout_ms", "must be 0 (no timeout) or an integer from "
                                                  "50 to 3600000, got " + _show(t))
    cfg["comms_timeout_ms"] = t
    cfg["node_id"] = _int(_opt(d, "node_id", 1), "node_id", 1, 254)
    cfg["comms"] = _comms(_opt(d, "comms", {}), "comms")
    chans = {}
    pins = {}
    out = []
    raw = _list(d["channels"], "channels", MAX_CHANNELS)
    for i in range(len(raw)):
        p = "channels[%d]" % i
        c = _channel(raw[i], p)
        if c["name"] in chans:
            raise ConfigError(p + ".name", 'duplicate name "%s"' % c["name"])
        for pin, role in _pins_of(c):
            if pin in pins and not _shared(c, chans[pins[pin][0]], role, pins[pin][1]):
                raise ConfigError(p + "." + role, 'pin %d is already used by channel "%s"'
                                  % (pin, pins[pin][0]))
            pins[pin] = (c["name"], role)
        chans[c["name"]] = c
        out.append(c)
    cfg["channels"] = out
    if [c for c in out if c["kind"] in DEV_INPUTS or c["kind"] in DEV_OUTPUTS]:
        from .cfgdev import check_buses
        check_buses(out)
    graph = None
    if d.get("blocks") is not None or d.get("tasks") is not None:
        from .cfggraph import Graph     # loaded only for a config with a signal graph
        graph = Graph(d, chans)
    loops = []
    names = {}
    used = {}
    raw = _list(d["loops"], "loops", MAX_LOOPS)
    for i in range(len(raw)):
        p = "loops[%d]" % i
        lp = _loop(raw[i], p, chans, used, graph)
        if lp["name"] in names:
            raise ConfigError(p + ".name", 'duplicate name "%s"' % lp["name"])
        names[lp["name"]] = i
        loops.append(lp)
    cfg["loops"] = loops
    for i in range(len(cfg["comms"]["follow"])):
        f = cfg["comms"]["follow"][i]
        if f["loop"] not in names:
            raise ConfigError("comms.follow[%d].loop" % i, 'no loop "%s" (loops: %s)'
                              % (f["loop"], ", ".join([lp["name"] for lp in loops])))
        if f["loop"] in [g["loop"] for g in cfg["comms"]["follow"][:i]]:
            raise ConfigError("comms.follow[%d].loop" % i, 'loop "%s" already follows '
                              'another node' % f["loop"])
    if graph is not None:
        cfg["blocks"], cfg["tasks"] = graph.check(cfg)
    cfg["plant"] = _plant(d["plant"], "plant") if d.get("plant") is not None else None
    return Config(cfg)


def load(path="/config.json"):
    """Read and validate a config file; ConfigError names the file for unreadable/bad JSON."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, "cannot be read (OSError %s)" % (e.args[0] if e.args else "?"))
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ConfigError(path, "is not valid JSON (%s)" % (e,))
    return validate(d)
