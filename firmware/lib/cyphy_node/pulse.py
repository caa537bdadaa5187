# Pulse counter and quadrature encoder channels (docs/config.md, "Sensors and buses"): a
# rate (e.g. a motor's speed from its encoder's pulses) or a count/position, from ESP32's
# PCNT units through machine.Counter / machine.Encoder (the HAL's counter(), encoder()).
#
# The hardware counts; the control pass (update(), allocation-free) takes the count with
# value(0) (get and restart: the counts stay small ints) and every `window_ms` turns what
# it gathered into a rate over the time that really passed; a position accumulates. The
# loop reads the latest value: read()/ok() as every input.
import time

from .fixed import Gain, to_fixed, VAL_MAX, VAL_MIN

OK = 0
WAITING = 4
STATUS = ("ok", "missing", "crc error", "stale", "waiting")


class Pulses:
    kind = "counter"

    def __init__(self, ch, hw):
        self.name = ch.name
        self.kind = ch.kind
        self.quantity = ch.quantity
        self.units = ch.units
        self.vmin = to_fixed(ch.valid[0])
        self.vmax = to_fixed(ch.valid[1])
        self.hw = hw
        self.window_ms = ch.window_ms
        self._rate = ch.quantity == "rate"
        # milli-units per count (position, count) or per count per ms (rate): scale * 1000
        # and scale * 1e6, as gains with a sign
        k = ch.scale * (1000000.0 if self._rate else 1000.0)
        self._neg = k < 0
        self._k = Gain(-k if k < 0 else k)
        self.value = 0
        self.raw = 0                # counts gathered in this window (rate) / in total
        self.acc = 0
        self.t0 = time.ticks_ms()
        self.good = 0 if self._rate else 1
        self.status = WAITING if self._rate else OK
        hw.value(0)

    def read(self):
        return self.value

    def ok(self, v):
        return self.good and self.vmin <= v <= self.vmax

    def update(self, now):
        d = self.hw.value(0)
        if self._rate:
            self.acc += d
            if time.ticks_diff(now, self.t0) >= self.window_ms:
                self._window(now)
        else:
            self._count(d)

    def _window(self, now):
        dt = time.ticks_diff(now, self.t0)
        v = self._k.mul(self.acc)
        v = v // dt if v >= 0 else -((-v) // dt)
        self.value = -v if self._neg else v
        self.raw = self.acc
        self.acc = 0
        self.t0 = now
        self.good = 1
        self.status = OK

    def _count(self, d):
        self.raw += d
        v = self._k.mul(d)
        v = self.value + (-v if self._neg else v)
        self.value = VAL_MIN if v < VAL_MIN else (VAL_MAX if v > VAL_MAX else v)

    def zero(self):
        """A count or position back to 0 (REPL)."""
        self.value = 0
        self.raw = 0

    def state(self):
        return {"value": self.value / 1000, "status": STATUS[self.status], "counts": self.raw}


def make(devices, ch):
    b = devices.board
    if ch.kind == "counter":
        hw = b.counter(ch.unit, ch.pin, ch.edge, ch.filter_ns)
    else:
        hw = b.encoder(ch.unit, ch.pin_a, ch.pin_b, ch.phases, ch.filter_ns)
    p = Pulses(ch, hw)
    devices.add_timed(p)
    if p._rate:
        devices.want_pass_us(max(1000, ch.window_ms * 1000 // 10))
    return p
