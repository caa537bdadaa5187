# The one description of each chip cyphy runs on (ESP32, ESP32-S3, ESP32-C3) and of the
# DevKit boards built on them, as data. Pure data plus small int functions, no imports:
# the same file is read by
#   - the node firmware (boards/esp32/board.py, deployed as /lib/boards/esp32/pins.mpy),
#   - the sim ROM (boards/sim/rom/_hw.py execs it from the repository before the node's
#     flash is mounted), which gives a sim node of that chip its machine module,
#   - the host (cyphy.sim.romloader for esptool's view of the chip; cyphy.provision's
#     chip check, cyphy.chips), on CPython.
#
# CHIPS[chip] is the bare chip (what its MicroPython port accepts); BOARDS[variant] is a
# DevKit: the chip's pins less the ones the board wires to its flash, PSRAM, console or
# USB, with notes. Sources, quoted where each figure is used:
#   [MP-ADC]  micropython ports/esp32/machine_adc.c (pin -> ADC block/channel tables,
#             default attenuation ADC_ATTEN_MAX, read_u16 scaling) and adc.c (read_uv via
#             adc_cali_raw_to_voltage, millivolts * 1000)
#   [MP-PWM]  micropython ports/esp32/machine_pwm.c (clock sources: REF_TICK 1 MHz below
#             EMPIRIC_FREQ = 10 Hz on ESP32/S2 only, else APB 80 MHz; resolution from
#             ledc_find_suitable_duty_resolution, one bit less at the timer's full width)
#   [IDF-LEDC] ESP-IDF esp_driver_ledc ledc.c: ledc_find_suitable_duty_resolution caps the
#             resolution at SOC_LEDC_TIMER_BIT_WIDTH (soc_caps.h: ESP32 20, S3 14, C3 14;
#             SOC_LEDC_CHANNEL_NUM 8/8/6 per speed mode, ESP32 has 2 modes;
#             SOC_LEDC_TIMER_NUM 4); the divider is 10.8 fixed point, at most 0x3FFFF
#             (LEDC_TIMER_DIV_NUM_MAX) and at least 1.0 (256)
#   [IDF-ADC] ESP-IDF v4.4 "Analog to Digital Converter" page of each chip, "ADC
#             Attenuation" table (measurable input voltage range per attenuation) and
#             "ADC Channels"; ESP-IDF "ADC Calibration Driver" page: Vref 1100 mV by
#             design, 1000-1200 mV among chips; ESP-IDF v6 ADC page: attenuation factor
#             k ~ 100 / 75 / 50 / 25 %; ESP32 driver/adc.h (v3/v4) comment: full scale
#             1.1 / 1.5 / 2.2 / 3.9 V at 0 / 2.5 / 6 / 11 dB, 11 dB limited by VDD_A
#   [MP-TIM]  micropython ports/esp32/machine_timer.c: Timer ids = timer groups x timers
#             per group (SOC_TIMER_GROUPS x SOC_TIMER_GROUP_TIMERS_PER_GROUP: 2x2, 2x2, 2x1)
#   [ESPTOOL] esptool esptool/targets/esp32.py, esp32s3.py, esp32c3.py
# Not yet checked on hardware: see docs/hal.md.

_STRAP = "strapping pin, read at reset: "

# ---------------------------------------------------------------- chips
CHIPS = {
    "esp32": {
        "mcu": "ESP32",
        "uname": "ESP32",  # os.uname().machine ends with " with ESP32"
        # GPIOs of the chip: 20, 24 and 28-31 do not exist.
        "gpio": tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27) + tuple(range(32, 40)),
        "flash": (6, 7, 8, 9, 10, 11),  # the SPI flash on every module
        "input_only": (34, 35, 36, 37, 38, 39),  # no output driver, no pulls
        # ADC pins in channel order ([MP-ADC]): ADC1_CH0 is GPIO36, ...
        "adc1": (36, 37, 38, 39, 32, 33, 34, 35),
        "adc2": (4, 0, 2, 15, 13, 12, 14, 27, 25, 26),
        "adc_widths": (9, 10, 11, 12),
        "dac": (25, 26),
        # [IDF-ADC] ESP32: calibrated ("measurable") range per attenuation 0/2.5/6/11 dB
        "adc_range_mv": ((100, 950), (100, 1250), (150, 1750), (150, 2450)),
        # The sim's raw response (see adc_raw below): raw is 0 below zero_mv (half the
        # documented lower bound: the sim's choice) and would reach 4095 at sat_mv, the
        # driver/adc.h full scale ([IDF-ADC]).
        "adc_zero_mv": (50, 50, 75, 75),
        "adc_sat_mv": (1100, 1500, 2200, 3900),
        "adc_cali": "line fitting",
        "adc2_wifi": True,  # the Wi-Fi driver owns ADC2 while it runs
        "timers": 4,  # [MP-TIM] machine.Timer(0..3)
        "pwm_channels": 16,  # [IDF-LEDC] 2 speed modes x 8 channels
        "pwm_timers": 8,  # 2 modes x 4 LEDC timers: at most 8 frequencies at once
        "pwm_bits": 20,  # SOC_LEDC_TIMER_BIT_WIDTH
        "pwm_ref_tick": True,  # 1 MHz REF_TICK below 10 Hz ([MP-PWM])
        "pwm_clk_hz": 80000000,  # APB
        "dac_mv": 3300,
        # [ESPTOOL] targets/esp32.py: CHIP_DETECT_MAGIC_VALUE read at 0x40001000; the ROM
        # rejects GET_SECURITY_INFO, so esptool falls back to the magic.
        "esptool_name": "ESP32",
        "magic": 0x00F01D83,
        "chip_id": 0,  # IMAGE_CHIP_ID
    },
    "esp32s3": {
        "mcu": "ESP32-S3",
        "uname": "ESP32S3",
        # 22-25 do not exist
        "gpio": tuple(range(0, 22)) + tuple(range(26, 49)),
        "flash": (26, 27, 28, 29, 30, 31, 32),  # SPI flash/PSRAM on every module
        "input_only": (),
        "adc1": tuple(range(1, 11)),  # [MP-ADC] GPIO1..10 = ADC1_CH0..9
        "adc2": tuple(range(11, 21)),  # GPIO11..20 = ADC2_CH0..9
        "adc_widths": (12,),
        "dac": (),
        # [IDF-ADC] ESP32-S3 v4.4: 0-950, 0-1250, 0-1750, 0-3100 mV
        "adc_range_mv": ((0, 950), (0, 1250), (0, 1750), (0, 3100)),
        "adc_zero_mv": (0, 0, 0, 0),
        # Vref 1100 mV / k (100, 75, 50, 25 %) ([IDF-ADC], v6 page)
        "adc_sat_mv": (1100, 1467, 2200, 4400),
        "adc_cali": "curve fitting",
        "adc2_wifi": True,  # ADC2 is shared with Wi-Fi through an arbiter
        "timers": 4,
        "pwm_channels": 8,
        "pwm_timers": 4,
        "pwm_bits": 14,
        "pwm_ref_tick": False,
        "pwm_clk_hz": 80000000,
        "dac_mv": 0,
        # [ESPTOOL] targets/esp32s3.py: IMAGE_CHIP_ID 9; USES_MAGIC_VALUE False: the ROM
        # answers GET_SECURITY_INFO with the chip id, which esptool reads instead
        "esptool_name": "ESP32-S3",
        "magic": None,
        "chip_id": 9,
    },
    "esp32c3": {
        "mcu": "ESP32-C3",
        "uname": "ESP32C3",
        "gpio": tuple(range(0, 22)),
        "flash": (12, 13, 14, 15, 16, 17),
        "input_only": (),
        "adc1": (0, 1, 2, 3, 4),  # [MP-ADC]
        "adc2": (5,),
        "adc_widths": (12,),
        "dac": (),
        # [IDF-ADC] ESP32-C3 v4.4: 0-750, 0-1050, 0-1300, 0-2500 mV
        "adc_range_mv": ((0, 750), (0, 1050), (0, 1300), (0, 2500)),
        "adc_zero_mv": (0, 0, 0, 0),
        "adc_sat_mv": (1100, 1467, 2200, 4400),
        "adc_cali": "curve fitting",
        "adc2_wifi": True,
        "timers": 2,  # [MP-TIM] machine.Timer(0..1)
        "pwm_channels": 6,
        "pwm_timers": 4,
        "pwm_bits": 14,
        "pwm_ref_tick": False,
        "pwm_clk_hz": 80000000,
        "dac_mv": 0,
        # [ESPTOOL] targets/esp32c3.py: IMAGE_CHIP_ID 5 (USES_MAGIC_VALUE False, as the S3)
        "esptool_name": "ESP32-C3",
        "magic": None,
        "chip_id": 5,
    },
}

CHIP_NAMES = ("esp32", "esp32s3", "esp32c3")
ATTEN_DB = (0, 2.5, 6, 11)  # machine.ADC.ATTN_0DB .. ATTN_11DB are 0..3


def chip_of_machine(machine):
    """The chip key from os.uname().machine ("... with ESP32S3" -> "esp32s3"), or None."""
    for key in ("esp32s3", "esp32c3", "esp32"):
        if machine.endswith(" with " + CHIPS[key]["uname"]):
            return key
    return None


def atten_index(atten_db):
    """0, 2.5, 6, 11 (numbers or their strings) -> 0..3; ValueError otherwise."""
    for i in range(4):
        if atten_db == ATTEN_DB[i] or atten_db == ("0", "2.5", "6", "11")[i]:
            return i
    raise ValueError("atten_db must be one of 0, 2.5, 6, 11, not %r" % (atten_db,))


def pwm_error(chip, freq_hz):
    """None if the chip's LEDC (as MicroPython drives it) can make freq_hz, else why not.

    [MP-PWM]: APB 80 MHz (REF_TICK 1 MHz below 10 Hz on ESP32 only), resolution
    min(ilog2(round(clk / f)), W), one bit less when it reaches W ([IDF-LEDC]); the divider
    clk * 256 / (f * 2**res), rounded, must lie in 256 .. 0x3FFFF."""
    c = CHIPS[chip]
    if not isinstance(freq_hz, int) or isinstance(freq_hz, bool) or not 1 <= freq_hz <= 40000000:
        return "the frequency must be an integer from 1 Hz to 40 MHz"
    clk = 1000000 if (c["pwm_ref_tick"] and freq_hz < 10) else c["pwm_clk_hz"]
    if freq_hz > clk // 2:
        return "at most %d Hz" % (clk // 2)
    div = (clk + freq_hz // 2) // freq_hz
    res = 0
    while div > 1:
        div >>= 1
        res += 1
    if res > c["pwm_bits"]:
        res = c["pwm_bits"]
    if res >= c["pwm_bits"]:
        res -= 1
    prec = freq_hz << res
    div_param = ((clk << 8) + prec // 2) // prec
    if div_param < 256 or div_param > 0x3FFFF:
        return ("%s's LEDC cannot divide its %d MHz clock down to %d Hz%s"
                % (c["mcu"], clk // 1000000, freq_hz,
                   "" if c["pwm_ref_tick"] else " (no 1 MHz REF_TICK on this chip)"))
    return None


def pwm_min_hz(chip):
    """The lowest PWM frequency the chip can make (1 Hz on ESP32, 10 Hz on S3/C3)."""
    f = 1
    while pwm_error(chip, f) is not None:
        f += 1
    return f


# ---------------------------------------------------------------- the sim's raw ADC response
def adc_points(chip, atten, gain_ppm=0):
    """The constants of adc_raw/adc_cal_uv, in microvolts: (zero, lo, hi, sat, den, gain,
    2 * (lo - zero), (lo - zero) // 2, 2 * (sat - hi), hi - lo + (lo - zero) // 2).
    gain_ppm is the chip instance's raw gain error (its Vref), in parts per million."""
    c = CHIPS[chip]
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


# ---------------------------------------------------------------- DevKit boards
def _board(chip, name, module, reserved, notes, gpio=None, no_adc=()):
    c = CHIPS[chip]
    res = dict([(p, "SPI flash") for p in c["flash"]])
    res.update(reserved)
    g = tuple([p for p in (gpio or c["gpio"])])
    ok = [p for p in g if p not in res]
    return {
        "chip": chip,
        "name": name,
        "module": module,
        "mcu": c["mcu"],
        "gpio": g,
        "reserved": res,
        "input_only": tuple([p for p in c["input_only"] if p in ok]),
        "no_pull": tuple([p for p in c["input_only"] if p in ok]),
        "adc1": tuple(sorted([p for p in c["adc1"] if p in ok and p not in no_adc])),
        "adc2": tuple(sorted([p for p in c["adc2"] if p in ok and p not in no_adc])),
        "dac": tuple([p for p in c["dac"] if p in ok]),
        "notes": notes,
        # ADC calibrated range upper bounds (mV) at 0, 2.5, 6 and 11 dB
        "adc_mv": tuple([r[1] for r in c["adc_range_mv"]]),
        "adc_range_mv": c["adc_range_mv"],
        "dac_mv": c["dac_mv"],
        "timers": c["timers"],
        "pwm_channels": c["pwm_channels"],
        "pwm_freqs": c["pwm_timers"],
    }


DEVKITC = _board(
    "esp32", "ESP32-DevKitC", "ESP32-WROOM-32",
    {1: "UART0 TX, the REPL console", 3: "UART0 RX, the REPL console",
     6: "SPI flash (CLK)", 7: "SPI flash (D0)", 8: "SPI flash (D1)",
     9: "SPI flash (D2)", 10: "SPI flash (D3)", 11: "SPI flash (CMD)"},
    {0: _STRAP + "low enters the serial bootloader (the BOOT button)",
     2: _STRAP + "must be low or floating to enter the bootloader",
     5: _STRAP + "SDIO slave timing; high at reset",
     12: _STRAP + "high selects 1.8 V flash and the WROOM-32 will not boot; keep it low at reset",
     15: _STRAP + "low silences the ROM boot log",
     16: "PSRAM on WROVER modules (free on the WROOM-32)",
     17: "PSRAM on WROVER modules (free on the WROOM-32)"},
    # 37 and 38 are not bonded out on the WROOM-32 module
    gpio=tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27, 32, 33, 34, 35, 36, 39),
    # GPIO0: ESP-IDF says the DevKitC's auto-program circuit on it spoils ADC readings
    no_adc=(0,),
)

S3 = _board(
    "esp32s3", "ESP32-S3-DevKitC-1", "ESP32-S3-WROOM-1 (N8R8)",
    dict([(p, "SPI flash / PSRAM") for p in range(26, 33)]
         + [(p, "octal PSRAM on R8 modules") for p in range(33, 38)]
         + [(19, "USB D-, the native USB port"), (20, "USB D+, the native USB port"),
            (43, "UART0 TX, the REPL console"), (44, "UART0 RX, the REPL console")]),
    {0: _STRAP + "low enters the serial bootloader (the BOOT button)",
     3: _STRAP + "selects the JTAG source",
     45: _STRAP + "selects the flash voltage (VDD_SPI); keep it low at reset",
     46: _STRAP + "boot mode and ROM log; keep it low at reset",
     38: "the RGB LED on DevKitC-1 v1.1",
     48: "the RGB LED on DevKitC-1 v1.0"},
)

C3 = _board(
    "esp32c3", "ESP32-C3-DevKitM-1", "ESP32-C3-MINI-1",
    dict([(11, "VDD_SPI, the flash supply")]
         + [(p, "SPI flash") for p in range(12, 18)]
         + [(18, "USB D-, the USB Serial/JTAG console"), (19, "USB D+, the USB Serial/JTAG console"),
            (20, "UART0 RX, the REPL console"), (21, "UART0 TX, the REPL console")]),
    {2: _STRAP + "must be high at reset for a normal boot",
     8: _STRAP + "must be high to enter the bootloader; the RGB LED on DevKitM-1",
     9: _STRAP + "low enters the serial bootloader (the BOOT button)",
     5: "ADC2, not offered (ESP32-C3 errata)"},
    # GPIO5 is ADC2, which ESP-IDF discourages on the C3 (errata); not offered.
    no_adc=(5,),
)

VARIANTS = {"devkitc": DEVKITC, "s3": S3, "c3": C3}
BOARDS = VARIANTS
# The DevKit a chip gets when nothing else is known (the sim, or detect()).
CHIP_BOARD = {"esp32": "devkitc", "esp32s3": "s3", "esp32c3": "c3"}
