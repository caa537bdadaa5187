# Node IO channels built from the config: engineering values as int milli-units.
#
# Inputs scale the board's reading to milli-units with integer math and check the valid
# range: an adc channel reads the calibrated voltage (AnalogIn.read_uv(), microvolts: on
# ESP32 ADC.read_uv(), the eFuse calibration; read_u16() is the raw, non-linear reading and
# is not used) at the config's attenuation, and maps the scale's [mv_min, mv_max] onto
# [eng_min, eng_max]; a din channel reads its level. Outputs scale milli-units to the
# board's duty/level and are written at their fail-safe value when built, so a node starts
# SAFE. read()/write() allocate nothing (ints only; Gain.mul is allocation-free).
from .fixed import Gain, to_fixed, VAL_MAX, VAL_MIN


def _mv(s, e):
    return s.mv_min + (e - s.eng_min) * (s.mv_max - s.mv_min) / float(s.eng_max - s.eng_min)


class Input:
    """An adc or din channel. read() -> milli-units; ok(v) -> value within `valid`."""

    def __init__(self, ch, board):
        self.name = ch.name
        self.kind = ch.kind
        self.units = ch.units if ch.kind == "adc" else ""
        self.value = 0
        self.raw = 0
        if ch.kind == "adc":
            s = ch.scale
            # atten_db decides the range the chip measures (calibrated): e.g. ESP32 at 11 dB
            # 150..2450 mV (boards/esp32/pins.py)
            self.hw = board.analog_in(ch.pin, atten_db=ch.atten_db)
            self._u0 = int(round(s.mv_min * 1000))  # microvolts at eng_min
            self._e0 = to_fixed(s.eng_min)
            # milli-units per microvolt
            slope = (s.eng_max - s.eng_min) / float(s.mv_max - s.mv_min)
            self._neg = slope < 0
            # read() clamps d = slope * (raw - u0) to keep e0 +- d in the signal range: a
            # reading far past the scale (an open input at the chip's full scale) would take
            # e0 + d past the small-int range, a big int (an allocation on ESP32).
            if self._neg:
                self._dlo, self._dhi = self._e0 - VAL_MAX, self._e0 - VAL_MIN
            else:
                self._dlo, self._dhi = VAL_MIN - self._e0, VAL_MAX - self._e0
            self._g = Gain(abs(slope))
            self.read = self._read_adc
            v = ch.valid
            # The valid range must lie where the chip's calibrated reading holds, so that a
            # reading outside it (an open or shorted sensor, or a voltage the ADC cannot
            # measure: ESP32 reads nothing useful below 100-150 mV) is a sensor fault.
            lo_mv, hi_mv = self.hw.min_mv, self.hw.range_mv
            for e in v:
                mv = _mv(s, e)
                if not lo_mv - 0.0005 <= mv <= hi_mv + 0.0005:
                    raise ValueError(
                        'channel "%s": valid [%s, %s] %s spans %.1f..%.1f mV at pin %d, but %s at %s dB '
                        "measures %d..%d mV (calibrated); narrow valid, or change atten_db or the "
                        "sensor's scale" % (ch.name, v[0], v[1], ch.units, _mv(s, v[0]), _mv(s, v[1]),
                                            ch.pin, board.mcu, self.hw.atten_db, lo_mv, hi_mv))
        else:
            self.hw = board.digital_in(ch.pin, None if ch.pull == "none" else ch.pull)
            self._inv = 1 if ch.invert else 0
            self.read = self._read_din
            v = ch.valid
        # valid range in milli-units (inclusive)
        self.vmin = to_fixed(v[0])
        self.vmax = to_fixed(v[1])

    def _read_adc(self):
        r = self.hw.read_uv()  # a small int: microvolts, calibrated
        self.raw = r
        d = self._g.mul(r - self._u0)
        d = self._dlo if d < self._dlo else (self._dhi if d > self._dhi else d)
        v = self._e0 - d if self._neg else self._e0 + d
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
        self.units = ch.get("units", "")
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
