# Sensirion SHT3x (SHT30/31/35) temperature and humidity on an I2C bus (docs/config.md,
# "Sensors and buses"). Datasheet (SHT3x-DIS): single shot, high repeatability, no clock
# stretching: write 0x24 0x00, wait at least 15.5 ms (tMEAS max), read 6 bytes: T MSB, T LSB,
# CRC, RH MSB, RH LSB, CRC (CRC-8, polynomial 0x31, init 0xFF); T = -45 + 175 * St / 65535
# degC, RH = 100 * Srh / 65535 %. A read before the measurement ends is NACKed (MicroPython:
# OSError). One measurement serves the sensor's temperature and humidity channels.
#
# Run from the node's service, one I2C transaction per step (write 2 bytes, or read 6: about
# 0.3 / 0.7 ms at 100 kHz); the control tick reads only the latest value and its age.
import time

from .devices import Reading, MISSING, CRC

_MEASURE = b"\x24\x00"
_MEAS_MS = 16


def crc8(data, n):
    # CRC-8 of data[0:n], polynomial x^8 + x^5 + x^4 + 1 (0x31), init 0xFF (datasheet 4.12)
    c = 0xFF
    i = 0
    while i < n:
        c ^= data[i]
        k = 0
        while k < 8:
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
            k += 1
        i += 1
    return c


class Channel(Reading):
    """One quantity of one SHT3x: the input a loop reads (devices.Reading)."""

    kind = "sht3x"

    def __init__(self, ch):
        Reading.__init__(self, ch)
        self.quantity = ch.quantity
        self.period_ms = ch.period_ms

    def _set(self, raw, now):
        # raw: the 16-bit signal; milli-units without floats: 175000 * raw / 65535 fits
        # 31 bits (175000 * 65535 < 2**34: done in two halves)
        if self.quantity == "temperature":
            self._good(-45000 + _scale(raw, 175000), raw, now)
        else:
            self._good(_scale(raw, 100000), raw, now)


def _scale(raw, full):
    # round(full * raw / 65535) for 0 <= raw <= 65535, full <= 175000, in small ints
    hi = (full >> 8) * raw              # < 684 * 65536 < 2**26
    lo = (full & 0xFF) * raw            # < 2**24
    return ((hi << 8) + lo + 32767) // 65535


class Sensor:
    """One SHT3x at an address: its channels, and its measure/read cycle."""

    def __init__(self, i2c, addr):
        self.i2c = i2c
        self.addr = addr
        self.channels = []
        self.buf = bytearray(6)
        self.state = 0              # 0 idle, 1 measuring
        self.t0 = 0
        self.next = time.ticks_ms()

    def period(self):
        return min([c.period_ms for c in self.channels])

    def step(self, now):
        if self.state == 0:
            if time.ticks_diff(now, self.next) >= 0:
                self._start(now)
        elif time.ticks_diff(now, self.t0) >= _MEAS_MS:
            self.state = 0
            self.next = time.ticks_add(self.t0, self.period())
            self._read(now)

    def _start(self, now):
        try:
            self.i2c.writeto(self.addr, _MEASURE)
        except OSError:             # no ACK: nobody at the address
            for c in self.channels:
                c._fail(MISSING)
            self.next = time.ticks_add(now, self.period())
            return
        self.t0 = now
        self.state = 1

    def _read(self, now):
        b = self.buf
        try:
            self.i2c.readfrom_into(self.addr, b)
        except OSError:
            for c in self.channels:
                c._fail(MISSING)
            return
        for c in self.channels:
            o = 0 if c.quantity == "temperature" else 3
            if crc8(b[o:o + 3], 2) != b[o + 2]:
                c._fail(CRC)
            else:
                c._set((b[o] << 8) | b[o + 1], now)

    def prime(self):
        now = time.ticks_ms()
        self._start(now)
        if self.state == 1:
            time.sleep_ms(_MEAS_MS)
            self.state = 0
            self._read(time.ticks_ms())
            self.next = time.ticks_add(self.t0, self.period())

    def recover(self, now):
        self.state = 0
        self.next = time.ticks_add(now, self.period())


def make(devices, ch):
    key = ("i2c", ch.sda, ch.scl)
    bus = devices.buses.get(key)
    if bus is None:
        bus = devices.buses[key] = devices.board.i2c(ch.i2c, ch.sda, ch.scl, ch.freq)
    skey = ("sht3x", ch.sda, ch.scl, ch.addr)
    s = devices.buses.get(skey)
    if s is None:
        s = devices.buses[skey] = Sensor(bus, ch.addr)
        devices.add_stepper(s)
    c = Channel(ch)
    s.channels.append(c)
    return c
