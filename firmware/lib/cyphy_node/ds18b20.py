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

OK = const(0)
MISSING = const(1)
CRC = const(2)
STALE = const(3)
WAITING = const(4)
STATUS = ("ok", "missing", "crc error", "stale", "waiting")
_CONV_MS = {9: 94, 10: 188, 11: 375, 12: 750}


class Sensor:
    """One DS18B20: the input interface a loop reads (read, ok, vmin, vmax, units)."""

    kind = "ds18b20"

    def __init__(self, ch):
        from binascii import unhexlify
        from .fixed import to_fixed

        self.name = ch.name
        self.units = "degC"
        self.vmin = to_fixed(ch.valid[0])
        self.vmax = to_fixed(ch.valid[1])
        self.rom = None if ch.rom is None else unhexlify(ch.rom)
        self.resolution = ch.resolution
        self.period_ms = ch.period_ms
        self.stale_ms = ch.stale_ms
        self.value = 0              # the latest good reading, milli-degC
        self.raw = 0                # its scratchpad word (1/16 degC)
        self.t_ms = 0               # ticks_ms of it
        self.good = 0               # 1 while the latest attempt gave a good reading
        self.status = WAITING
        self.errors = 0             # attempts that failed (missing, CRC)
        self.configured = False

    def read(self):
        return self.value

    def ok(self, v):
        # tick-safe: a good, fresh reading within the valid range
        if not self.good or v < self.vmin or v > self.vmax:
            return False
        if time.ticks_diff(time.ticks_ms(), self.t_ms) > self.stale_ms:
            self.status = STALE
            return False
        return True

    def age_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.t_ms) if self.t_ms or self.good else None

    def state(self):
        return {"value": self.value / 1000, "status": STATUS[self.status],
                "age_ms": self.age_ms(), "errors": self.errors}

    def _fail(self, why):
        self.good = 0
        self.status = why
        self.errors += 1
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
        s.raw = raw
        s.value = (raw * 125) // 2      # 1/16 degC -> milli-degC, exact
        s.t_ms = now
        s.good = 1
        s.status = OK


def make(devices, ch):
    """The channel for config channel ch (devices.py): its pin's bus, made once."""
    bus = devices.buses.get(("1w", ch.pin))
    if bus is None:
        bus = devices.buses[("1w", ch.pin)] = Bus(ch.pin, devices.board)
        devices.add_stepper(bus)
    s = Sensor(ch)
    bus.add(s)
    return s
