# The sim's machine.I2C and the SHT3x sensors on its buses.
#
# machine.I2C on ESP32 (docs: machine.I2C; ports/esp32/machine_i2c.c): I2C(id, scl=Pin,
# sda=Pin, freq=400000), scan(), writeto(addr, buf, stop=True) -> the number of ACKed
# bytes, readfrom_into(addr, buf, stop=True), readfrom(addr, n); a transfer the addressed
# device does not ACK raises OSError (ENODEV). The sensor model (Sensirion SHT3x-DIS):
# single shot, high repeatability, no clock stretching (0x24 0x00): the measurement takes
# tMEAS max 15.5 ms, during which a read is NACKed; then 6 bytes: temperature, CRC,
# humidity, CRC (CRC-8 0x31, init 0xFF), St = (T + 45) / 175 * 65535, Srh = RH / 100 *
# 65535; a second read without a new measurement is NACKed. Bus time: 9 bit times per byte
# (with the ACK) at the bus's frequency, no callbacks inside a transfer.
#
# Bench wiring: {"kind": "i2c", "sda": 21, "scl": 22, "devices": [{"type": "sht3x",
#   "addr": 68, "temperature": "temperature", "humidity": 45.0 (a plant signal or a
#   constant), "faults": [{"at_s": 100, "fault": "missing"|"crc"|"none"}]}]}

_ENODEV = 19
_MEAS_US = 15500


def crc8(data):
    c = 0xFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _faults(spec, where):
    out = sorted([(float(f["at_s"]), f["fault"]) for f in spec.get("faults", [])])
    for _, f in out:
        if f not in ("missing", "crc", "none"):
            raise ValueError("bench wiring: %s: fault %r (missing, crc, none)" % (where, f))
    return out


def fault_at(faults, now_us):
    f = "none"
    for at, what in faults:
        if now_us >= at * 1000000:
            f = what
    return f


class SHT3x:
    def __init__(self, spec, bench, where):
        self.addr = int(spec.get("addr", 0x44))
        if self.addr not in (0x44, 0x45):
            raise ValueError("bench wiring: %s: an SHT3x answers at 0x44 or 0x45, not %r"
                             % (where, spec.get("addr")))
        self.t = spec.get("temperature", 25.0)
        self.rh = spec.get("humidity", 50.0)
        self.faults = _faults(spec, where)
        self.bench = bench
        self.done_at = None         # now_us when the running measurement ends
        self.data = None            # the 6 bytes of the last finished measurement

    def _value(self, v):
        return self.bench.measure(v) if isinstance(v, str) else float(v)

    def acks(self, now_us):
        return fault_at(self.faults, now_us) != "missing"

    def write(self, buf, now_us):
        if bytes(buf) in (b"\x24\x00", b"\x24\x0b", b"\x24\x16"):   # single shot, no stretch
            self.done_at = now_us + _MEAS_US
            self.data = None

    def read(self, n, now_us):
        # None: NACK (measuring, or nothing measured since the last read)
        if self.done_at is None or now_us < self.done_at:
            return None
        self.done_at = None
        t = min(130.0, max(-45.0, self._value(self.t)))
        rh = min(100.0, max(0.0, self._value(self.rh)))
        st = int(round((t + 45.0) / 175.0 * 65535))
        srh = int(round(rh / 100.0 * 65535))
        b = bytearray([st >> 8, st & 0xFF])
        b.append(crc8(b))
        h = bytearray([srh >> 8, srh & 0xFF])
        b += h + bytes([crc8(h)])
        if fault_at(self.faults, now_us) == "crc":
            b[1] ^= 0x01
        return bytes(b[:n])


class Bus:
    def __init__(self, sda, scl, devices):
        self.sda, self.scl, self.devices = sda, scl, devices

    def device(self, addr, now_us):
        for d in self.devices:
            if d.addr == addr and d.acks(now_us):
                return d
        return None


def make_class(bench, clock):
    """machine.I2C of a board with this bench (bench.i2c: (sda, scl) -> Bus)."""

    class I2C:
        def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
            if id not in (0, 1):
                raise ValueError("I2C(%s) doesn't exist" % (id,))
            self.id = id
            self.freq = freq
            self.sda = sda.id if sda is not None else 21
            self.scl = scl.id if scl is not None else 22
            self.bus = bench.i2c.get((self.sda, self.scl)) or Bus(self.sda, self.scl, [])

        def _busy(self, nbytes):
            clock.busy_us((nbytes + 1) * 9 * 1000000 // self.freq + 20)

        def scan(self):
            now = clock.now_us()
            self._busy(112)
            return sorted([d.addr for d in self.bus.devices if d.acks(now)])

        def writeto(self, addr, buf, stop=True):
            self._busy(len(buf))
            now = clock.now_us()
            d = self.bus.device(addr, now)
            if d is None:
                raise OSError(_ENODEV)
            d.write(buf, now)
            return len(buf)

        def readfrom_into(self, addr, buf, stop=True):
            self._busy(len(buf))
            now = clock.now_us()
            d = self.bus.device(addr, now)
            data = None if d is None else d.read(len(buf), now)
            if data is None:
                raise OSError(_ENODEV)
            for i in range(len(buf)):
                buf[i] = data[i] if i < len(data) else 0xFF

        def readfrom(self, addr, n, stop=True):
            b = bytearray(n)
            self.readfrom_into(addr, b, stop)
            return bytes(b)

    return I2C


def wire(bench, w, where):
    """bench.i2c's entry for one wiring entry."""
    devs = []
    for i, d in enumerate(w.get("devices", [])):
        if d.get("type") != "sht3x":
            raise ValueError("bench wiring: %s devices[%d]: type must be sht3x" % (where, i))
        devs.append(SHT3x(d, bench, "%s devices[%d]" % (where, i)))
    return Bus(w["sda"], w["scl"], devs)
