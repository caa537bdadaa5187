# The chips cyphy runs on (ESP32, ESP32-S3, ESP32-C3) and the DevKit boards built on them.
# Each chip has ONE description, its own module of data (no imports):
#   boards/esp32/chip_esp32.py     ESP32     and the ESP32-DevKitC       (variant "devkitc")
#   boards/esp32/chip_esp32s3.py   ESP32-S3  and the ESP32-S3-DevKitC-1  (variant "s3")
#   boards/esp32/chip_esp32c3.py   ESP32-C3  and the ESP32-C3-DevKitM-1  (variant "c3")
# each with CHIP (the bare chip: what its MicroPython port accepts) and BOARD (its DevKit:
# the chip's pins less the ones the board wires to its flash, PSRAM, console or USB, with
# notes). This module is what they share: the chip names, how a chip is recognised before
# its description is loaded (os.uname().machine), the DevKit built from a chip's BOARD, and
# the small computations on a chip (pwm_error, atten_index). It is read by
#   - the node firmware (boards/esp32/board.py, deployed as /lib/boards/esp32/pins.mpy with
#     the three chip_*.mpy): a node imports this module and its own chip's module only
#     (chip(), board()), so it holds one chip's data;
#   - the sim ROM (boards/sim/rom/_hw.py execs this file and the node's chip's file, handed
#     over by the supervisor, then fills CHIPS; its raw ADC response model, which no
#     node needs, is boards/sim/rom/_adc.py);
#   - the host (cyphy.sim.nodes.chips(): this file with every chip's CHIP in CHIPS and
#     every DevKit in BOARDS; cyphy.chips, cyphy provision's chip check), on CPython.
#
# Sources, quoted where each figure is used (in the chip modules and below):
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
#   [IDF-PCNT] ESP-IDF "Pulse Counter (PCNT)" page and soc_caps.h SOC_PCNT_UNITS_PER_GROUP:
#             ESP32 8 units, ESP32-S3 4; the ESP32-C3 has no PCNT (SOC_PCNT_SUPPORTED unset)
#   [MP-PCNT] MicroPython docs, machine.Counter and machine.Encoder (v1.28: "Availability:
#             ESP32"; "On ESP32, the id corresponds to a PCNT unit"; value([value]) gets and
#             optionally sets, "atomically" where the implementation can; edge, direction,
#             filter_ns; Encoder phases 1, 2 or 4)
#   [MP-MCU]  micropython ports/esp32/boards/*/mpconfigboard.h: MICROPY_HW_MCU_NAME, which
#             os.uname().machine ends with (" with ESP32", " with ESP32S3", " with ESP32C3")
# Not yet checked on hardware: see docs/hal.md.

CHIP_NAMES = ("esp32", "esp32s3", "esp32c3")
# [MP-MCU] the chip's name in os.uname().machine, in the order to test the endings
UNAME = (("esp32s3", "ESP32S3"), ("esp32c3", "ESP32C3"), ("esp32", "ESP32"))
# The DevKit a chip gets when nothing else is known (the sim, or detect()), and back.
CHIP_BOARD = {"esp32": "devkitc", "esp32s3": "s3", "esp32c3": "c3"}
BOARD_CHIP = {"devkitc": "esp32", "s3": "esp32s3", "c3": "esp32c3"}
ATTEN_DB = (0, 2.5, 6, 11)  # machine.ADC.ATTN_0DB .. ATTN_11DB are 0..3

# The chips and DevKits loaded so far: on a node its own chip only; the sim ROM and the
# host fill in the chips they read (CHIPS[name] is a chip module's CHIP).
CHIPS = {}
BOARDS = {}  # variant -> DevKit (board())
VARIANTS = BOARDS


def _chip_module(name):
    # One import per chip, written out: a node imports only the one it asks for.
    if name == "esp32":
        from boards.esp32 import chip_esp32 as m
    elif name == "esp32s3":
        from boards.esp32 import chip_esp32s3 as m
    elif name == "esp32c3":
        from boards.esp32 import chip_esp32c3 as m
    else:
        raise ValueError("unknown chip %r; known: %s" % (name, ", ".join(CHIP_NAMES)))
    return m


def chip(name):
    """The bare chip's description (its module's CHIP), imported on first use."""
    c = CHIPS.get(name)
    if c is None:
        c = CHIPS[name] = _chip_module(name).CHIP
    return c


def chip_of_machine(machine):
    """The chip key from os.uname().machine ("... with ESP32S3" -> "esp32s3"), or None."""
    for key, uname in UNAME:
        if machine.endswith(" with " + uname):
            return key
    return None


def uname(chip_name):
    """What os.uname().machine ends with on this chip: "ESP32", "ESP32S3", "ESP32C3"."""
    return dict(UNAME)[chip_name]


def board(variant, spec=None):
    """The DevKit `variant` ("devkitc", "s3", "c3") as the HAL reads it, built once from
    its chip's BOARD (or from spec, a BOARD of the chip BOARD_CHIP[variant]); KeyError for
    an unknown variant."""
    b = BOARDS.get(variant)
    if b is not None:
        return b
    name = BOARD_CHIP[variant]
    c = chip(name)
    if spec is None:
        spec = _chip_module(name).BOARD
    res = dict([(p, "SPI flash") for p in c["flash"]])
    res.update(spec["reserved"])
    notes = dict([(p, "strapping pin, read at reset: " + t) for p, t in spec["strapping"].items()])
    notes.update(spec["notes"])
    g = spec.get("gpio") or c["gpio"]
    no_adc = spec.get("no_adc", ())
    ok = [p for p in g if p not in res]
    b = BOARDS[variant] = {
        "chip": name,
        "name": spec["name"],
        "module": spec["module"],
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
        "pcnt_units": c["pcnt_units"],
    }
    return b


def atten_index(atten_db):
    """0, 2.5, 6, 11 (numbers or their strings) -> 0..3; ValueError otherwise."""
    for i in range(4):
        if atten_db == ATTEN_DB[i] or atten_db == ("0", "2.5", "6", "11")[i]:
            return i
    raise ValueError("atten_db must be one of 0, 2.5, 6, 11, not %r" % (atten_db,))


def pwm_error(chip_name, freq_hz):
    """None if the chip's LEDC (as MicroPython drives it) can make freq_hz, else why not.

    [MP-PWM]: APB 80 MHz (REF_TICK 1 MHz below 10 Hz on ESP32 only), resolution
    min(ilog2(round(clk / f)), W), one bit less when it reaches W ([IDF-LEDC]); the divider
    clk * 256 / (f * 2**res), rounded, must lie in 256 .. 0x3FFFF."""
    c = chip(chip_name)
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


def pwm_min_hz(chip_name):
    """The lowest PWM frequency the chip can make (1 Hz on ESP32, 10 Hz on S3/C3)."""
    f = 1
    while pwm_error(chip_name, f) is not None:
        f += 1
    return f
