# Config validation of the device channels: sensors and outputs beyond the chip's own ADC,
# GPIO, PWM and DAC (docs/config.md, "Sensors and buses"). Loaded by config.validate only
# for a config that has one. Each kind: its fields, checked in schema order with the field's
# path, as every config error; the pins it uses and which of them a bus shares.
from .config import (ConfigError, _bool, _choice, _fields, _int, _name, _num, _opt, _range,
                     _show, _text, _within)

# kind -> (direction, required keys, optional keys)
KINDS = {
    "ds18b20": ("in", ("name", "pin", "kind"),
                ("rom", "resolution", "period_ms", "stale_ms", "valid", "units")),
    "tpo": ("out", ("name", "pin", "kind", "period_s", "failsafe"),
            ("range", "units", "invert", "min_pulse_ms")),
}
INPUTS = tuple(sorted(k for k in KINDS if KINDS[k][0] == "in"))
OUTPUTS = tuple(sorted(k for k in KINDS if KINDS[k][0] == "out"))
# a pin may be shared by channels of one bus: kind -> bus family
BUS = {"ds18b20": "1-Wire"}
# kinds without a single "pin": the keys naming their pins (config._pins_of)
PINS = {}
# DS18B20 conversion time by resolution (datasheet: 93.75, 187.5, 375, 750 ms max)
CONV_MS = {9: 94, 10: 188, 11: 375, 12: 750}


def channel(d, path, kind):
    _, req, opt = KINDS[kind]
    _fields(d, path, req, opt)
    c = {"name": _name(d["name"], path + ".name"), "kind": kind}
    if "pin" in req:
        c["pin"] = _int(d["pin"], path + ".pin", 0, 48)
    _CHECK[kind](d, path, c)
    return c


def _ds18b20(d, path, c):
    rom = _opt(d, "rom", None)
    if rom is not None:
        ok = isinstance(rom, str) and len(rom) == 16
        if ok:
            for ch in rom:
                if ch not in "0123456789abcdefABCDEF":
                    ok = False
        if not ok or rom[:2] != "28":
            raise ConfigError(path + ".rom", "must be the sensor's 64-bit ROM code as 16 hex "
                              "digits, family 28 first (cyphy get URL devices lists them), "
                              "got " + _show(rom))
        rom = rom.lower()
    c["rom"] = rom
    c["resolution"] = _int(_opt(d, "resolution", 12), path + ".resolution", 9, 12)
    conv = CONV_MS[c["resolution"]]
    c["period_ms"] = _int(_opt(d, "period_ms", max(1000, conv)), path + ".period_ms",
                          conv, 3600000)
    c["stale_ms"] = _int(_opt(d, "stale_ms", 3 * c["period_ms"]), path + ".stale_ms",
                         c["period_ms"] + conv, 36000000)
    c["valid"] = _range(_opt(d, "valid", [-55, 125]), path + ".valid")
    _within(c["valid"][0], path + ".valid[0]", [-55, 125], "the DS18B20's range")
    _within(c["valid"][1], path + ".valid[1]", [-55, 125], "the DS18B20's range")
    c["units"] = _choice(_opt(d, "units", "degC"), path + ".units", ("degC",))


def _tpo(d, path, c):
    c["period_s"] = _num(d["period_s"], path + ".period_s", 0, 3600, above=0)
    c["range"] = _range(_opt(d, "range", [0, 100]), path + ".range")
    c["failsafe"] = _within(_num(d["failsafe"], path + ".failsafe"), path + ".failsafe",
                            c["range"], "range")
    c["units"] = _text(_opt(d, "units", "%"), path + ".units", 16)
    c["invert"] = _bool(_opt(d, "invert", False), path + ".invert")
    c["min_pulse_ms"] = _int(_opt(d, "min_pulse_ms", 0), path + ".min_pulse_ms", 0, 60000)
    if c["min_pulse_ms"] * 2 > c["period_s"] * 1000:
        raise ConfigError(path + ".min_pulse_ms", "must be at most half the period (%s ms), "
                          "got %d" % (_show(c["period_s"] * 1000), c["min_pulse_ms"]))


# kind -> its fields' check (after name, kind and pin)
_CHECK = {"ds18b20": _ds18b20, "tpo": _tpo}


def shares(a, b):
    """May channels a and b (validated dicts) use the same pin? Only on one bus."""
    return a["kind"] in BUS and BUS.get(b["kind"]) == BUS[a["kind"]]


def check_buses(channels):
    """Across channels (validated dicts): several 1-Wire sensors on one pin need their ROM
    codes, each once."""
    seen = {}
    for i in range(len(channels)):
        c = channels[i]
        if c["kind"] != "ds18b20":
            continue
        others = seen.setdefault(c["pin"], [])
        for j, o in others:
            if c["rom"] is None or o["rom"] is None:
                k = i if c["rom"] is None else j
                raise ConfigError("channels[%d].rom" % k, 'is required: pin %d has more than one '
                                  'DS18B20 ("%s", "%s"); give each its ROM code' % (
                                      c["pin"], o["name"], c["name"]))
            if c["rom"] == o["rom"]:
                raise ConfigError("channels[%d].rom" % i, 'is channel "%s"\'s too' % o["name"])
        others.append((i, c))
