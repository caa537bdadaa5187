# Time-proportioned output (slow PWM) on a digital pin, for relays and SSRs: the output
# value is the share of each period the pin is on (docs/config.md, "Sensors and buses").
#
# The pin is switched by the node's control pass (update(), allocation-free), so its edges
# fall on the pass's period: what a window cannot place (a fraction of a pass, a pulse
# shorter than min_pulse_ms) is carried into the next window, so the average on-time is
# exact over time. Fail-safe: the value at once, the window restarted.
import time

from .fixed import Gain, to_fixed


class TimeProportioned:
    kind = "tpo"

    def __init__(self, ch, board):
        self.name = ch.name
        self.units = ch.units
        self.lo = to_fixed(ch.range[0])
        self.hi = to_fixed(ch.range[1])
        self.failsafe = to_fixed(ch.failsafe)
        self.period_ms = int(ch.period_s * 1000 + 0.5)
        self.min_ms = ch.min_pulse_ms
        self._k = Gain(self.period_ms / (self.hi - self.lo))     # ms of on-time per milli-unit
        self._inv = 1 if ch.invert else 0
        self.value = self.failsafe
        self.raw = 0                # the pin's level (before inversion)
        self.on_ms = 0              # this window's on-time
        self.done = 0               # on-time given in this window so far
        self.carry = 0              # on-time owed from earlier windows (ms, +-period)
        self.want = 0               # this window's share plus the debt, before the limits
        self.hw = board.digital_out(ch.pin, self._inv)
        self.t0 = time.ticks_ms()
        self._last = self.t0
        self.safe()

    def write(self, u):
        # a new value takes effect at the next window, except the fail-safe value: at once
        u = self.lo if u < self.lo else (self.hi if u > self.hi else u)
        if u == self.failsafe and u != self.value:
            self.safe()
        self.value = u

    def safe(self):
        # now, not at the next window: a fail-safe 0 % switches the pin off at once
        self.value = self.failsafe
        self.carry = 0
        self._window(time.ticks_ms())
        self._set(1 if self.on_ms > 0 else 0)

    def state(self):
        return {"value": self.value / 1000, "on": self.raw, "on_ms": self.on_ms,
                "period_ms": self.period_ms}

    def update(self, now):
        # every control pass: account for the time since the last one, then the level.
        # (Small methods: MicroPython heap-allocates a frame of more than 11 words.)
        if self.raw:
            self.done += time.ticks_diff(now, self._last)
        self._last = now
        if time.ticks_diff(now, self.t0) >= self.period_ms:
            self._next(now)
        self._set(1 if time.ticks_diff(now, self.t0) < self.on_ms else 0)

    def _next(self, now):
        # what this window owed (its value's share plus the earlier debt) less what it
        # gave: the pass's granularity and the pulse limits, into the next window
        c = self.want - self.done
        p = self.period_ms
        self.carry = -p if c < -p else (p if c > p else c)
        self._window(now)

    def _window(self, now):
        # a new window: its on-time from the value and what is owed, within the limits
        self.t0 = now
        self._last = now
        self.done = 0
        want = self._k.mul(self.value - self.lo) + self.carry
        self.want = want
        self.on_ms = self._limit(want)

    def _limit(self, want):
        # no pulse (on or off) shorter than min_pulse_ms: rounded to none or to the minimum
        p = self.period_ms
        m = self.min_ms
        if want < m:
            return 0 if want < m // 2 or self.value == self.lo else m
        if want > p - m:
            return p if want > p - m // 2 or self.value == self.hi else p - m
        return want

    def _set(self, level):
        if level != self.raw:
            self.raw = level
            self.hw.write(level ^ self._inv)


def make(devices, ch):
    """The channel for config channel ch (devices.py): switched by every control pass,
    which then runs at least every 1 % of the period (at least 10 ms apart)."""
    o = TimeProportioned(ch, devices.board)
    devices.add_timed(o)
    devices.want_pass_us(max(10000, o.period_ms * 10))
    return o
