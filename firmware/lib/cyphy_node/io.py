# Node IO channels built from the config: engineering values as int milli-units.
#
# Inputs scale the board's raw reading (ADC.read_u16() counts, or a din level) to milli-units
# with integer math and check the valid range; outputs scale milli-units to the board's
# duty/level and are written at their fail-safe value when built, so a node starts SAFE.
# read()/write() allocate nothing (ints only; Gain.mul is allocation-free).
from .fixed import Gain, to_fixed, VAL_MAX, VAL_MIN


class Input:
    """An adc or din channel. read() -> milli-units; ok(v) -> value within `valid`."""

    def __init__(self, ch, board):
        self.name = ch.name
        self.kind = ch.kind
        self.value = 0
        self.raw = 0
        if ch.kind == "adc":
            s = ch.scale
            self.hw = board.analog_in(ch.pin)
            self._r0 = s.raw_min
            self._e0 = to_fixed(s.eng_min)
            slope = (s.eng_max - s.eng_min) * 1000.0 / (s.raw_max - s.raw_min)
            self._neg = slope < 0
            self._g = Gain(abs(slope))
            self.read = self._read_adc
            v = ch.valid
        else:
            self.hw = board.digital_in(ch.pin, None if ch.pull == "none" else ch.pull)
            self._inv = 1 if ch.invert else 0
            self.read = self._read_din
            v = ch.valid
        # valid range in milli-units (inclusive)
        self.vmin = to_fixed(v[0])
        self.vmax = to_fixed(v[1])

    def _read_adc(self):
        r = self.hw.read_u16()
        self.raw = r
        d = self._g.mul(r - self._r0)
        v = self._e0 - d if self._neg else self._e0 + d
        v = VAL_MIN if v < VAL_MIN else (VAL_MAX if v > VAL_MAX else v)
        self.value = v
        return v

    def _read_din(self):
        r = self.hw.read() ^ self._inv
        self.raw = r
        v = 1000 if r else 0
        self.value = v
        return v

    def ok(self, v):
        return self.vmin <= v <= self.vmax


class Output:
    """A pwm, dac or dout channel. write(milli-units); the fail-safe value is written at once."""

    def __init__(self, ch, board):
        self.name = ch.name
        self.kind = ch.kind
        self.failsafe = to_fixed(ch.failsafe)
        lo, hi = ch.range
        self.lo = to_fixed(lo)
        self.hi = to_fixed(hi)
        self._inv = 1 if ch.get("invert", False) else 0
        self.value = self.failsafe
        self.raw = 0
        if ch.kind == "pwm":
            self._full = 65535
            self._g = Gain(65535.0 / (self.hi - self.lo))
            self.hw = board.pwm_out(ch.pin, ch.freq_hz, self._scaled(self.failsafe))
            self.write = self._write_pwm
        elif ch.kind == "dac":
            self._full = 255
            self._g = Gain(255.0 / (self.hi - self.lo))
            self.hw = board.dac_out(ch.pin, self._scaled(self.failsafe))
            self.write = self._write_dac
        else:
            self._full = 1
            self.hw = board.digital_out(ch.pin, self._scaled(self.failsafe))
            self.write = self._write_dout
        self.write(self.failsafe)

    def _scaled(self, u):
        # milli-units -> the board's unit (duty_u16, DAC u8 or a level), clamped, inverted
        u = self.lo if u < self.lo else (self.hi if u > self.hi else u)
        if self._full == 1:
            r = 1 if 2 * u >= self.lo + self.hi else 0
        else:
            r = self._g.mul(u - self.lo)
            r = self._full if r > self._full else (0 if r < 0 else r)
        if self._inv:
            r = self._full - r
        return r

    def _write_pwm(self, u):
        r = self._scaled(u)
        self.value = u
        self.raw = r
        self.hw.duty_u16(r)

    def _write_dac(self, u):
        r = self._scaled(u)
        self.value = u
        self.raw = r
        self.hw.write_u8(r)

    def _write_dout(self, u):
        r = self._scaled(u)
        self.value = u
        self.raw = r
        self.hw.write(r)

    def safe(self):
        self.write(self.failsafe)
