# Config validation of the device channels: sensors and outputs beyond the chip's own ADC,
# GPIO, PWM and DAC (docs/config.md, "Sensors and buses"). Loaded by config.validate only
# for a config that has one. Each kind: its fields, checked in schema order with the field's
# path, as every config error; the pins it uses and which of them a bus shares.
from .config import (ConfigError, _bool, _choice, _fields, _int, _name, _num, _opt, _range,
                     _show, _text, _within)

# kind -> (direction, required keys, optional keys)
KINDS = {
    "modbus_in": ("in", ("name", "kind", "tx", "rx", "slave", "function", "register", "valid"),
                  ("uart", "de", "baud", "parity", "stop", "type", "word_order", "scale",
                   "offset", "units", "period_ms", "stale_ms", "timeout_ms")),
    "modbus_out": ("out", ("name", "kind", "tx", "rx", "slave", "register", "failsafe"),
                   ("uart", "de", "baud", "parity", "stop", "type", "scale", "offset", "range",
                    "units", "period_ms", "timeout_ms")),
    "ds18b20": ("in", ("name", "pin", "kind"),
                ("rom", "resolution", "period_ms", "stale_ms", "valid", "units")),
    "tpo": ("out", ("name", "pin", "kind", "period_s", "failsafe"),
            ("range", "units", "invert", "min_pulse_ms")),
    "sht3x": ("in", ("name", "kind", "sda", "scl", "quantity"),
              ("i2c", "freq", "addr", "period_ms", "stale_ms", "valid", "units")),
    "max31855": ("in", ("name", "kind", "sck", "miso", "cs"),
                 ("spi", "baud", "quantity", "period_ms", "stale_ms", "valid", "units")),
    "counter": ("in", ("name", "pin", "kind"),
                ("unit", "edge", "filter_ns", "quantity", "scale", "window_ms", "valid",
                 "units")),
    "encoder": ("in", ("name", "kind", "pin_a", "pin_b"),
                ("unit", "phases", "filter_ns", "quantity", "scale", "window_ms", "valid",
                 "units")),
}
INPUTS = tuple(sorted(k for k in KINDS if KINDS[k][0] == "in"))
OUTPUTS = tuple(sorted(k for k in KINDS if KINDS[k][0] == "out"))
# a pin may be shared by channels of one bus: kind -> bus family
BUS = {"modbus_in": "Modbus", "modbus_out": "Modbus", "ds18b20": "1-Wire", "sht3x": "I2C", "max31855": "SPI"}
# kinds without a single "pin": the keys naming their pins (config._pins_of)
PINS = {"modbus_in": ("tx", "rx", "de"), "modbus_out": ("tx", "rx", "de"), "sht3x": ("sda", "scl"), "max31855": ("sck", "miso", "cs"), "encoder": ("pin_a", "pin_b")}
# the pins a bus shares (a chip select is one device's own)
SHARED = ("pin", "sda", "scl", "sck", "miso", "mosi")
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


def _pin(d, path, c, key):
    c[key] = _int(d[key], path + "." + key, 0, 48)


def _stale(d, path, c, period, least):
    c["period_ms"] = _int(_opt(d, "period_ms", period), path + ".period_ms", least, 3600000)
    c["stale_ms"] = _int(_opt(d, "stale_ms", 3 * c["period_ms"]), path + ".stale_ms",
                         2 * c["period_ms"], 36000000)


def _sht3x(d, path, c):
    _pin(d, path, c, "sda")
    _pin(d, path, c, "scl")
    c["quantity"] = _choice(d["quantity"], path + ".quantity", ("temperature", "humidity"))
    c["i2c"] = _int(_opt(d, "i2c", 0), path + ".i2c", 0, 1)
    c["freq"] = _int(_opt(d, "freq", 100000), path + ".freq", 10000, 1000000)
    c["addr"] = _int(_opt(d, "addr", 0x44), path + ".addr", 0x44, 0x45)
    _stale(d, path, c, 1000, 20)
    t = c["quantity"] == "temperature"
    rng = [-40, 125] if t else [0, 100]
    c["valid"] = _range(_opt(d, "valid", rng), path + ".valid")
    for k in (0, 1):
        _within(c["valid"][k], "%s.valid[%d]" % (path, k), rng, "the SHT3x's range")
    c["units"] = _choice(_opt(d, "units", "degC" if t else "%RH"), path + ".units",
                         ("degC",) if t else ("%RH",))


def _max31855(d, path, c):
    for k in ("sck", "miso", "cs"):
        _pin(d, path, c, k)
    c["spi"] = _int(_opt(d, "spi", 2), path + ".spi", 1, 2)
    c["baud"] = _int(_opt(d, "baud", 4000000), path + ".baud", 100000, 5000000)
    c["quantity"] = _choice(_opt(d, "quantity", "thermocouple"), path + ".quantity",
                            ("thermocouple", "internal"))
    _stale(d, path, c, 200, 100)
    tc = c["quantity"] == "thermocouple"
    rng = [-270, 1372] if tc else [-55, 125]    # type K; the die's own range
    c["valid"] = _range(_opt(d, "valid", [-200, 1350] if tc else [-40, 125]), path + ".valid")
    for k in (0, 1):
        _within(c["valid"][k], "%s.valid[%d]" % (path, k), rng,
                "the type K thermocouple's range" if tc else "the converter's own range")
    c["units"] = _choice(_opt(d, "units", "degC"), path + ".units", ("degC",))


def _pulses(d, path, c):
    enc = c["kind"] == "encoder"
    if enc:
        _pin(d, path, c, "pin_a")
        _pin(d, path, c, "pin_b")
        c["phases"] = _opt(d, "phases", 4)
        if c["phases"] not in (1, 2, 4) or isinstance(c["phases"], bool):
            raise ConfigError(path + ".phases", "must be 1, 2 or 4 (counts per quadrature "
                              "cycle), got " + _show(c["phases"]))
    else:
        c["edge"] = _choice(_opt(d, "edge", "rising"), path + ".edge", ("rising", "falling"))
    c["unit"] = _opt(d, "unit", None)           # PCNT unit: given, or numbered by check_buses
    if c["unit"] is not None:
        _int(c["unit"], path + ".unit", 0, 7)
    # ESP32's PCNT glitch filter: at most 1023 APB cycles of 12.5 ns
    c["filter_ns"] = _int(_opt(d, "filter_ns", 0), path + ".filter_ns", 0, 12787)
    q = ("rate", "position") if enc else ("rate", "count")
    c["quantity"] = _choice(_opt(d, "quantity", "rate"), path + ".quantity", q)
    rate = c["quantity"] == "rate"
    c["scale"] = _num(_opt(d, "scale", 1), path + ".scale", -1000, 1000)
    if c["scale"] == 0:
        raise ConfigError(path + ".scale", "must not be 0 (engineering units per count%s)"
                          % (" per second" if rate else ""))
    c["window_ms"] = _int(_opt(d, "window_ms", 100), path + ".window_ms", 10, 10000)
    c["valid"] = _range(_opt(d, "valid", [-500000, 500000]), path + ".valid")
    c["units"] = _text(_opt(d, "units", "Hz" if rate else "counts"), path + ".units", 16)


def _modbus(d, path, c):
    # a register on a Modbus RTU slave behind a UART (modbus.py)
    c["uart"] = _int(_opt(d, "uart", 1), path + ".uart", 1, 2)     # UART0 is the REPL's
    for k in ("tx", "rx"):
        c[k] = _int(d[k], path + "." + k, 0, 48)
    c["de"] = _opt(d, "de", None)
    if c["de"] is not None:
        c["de"] = _int(c["de"], path + ".de", 0, 48)
    c["baud"] = _int(_opt(d, "baud", 9600), path + ".baud", 1200, 921600)
    c["parity"] = _choice(_opt(d, "parity", "even"), path + ".parity", ("even", "odd", "none"))
    # the spec: even parity by default; without parity, two stop bits (11 bits a character)
    c["stop"] = _int(_opt(d, "stop", 2 if c["parity"] == "none" else 1), path + ".stop", 1, 2)
    c["slave"] = _int(d["slave"], path + ".slave", 1, 247)
    out = c["kind"] == "modbus_out"
    if not out:
        c["function"] = _int(d["function"], path + ".function", 3, 4)
    types = ("int16", "uint16") if out else ("int16", "uint16", "int32", "uint32")
    c["type"] = _choice(_opt(d, "type", "int16"), path + ".type", types)
    wide = c["type"] in ("int32", "uint32")
    c["register"] = _int(d["register"], path + ".register", 0, 65534 if wide else 65535)
    if not out:
        c["word_order"] = _choice(_opt(d, "word_order", "high_first"), path + ".word_order",
                                  ("high_first", "low_first"))
    c["scale"] = _num(_opt(d, "scale", 1), path + ".scale", -1000000, 1000000)
    if c["scale"] == 0 or abs(c["scale"]) < 1e-6:
        raise ConfigError(path + ".scale", "must not be 0 (at least 1e-06 in size), got "
                          + _show(c["scale"]))
    c["offset"] = _num(_opt(d, "offset", 0), path + ".offset")
    if out:
        c["range"] = _range(_opt(d, "range", [0, 100]), path + ".range")
        c["failsafe"] = _within(_num(d["failsafe"], path + ".failsafe"), path + ".failsafe",
                                c["range"], "range")
        lim = (-32768, 32767) if c["type"] == "int16" else (0, 65535)
        for k in (0, 1):
            raw = (c["range"][k] - c["offset"]) / c["scale"]
            if not lim[0] - 0.5 <= raw < lim[1] + 0.5:
                raise ConfigError("%s.range[%d]" % (path, k), "is register value %s, outside "
                                  "%s's [%d, %d] (range = offset + scale x register)"
                                  % (_show(int(raw) if raw == int(raw) else round(raw, 3)),
                                     c["type"], lim[0], lim[1]))
    else:
        c["valid"] = _range(d["valid"], path + ".valid")
    c["units"] = _text(_opt(d, "units", ""), path + ".units", 16)
    c["period_ms"] = _int(_opt(d, "period_ms", 1000), path + ".period_ms", 10, 3600000)
    if not out:
        c["stale_ms"] = _int(_opt(d, "stale_ms", 3 * c["period_ms"]), path + ".stale_ms",
                             2 * c["period_ms"], 36000000)
    # the request (8 characters) and the longest answer (9) must fit, and a step's delay
    bits = 10 + (c["parity"] != "none") + c["stop"] - 1
    least = (17 * bits * 1000 + c["baud"] - 1) // c["baud"] + 20
    c["timeout_ms"] = _int(_opt(d, "timeout_ms", max(200, least)), path + ".timeout_ms", least,
                           10000)


# kind -> its fields' check (after name, kind and pin)
_CHECK = {"modbus_in": _modbus, "modbus_out": _modbus, "ds18b20": _ds18b20, "tpo": _tpo, "sht3x": _sht3x, "max31855": _max31855,
          "counter": _pulses, "encoder": _pulses}


def shares(a, b, role="pin"):
    """May channels a and b (validated dicts) use the same pin in this role? Only one bus's
    shared pins (a chip select is one device's: two channels of that device share it)."""
    if a["kind"] not in BUS or BUS.get(b["kind"]) != BUS[a["kind"]]:
        return False
    if BUS[a["kind"]] == "Modbus":
        return a["uart"] == b["uart"]     # one UART's TX, RX and DE
    if role in SHARED:
        return True
    return a["kind"] == b["kind"] == "max31855" and a["sck"] == b["sck"]


def check_buses(channels):
    """Across channels (validated dicts): several 1-Wire sensors on one pin need their ROM
    codes, each once; the channels of one I2C or SPI bus agree on its settings; one sensor's
    quantities each once."""
    buses = {}
    for i in range(len(channels)):
        c = channels[i]
        if c["kind"] in ("sht3x", "max31855"):
            key = (c["sda"], c["scl"]) if c["kind"] == "sht3x" else (c["sck"], c["miso"])
            first = buses.setdefault((c["kind"],) + key, (i, c))[1]
            for k in (("i2c", "freq") if c["kind"] == "sht3x" else ("spi", "baud")):
                if c[k] != first[k]:
                    raise ConfigError("channels[%d].%s" % (i, k), 'must be %s, as for channel '
                                      '"%s" on the same bus' % (_show(first[k]), first["name"]))
            unit = c["addr"] if c["kind"] == "sht3x" else c["cs"]
            other = buses.setdefault((c["kind"], unit, c["quantity"]) + key, (i, c))[1]
            if other is not c:
                raise ConfigError("channels[%d].quantity" % i, 'channel "%s" reads the %s of '
                                  'that %s already' % (other["name"], c["quantity"], c["kind"]))
    units = []
    for i in range(len(channels)):
        c = channels[i]
        if c["kind"] in ("counter", "encoder") and c["unit"] is not None:
            if c["unit"] in units:
                raise ConfigError("channels[%d].unit" % i, "PCNT unit %d is another counter's "
                                  "too" % c["unit"])
            units.append(c["unit"])
    n = 0
    for c in channels:
        if c["kind"] in ("counter", "encoder") and c["unit"] is None:
            while n in units:               # the first PCNT unit no other channel names
                n += 1
            c["unit"] = n
            units.append(n)
    _modbus_buses(channels)
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


def _modbus_buses(channels):
    # the channels of one UART agree on its pins and settings; one register, one writer
    first = {}
    writers = {}
    for i in range(len(channels)):
        c = channels[i]
        if BUS.get(c["kind"]) != "Modbus":
            continue
        f = first.setdefault(c["uart"], c)
        for k in ("tx", "rx", "de", "baud", "parity", "stop"):
            if c[k] != f[k]:
                raise ConfigError("channels[%d].%s" % (i, k), 'must be %s, as for channel "%s" '
                                  'on the same bus (UART %d)' % (_show(f[k]), f["name"], c["uart"]))
        if c["kind"] == "modbus_out":
            o = writers.setdefault((c["uart"], c["slave"], c["register"]), c)
            if o is not c:
                raise ConfigError("channels[%d].register" % i, 'channel "%s" writes register %d '
                                  'of slave %d already' % (o["name"], c["register"], c["slave"]))
