# ESP32 and its DevKit (ESP32-DevKitC, variant "devkitc"): the one description of this
# chip, as data, no imports. A node of this chip imports this module and no other chip's
# (boards/esp32/pins.py chip()); the sim ROM and the host read it too. The sources cited
# ([MP-ADC], [IDF-ADC], [IDF-LEDC], [MP-PWM], [MP-TIM], [ESPTOOL]) are listed in pins.py.
# Not yet checked on hardware: see docs/hal.md.

# The bare chip (what its MicroPython port accepts).
CHIP = {
    "mcu": "ESP32",
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
    # The sim's raw response (boards/sim/rom/_adc.py): raw is 0 below zero_mv (half the
    # documented lower bound: the sim's choice) and would reach 4095 at sat_mv, the
    # driver/adc.h full scale ([IDF-ADC]).
    "adc_zero_mv": (50, 50, 75, 75),
    "adc_sat_mv": (1100, 1500, 2200, 3900),
    "adc_cali": "line fitting",
    "adc2_wifi": True,  # the Wi-Fi driver owns ADC2 while it runs
    "timers": 4,  # [MP-TIM] machine.Timer(0..3)
    "pcnt_units": 8,  # [IDF-PCNT] pulse counter units, [MP-PCNT] Counter/Encoder ids: 8 units
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
}

# The DevKit: the chip's pins less the ones it wires to flash, PSRAM or the console
# (pins.board() adds the chip's flash pins and the strapping prefix).
BOARD = {
    "variant": "devkitc",
    "name": "ESP32-DevKitC",
    "module": "ESP32-WROOM-32",
    "reserved": {1: "UART0 TX, the REPL console", 3: "UART0 RX, the REPL console",
                 6: "SPI flash (CLK)", 7: "SPI flash (D0)", 8: "SPI flash (D1)",
                 9: "SPI flash (D2)", 10: "SPI flash (D3)", 11: "SPI flash (CMD)"},
    "strapping": {0: "low enters the serial bootloader (the BOOT button)",
                  2: "must be low or floating to enter the bootloader",
                  5: "SDIO slave timing; high at reset",
                  12: "high selects 1.8 V flash and the WROOM-32 will not boot; keep it low at reset",
                  15: "low silences the ROM boot log"},
    "notes": {16: "PSRAM on WROVER modules (free on the WROOM-32)",
              17: "PSRAM on WROVER modules (free on the WROOM-32)"},
    # 37 and 38 are not bonded out on the WROOM-32 module
    "gpio": tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27, 32, 33, 34, 35, 36, 39),
    # GPIO0: ESP-IDF says the DevKitC's auto-program circuit on it spoils ADC readings
    "no_adc": (0,),
}
