# Maxim MAX31855 thermocouple-to-digital converter on SPI (docs/config.md, "Sensors and
# buses"). Datasheet: read-only, 32 bits per read with CS low (mode 0, at most 5 MHz):
# D31..D18 thermocouple temperature (14-bit two's complement, 0.25 degC), D16 fault,
# D15..D4 internal (cold-junction) temperature (12 bits, 0.0625 degC), D2 SCV (short to
# VCC), D1 SCG (short to GND), D0 OC (open circuit). It converts continuously (tCONV max
# 100 ms); a read returns the last finished conversion.
#
# A read is 4 bytes (about 10 us at 5 MHz): done in the service, one sensor per step, at
# the channel's period; the control tick reads only the latest value and its age.
import time

from .devices import Reading, MISSING

OPEN = 5
SHORT_GND = 6
SHORT_VCC = 7
STATUS = ("ok", "missing", "crc error", "stale", "waiting", "open circuit",
          "short to GND", "short to VCC")


class Channel(Reading):
    """One quantity of one MAX31855: the input a loop reads (devices.Reading)."""

    kind = "max31855"
    STATUS = STATUS

    def __init__(self, ch):
        Reading.__init__(self, ch)
        self.quantity = ch.quantity
        self.period_ms = ch.period_ms


class Converter:
    """One MAX31855 (its chip select): its channels and their reads."""

    def __init__(self, spi, cs):
        self.spi = spi
        self.cs = cs
        self.channels = []
        self.buf = bytearray(4)
        self.next = time.ticks_ms()

    def step(self, now):
        if time.ticks_diff(now, self.next) < 0:
            return
        self.next = time.ticks_add(now, min([c.period_ms for c in self.channels]))
        b = self.buf
        self.cs.write(0)
        try:
            self.spi.readinto(b)
        finally:
            self.cs.write(1)
        self._decode(b, now)

    def _decode(self, b, now):
        w = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]      # < 2**32 on CPython;
        for c in self.channels:                                   # service: may allocate
            if w == 0 or w == 0xFFFFFFFF:
                c._fail(MISSING)            # MISO stuck: no converter answering
            elif c.quantity == "internal":
                t = (w >> 4) & 0xFFF
                t = t - 0x1000 if t & 0x800 else t
                self._set(c, t, t * 125 // 2, now)    # 0.0625 degC = 62.5 milli-degC
            elif w & 0x10000:
                c._fail(OPEN if w & 1 else (SHORT_GND if w & 2 else SHORT_VCC))
            else:
                t = (w >> 18) & 0x3FFF
                t = t - 0x4000 if t & 0x2000 else t
                self._set(c, t, t * 250, now)         # 0.25 degC = 250 milli-degC

    @staticmethod
    def _set(c, raw, milli, now):
        c._good(milli, raw, now)

    def prime(self):
        self.step(time.ticks_ms())

    def recover(self, now):
        self.next = time.ticks_add(now, min([c.period_ms for c in self.channels]))


def make(devices, ch):
    key = ("spi", ch.sck, ch.miso)
    bus = devices.buses.get(key)
    if bus is None:
        bus = devices.buses[key] = devices.board.spi(ch.spi, ch.sck, ch.miso, ch.baud)
    ckey = ("max31855", ch.cs)
    conv = devices.buses.get(ckey)
    if conv is None:
        conv = devices.buses[ckey] = Converter(bus, devices.board.digital_out(ch.cs, 1))
        devices.add_stepper(conv)
    c = Channel(ch)
    conv.channels.append(c)
    return c
