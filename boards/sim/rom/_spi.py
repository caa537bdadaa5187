# The sim's machine.SPI and the MAX31855 thermocouple converters on its buses.
#
# machine.SPI on ESP32 (docs: machine.SPI; ports/esp32/machine_hw_spi.c): SPI(id,
# baudrate, polarity, phase, sck=Pin, mosi=Pin, miso=Pin) for id 1 and 2, read, readinto,
# write, write_readinto; chip selects are plain Pins the code drives. The converter model
# (Maxim MAX31855 datasheet): selected while its CS pin is low, it shifts out 32 bits:
# D31..D18 thermocouple temperature (0.25 degC, 14-bit two's complement), D16 fault,
# D15..D4 internal temperature (0.0625 degC, 12 bits), D2 SCV, D1 SCG, D0 OC; it converts
# continuously every 100 ms (tCONV max) and a read returns the last finished conversion.
# Nobody selected, or a converter missing, reads as the pull-up's 1s. Bus time: 8 bits per
# byte at the baud rate, plus the call.
#
# Bench wiring: {"kind": "spi", "sck": 18, "miso": 19, "devices": [{"type": "max31855",
#   "cs": 5, "signal": "temperature", "internal": 25.0, "faults": [{"at_s": 100, "fault":
#   "open"|"short_gnd"|"short_vcc"|"missing"|"none"}]}]}

_CONV_US = 100000


def _faults(spec, where):
    out = sorted([(float(f["at_s"]), f["fault"]) for f in spec.get("faults", [])])
    for _, f in out:
        if f not in ("open", "short_gnd", "short_vcc", "missing", "none"):
            raise ValueError("bench wiring: %s: fault %r (open, short_gnd, short_vcc, missing, "
                             "none)" % (where, f))
    return out


class MAX31855:
    def __init__(self, spec, bench, where):
        self.cs = int(spec["cs"])
        self.signal = spec["signal"]
        self.internal = spec.get("internal", 25.0)
        self.faults = _faults(spec, where)
        self.bench = bench
        self.t_conv = -_CONV_US     # start of the last finished conversion
        self.word = None

    def fault(self, now_us):
        f = "none"
        for at, what in self.faults:
            if now_us >= at * 1000000:
                f = what
        return f

    def selected(self):
        # CS driven low (a CS nobody drives floats high through the board's pull-up)
        return self.bench.driven[self.cs] and self.bench.out_num[self.cs] == 0

    def read32(self, now_us):
        f = self.fault(now_us)
        if f == "missing":
            return 0xFFFFFFFF
        if self.word is None or now_us - self.t_conv >= _CONV_US:
            self.t_conv = now_us - (now_us % _CONV_US)
            t = self.bench.measure(self.signal)
            t = -270.0 if t < -270.0 else (1372.0 if t > 1372.0 else t)
            tc = int(round(t * 4)) & 0x3FFF
            i = self.internal
            it = int(round((self.bench.measure(i) if isinstance(i, str) else float(i)) * 16)) & 0xFFF
            self.word = (tc << 18) | (it << 4)
        w = self.word
        if f != "none":
            w = (w & ~(0x3FFF << 18)) | 0x10000 | {"open": 1, "short_gnd": 2, "short_vcc": 4}[f]
        return w


class Bus:
    def __init__(self, sck, miso, devices):
        self.sck, self.miso, self.devices = sck, miso, devices


def make_class(bench, clock):
    """machine.SPI of a board with this bench (bench.spi: (sck, miso) -> Bus)."""

    class SPI:
        MSB = 0

        def __init__(self, id, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0,
                     sck=None, mosi=None, miso=None):
            if id not in (1, 2):
                raise ValueError("SPI(%s) doesn't exist" % (id,))
            self.baudrate = baudrate
            self.sck = sck.id if sck is not None else 14
            self.miso = miso.id if miso is not None else 12
            self.bus = bench.spi.get((self.sck, self.miso)) or Bus(self.sck, self.miso, [])
            self.pos = 0

        def _word(self):
            now = clock.now_us()
            for d in self.bus.devices:
                if d.selected():
                    return d.read32(now)
            return 0xFFFFFFFF

        def readinto(self, buf, write=0):
            clock.busy_us(len(buf) * 8 * 1000000 // self.baudrate + 10)
            w = self._word()
            for i in range(len(buf)):
                buf[i] = (w >> (24 - 8 * i)) & 0xFF if i < 4 else 0xFF

        def read(self, n, write=0):
            b = bytearray(n)
            self.readinto(b, write)
            return bytes(b)

        def write(self, buf):
            clock.busy_us(len(buf) * 8 * 1000000 // self.baudrate + 10)

    return SPI


def wire(bench, w, where):
    devs = []
    for i, d in enumerate(w.get("devices", [])):
        if d.get("type") != "max31855" or "cs" not in d or "signal" not in d:
            raise ValueError("bench wiring: %s devices[%d]: needs type max31855, cs, signal"
                             % (where, i))
        devs.append(MAX31855(d, bench, "%s devices[%d]" % (where, i)))
    return Bus(w["sck"], w["miso"], devs)
