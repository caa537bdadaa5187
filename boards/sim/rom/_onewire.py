# The sim's `onewire` module and the DS18B20 sensors on its buses.
#
# MicroPython's onewire module on ESP32 (micropython-lib's onewire.py over the port's
# _onewire C functions, frozen into the firmware) has class OneWire(pin) with reset(required),
# readbit, readbyte, readinto, writebit, writebyte, write, select_rom (a reset, MATCH ROM and
# the code), scan and crc8, the command constants, and OneWireError. This module is that
# API over device models wired to the bench's plant: the firmware's own driver
# (cyphy_node/ds18b20.py) runs unchanged against it, byte by byte.
#
# What the model keeps of a real bus and sensor (Maxim DS18B20 datasheet; 1-Wire standard
# speed, Maxim AN126):
# - time: a reset takes 960 us and a byte 8 x 70 us of bus time, in which no soft callback
#   runs (as in the C functions); callbacks may run between two calls, as between the
#   Python-level calls of onewire.py;
# - a conversion (CONVERT T) takes the datasheet's maximum, 93.75 / 187.5 / 375 / 750 ms at
#   9 / 10 / 11 / 12 bits; until it ends, the scratchpad keeps its previous temperature,
#   and before any conversion it reads 85.0 degC (0x0550), as after power-on;
# - the temperature is quantised to the resolution (the low bits 0 below 12 bits) and
#   clamped to -55..125 degC; the scratchpad's byte 8 is its Dallas CRC-8;
# - nobody driving the bus reads as 1s (0xFF): a missing sensor, or a code that matches
#   none; SKIP ROM with several sensors then READ SCRATCHPAD gives their wired-AND;
# - faults from the bench, at plant times: "missing" (no presence pulse, no answer), "crc"
#   (a bit of every scratchpad read flipped), "none".
#
# Bench wiring: {"pin": 4, "kind": "onewire", "devices": [{"signal": "temperature",
#   "rom": "28ff641e0f160383" (optional: one is made from the pin and index),
#   "faults": [{"at_s": 100, "fault": "missing"}, {"at_s": 130, "fault": "none"}]}]}

_RESET_US = 960
_BYTE_US = 560
_CONV_US = (93750, 187500, 375000, 750000)   # 9..12 bits


def crc8(data):
    # Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, reflected), over every byte: 0 when the
    # data ends with its own CRC
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


def _rom_for(pin, i):
    r = bytearray([0x28, 0x10 + pin, i, 0x5A, 0x11, 0x03, 0x00])
    return bytes(r + bytes([crc8(r)]))


class DS18B20:
    def __init__(self, spec, pin, index, bench):
        rom = spec.get("rom")
        self.rom = bytes.fromhex(rom) if rom else _rom_for(pin, index)
        if len(self.rom) != 8 or crc8(self.rom) != 0 or self.rom[0] != 0x28:
            raise ValueError("bench wiring: pin %d device %d: rom %r is not a DS18B20 code "
                             "(family 28, 8 bytes, CRC-8 last)" % (pin, index, rom))
        self.signal = spec["signal"]
        self.faults = sorted([(float(f["at_s"]), f["fault"]) for f in spec.get("faults", [])])
        for _, f in self.faults:
            if f not in ("missing", "crc", "none"):
                raise ValueError("bench wiring: pin %d device %d: fault %r (missing, crc, none)"
                                 % (pin, index, f))
        self.bench = bench
        self.config = 0x7F          # 12 bits, as from the factory (EEPROM default)
        self.th, self.tl = 0x4B, 0x46
        self.raw = 0x0550           # the power-on value, 85 degC
        self.conv_end = None        # now_us when the running conversion ends

    def fault(self, now_us):
        f = "none"
        for at, what in self.faults:
            if now_us >= at * 1000000:
                f = what
        return f

    def resolution(self):
        return 9 + ((self.config >> 5) & 3)

    def convert(self, now_us):
        self.conv_end = now_us + _CONV_US[self.resolution() - 9]

    def _latch(self, now_us):
        if self.conv_end is not None and now_us >= self.conv_end:
            self.conv_end = None
            t = self.bench.measure(self.signal)
            t = -55.0 if t < -55.0 else (125.0 if t > 125.0 else t)
            raw = int(round(t * 16)) & ~((1 << (12 - self.resolution())) - 1)
            self.raw = raw & 0xFFFF

    def scratchpad(self, now_us):
        self._latch(now_us)
        b = bytearray([self.raw & 0xFF, self.raw >> 8, self.th, self.tl, self.config, 0xFF,
                       0x0C, 0x10])
        b.append(crc8(b))
        if self.fault(now_us) == "crc":
            b[0] ^= 0x04
        return b


class Bus:
    """The devices wired to one pin, and the bus's protocol state."""

    def __init__(self, pin, devices):
        self.pin = pin
        self.devices = devices
        self.selected = []
        self.mode = None            # after a reset: "rom"; then "match", "fn", "write"
        self.rx = bytearray()       # bytes the devices will put on the bus next
        self.acc = bytearray()      # bytes collected for MATCH ROM / WRITE SCRATCHPAD

    def present(self, now_us):
        return [d for d in self.devices if d.fault(now_us) != "missing"]

    def reset(self, now_us):
        self.selected = self.present(now_us)
        self.mode = "rom"
        self.rx = bytearray()
        return bool(self.selected)

    def write(self, b, now_us):
        m = self.mode
        if m == "rom":
            if b == 0xCC:
                self.mode = "fn"
            elif b == 0x55:
                self.mode = "match"
                self.acc = bytearray()
            elif b == 0x33 and len(self.selected) == 1:
                self.rx = bytearray(self.selected[0].rom)
                self.mode = None
            else:
                self.mode = None
        elif m == "match":
            self.acc.append(b)
            if len(self.acc) == 8:
                code = bytes(self.acc)
                self.selected = [d for d in self.selected if d.rom == code]
                self.mode = "fn"
        elif m == "fn":
            if b == 0x44:
                for d in self.selected:
                    d.convert(now_us)
                self.mode = None
            elif b == 0xBE:
                data = None
                for d in self.selected:
                    s = d.scratchpad(now_us)
                    data = s if data is None else bytearray([x & y for x, y in zip(data, s)])
                self.rx = data if data is not None else bytearray()
                self.mode = None
            elif b == 0x4E:
                self.mode = "write"
                self.acc = bytearray()
            else:
                self.mode = None
        elif m == "write":
            self.acc.append(b)
            if len(self.acc) == 3:
                for d in self.selected:
                    d.th, d.tl, d.config = self.acc[0], self.acc[1], (self.acc[2] & 0x60) | 0x1F
                self.mode = None

    def read(self):
        if self.rx:
            b = self.rx[0]
            self.rx = self.rx[1:]
            return b
        return 0xFF                 # nobody drives the bus: the pull-up's 1s


def make(bench, clock, Module, Pin):
    """The onewire module of a board with this bench (bench.onewire: pin -> Bus)."""

    class OneWireError(Exception):
        pass

    def busy(us):
        clock.busy_us(us)

    class OneWire:
        SEARCH_ROM = 0xF0
        MATCH_ROM = 0x55
        SKIP_ROM = 0xCC

        def __init__(self, pin):
            pin.init(pin.OPEN_DRAIN, pin.PULL_UP)
            self.pin = pin
            self.bus = bench.onewire.get(pin.id) or Bus(pin.id, [])

        def reset(self, required=False):
            busy(_RESET_US)
            ok = self.bus.reset(clock.now_us())
            if required and not ok:
                raise OneWireError
            return ok

        def readbit(self):
            busy(_BYTE_US // 8)
            return 1                # a bit at a time is not modelled: an idle bus

        def readbyte(self):
            busy(_BYTE_US)
            return self.bus.read()

        def readinto(self, buf):
            for i in range(len(buf)):
                buf[i] = self.readbyte()

        def writebit(self, value):
            busy(_BYTE_US // 8)

        def writebyte(self, value):
            busy(_BYTE_US)
            self.bus.write(value & 0xFF, clock.now_us())

        def write(self, buf):
            for b in buf:
                self.writebyte(b)

        def select_rom(self, rom):
            self.reset()
            self.writebyte(self.MATCH_ROM)
            self.write(rom)

        def scan(self):
            # the search protocol's result: every present code, in ROM order (64 passes of
            # 3 bit slots each on the wire)
            found = sorted(d.rom for d in self.bus.present(clock.now_us()))
            busy(len(found) * (_RESET_US + _BYTE_US + 64 * 3 * _BYTE_US // 8) + _RESET_US)
            return [bytearray(r) for r in found]

        def crc8(self, data):
            return crc8(data)

    return Module("onewire", OneWire=OneWire, OneWireError=OneWireError)
