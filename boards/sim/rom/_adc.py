# The sim's raw ADC response and calibration: a model of what a chip's ADC does, for the
# sim's machine.ADC (_hw.py) only; no node imports it. A chip's figures come from its
# description (boards/esp32/chip_*.py CHIP: adc_range_mv, adc_zero_mv, adc_sat_mv); the
# sources ([IDF-ADC], [MP-ADC]) are listed in boards/esp32/pins.py.


def adc_points(c, atten, gain_ppm=0):
    """The constants of adc_raw/adc_cal_uv for chip c (its CHIP dict) at attenuation
    atten (0..3), in microvolts: (zero, lo, hi, sat, den, gain, 2 * (lo - zero),
    (lo - zero) // 2, 2 * (sat - hi), hi - lo + (lo - zero) // 2).
    gain_ppm is the chip instance's raw gain error (its Vref), in parts per million."""
    zero = c["adc_zero_mv"][atten] * 1000
    lo, hi = c["adc_range_mv"][atten]
    lo *= 1000
    hi *= 1000
    sat = c["adc_sat_mv"][atten] * 1000
    half = (lo - zero) // 2
    den = (hi - lo) + half + (sat - hi) // 2
    return (zero, lo, hi, sat, den, 1000000 + gain_ppm, 2 * (lo - zero), half, 2 * (sat - hi),
            hi - lo + half)


# adc_raw and adc_cal_uv run in the sim's control tick: ints only, and few locals (a
# MicroPython function whose frame exceeds a few words gets it from the heap).
def adc_raw(p, uv):
    """The 12-bit raw code for uv microvolts at the pin (ints only).

    A sim model shaped after [IDF-ADC]: 0 below zero, a quadratic toe up to the
    documented lower bound lo, linear over the calibrated range lo..hi, then compressed
    (its slope falling towards 0 at sat), 4095 from sat on. The slope is such that the
    straight line would reach 4095 half-way between hi and sat."""
    if uv <= p[0]:
        return 0
    if uv >= p[3]:
        return 4095
    if uv < p[1]:
        uv -= p[0]
        uv = uv * uv // p[6]
    elif uv <= p[2]:
        uv = uv - p[1] + p[7]
    else:
        uv -= p[2]
        uv = p[9] + uv - uv * uv // p[8]
    uv = 4095 * uv // p[4] * p[5] // 1000000
    return 4095 if uv > 4095 else uv


def adc_cal_uv(p, raw):
    """Calibrated microvolts for a raw code: the inverse of the linear part, knowing the
    chip's gain (as the eFuse calibration does); millivolt resolution ([MP-ADC] adc.c)."""
    raw = (raw * 1000000 // p[5] * p[4] + 2047) // 4095
    raw = (raw - p[7] + p[1] + 500) // 1000
    return raw * 1000 if raw > 0 else 0
