# DS18B20 temperature sensors on a 1-Wire bus (docs/config.md, "Sensors and buses").
#
# A conversion takes up to 750 ms (12 bits; datasheet tCONV: 93.75 / 187.5 / 375 / 750 ms
# at 9 / 10 / 11 / 12 bits), so it runs in the background: the node's service steps the bus
# between control passes, one 1-Wire transaction per step (a reset and a few bytes: about
# 1-7 ms of bus time, in which MicroPython runs no callback). The control tick only reads
# the latest value and its age (Sensor.read / ok: allocation-free ints); a sensor that has
# no fresh good reading (missing, CRC errors, never converted) is a sensor fault there,
# which the loop handles as any sensor fault (fail-safe).
import time

from .devices import Reading, MISSING, CRC, WAITING

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_SKIP_ROM = const(0xCC)
_CONVERT = const(0x44)
_READ = const(0xBE)
_WRITE = const(0x4E)
_POWER_ON = const(0x0550)     # 85.0 degC: the scratchpad before any conversion

_CONV_MS = {9: 94, 10: 188, 11: 375, 12: 750}


class Sensor(Reading):
    """One DS18B20: the input a loop reads (devices.Reading)."""

    kind = "ds18b20"

    def __init__(self, ch):
        from binascii import unhexlify

        Reading.__init__(self, ch)
        self.rom = None if ch.rom is None else unhexlify(ch.rom)
        self.resolution = ch.resolution
        self.period_ms = ch.period_ms
        self.configured = False

    def _fail(self, why):
        Reading._fail(self, why)
        self.configured = False     # a sensor that came back has its power-on settings


class Bus:
    """The sensors on one pin. step(now_ms) from the node's service: a conversion on
    every sensor at once (SKIP ROM, CONVERT T) every period, then each sensor's
    scratchpad read by its ROM code, one per step."""

    def __init__(self, pin, board):
        self.pin = pin
        self.ow = board.onewire(pin)
        self.sensors = []
        self.buf = bytearray(9)
        self.state = 0              # 0 idle, 1 converting, 2 reading sensor k
        self.k = 0
        self.t0 = 0
        self.next = time.ticks_ms()

    def add(self, s):
        self.sensors.append(s)

    def recover(self, now):
        # a transaction raised (devices.py counted it): start over at the next period
        self.state = 0
        self.next = time.ticks_add(now, min([s.period_ms for s in self.sensors]))

    def prime(self):
        """At boot, before the loops start: one conversion and every reading, waited for
        (up to 750 ms), so that a loop's first tick has its measurement."""
        now = time.ticks_ms()
        self._start(now)
        if self.state == 1:
            time.sleep_ms(self._conv_ms())
            now = time.ticks_ms()
            for s in self.sensors:
                self._read(s, now)
            self.state = 0
            self.next = time.ticks_add(self.t0, min([s.period_ms for s in self.sensors]))

    def step(self, now):
        if self.state == 0:
            if time.ticks_diff(now, self.next) >= 0:
                self._start(now)
        elif self.state == 1:
            if time.ticks_diff(now, self.t0) >= self._conv_ms():
                self.state = 2
                self.k = 0
        else:
            self._read(self.sensors[self.k], now)
            self.k += 1
            if self.k >= len(self.sensors):
                self.state = 0
                self.next = time.ticks_add(self.t0, min([s.period_ms for s in self.sensors]))

    def _conv_ms(self):
        return max([_CONV_MS[s.resolution] for s in self.sensors])

    def _start(self, now):
        for s in self.sensors:
            if not s.configured:
                self._configure(s)
        if not self.ow.reset():         # no presence pulse: nothing on the bus answers
            for s in self.sensors:
                s._fail(MISSING)
            self.next = time.ticks_add(now, min([s.period_ms for s in self.sensors]))
            return
        self.ow.writebyte(_SKIP_ROM)
        self.ow.writebyte(_CONVERT)
        self.t0 = now
        self.state = 1

    def _select(self, s):
        if s.rom is None:
            self.ow.writebyte(_SKIP_ROM)    # the only sensor on the pin
        else:
            self.ow.select_rom(s.rom)

    def _configure(self, s):
        # resolution into the scratchpad's configuration register (TH, TL unused)
        if not self.ow.reset():
            return
        self._select(s)
        self.ow.writebyte(_WRITE)
        self.ow.write(bytes((0x4B, 0x46, ((s.resolution - 9) << 5) | 0x1F)))
        s.configured = True

    def _read(self, s, now):
        b = self.buf
        if not self.ow.reset():
            s._fail(MISSING)
            return
        self._select(s)
        self.ow.writebyte(_READ)
        self.ow.readinto(b)
        if b[0] == b[1] == b[2] == b[3] == b[4] == b[5] == b[6] == b[7] == b[8] == 0xFF:
            s._fail(MISSING)            # nobody drove the bus: that ROM is not there
            return
        if self.ow.crc8(b):
            s._fail(CRC)
            return
        raw = b[0] | (b[1] << 8)
        if raw & 0x8000:
            raw -= 0x10000
        if raw == _POWER_ON and s.status == WAITING:
            return                      # the power-on value: no conversion has run yet
        s._good((raw * 125) // 2, raw, now)     # 1/16 degC -> milli-degC, exact


def make(devices, ch):
    """The channel for config channel ch (devices.py): its pin's bus, made once."""
    bus = devices.buses.get(("1w", ch.pin))
    if bus is None:
        bus = devices.buses[("1w", ch.pin)] = Bus(ch.pin, devices.board)
        devices.add_stepper(bus)
    s = Sensor(ch)
    bus.add(s)
    return s
