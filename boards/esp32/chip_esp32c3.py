# ESP32-C3 and its DevKit (ESP32-C3-DevKitM-1, variant "c3"): the one description of this
# chip, as data, no imports. A node of this chip imports this module and no other chip's
# (boards/esp32/pins.py chip()); the sim ROM and the host read it too. The sources cited
# ([MP-ADC], [IDF-ADC], [IDF-LEDC], [MP-PWM], [MP-TIM], [ESPTOOL]) are listed in pins.py.
# Not yet checked on hardware: see docs/hal.md.

# The bare chip (what its MicroPython port accepts).
CHIP = {
    "mcu": "ESP32-C3",
    "gpio": tuple(range(0, 22)),
    "flash": (12, 13, 14, 15, 16, 17),
    "input_only": (),
    "adc1": (0, 1, 2, 3, 4),  # [MP-ADC]
    "adc2": (5,),
    "adc_widths": (12,),
    "dac": (),
    # [IDF-ADC] ESP32-C3 v4.4: 0-750, 0-1050, 0-1300, 0-2500 mV
    "adc_range_mv": ((0, 750), (0, 1050), (0, 1300), (0, 2500)),
    # The sim's raw response (boards/sim/rom/_adc.py): 0 below zero_mv, 4095 at sat_mv,
    # Vref 1100 mV / k (100, 75, 50, 25 %) ([IDF-ADC], v6 page)
    "adc_zero_mv": (0, 0, 0, 0),
    "adc_sat_mv": (1100, 1467, 2200, 4400),
    "adc_cali": "curve fitting",
    "adc2_wifi": True,
    "timers": 2,  # [MP-TIM] machine.Timer(0..1)
    "pcnt_units": 0,  # [IDF-PCNT] pulse counter units, [MP-PCNT] Counter/Encoder ids: none: no PCNT (machine.Counter and Encoder absent)
    "pwm_channels": 6,  # [IDF-LEDC] SOC_LEDC_CHANNEL_NUM
    "pwm_timers": 4,  # SOC_LEDC_TIMER_NUM
    "pwm_bits": 14,  # SOC_LEDC_TIMER_BIT_WIDTH
    "pwm_ref_tick": False,  # [MP-PWM] no REF_TICK: APB only
    "pwm_clk_hz": 80000000,
    "dac_mv": 0,
    # [ESPTOOL] targets/esp32c3.py: IMAGE_CHIP_ID 5 (USES_MAGIC_VALUE False, as the S3)
    "esptool_name": "ESP32-C3",
    "magic": None,
    "chip_id": 5,
}

# The DevKit: the chip's pins less the ones it wires to flash, USB or the console
# (pins.board() adds the chip's flash pins and the strapping prefix).
BOARD = {
    "variant": "c3",
    "name": "ESP32-C3-DevKitM-1",
    "module": "ESP32-C3-MINI-1",
    "reserved": dict([(11, "VDD_SPI, the flash supply")]
                     + [(p, "SPI flash") for p in range(12, 18)]
                     + [(18, "USB D-, the USB Serial/JTAG console"), (19, "USB D+, the USB Serial/JTAG console"),
                        (20, "UART0 RX, the REPL console"), (21, "UART0 TX, the REPL console")]),
    "strapping": {2: "must be high at reset for a normal boot",
                  8: "must be high to enter the bootloader; the RGB LED on DevKitM-1",
                  9: "low enters the serial bootloader (the BOOT button)"},
    "notes": {5: "ADC2, not offered (ESP32-C3 errata)"},
    # GPIO5 is ADC2, which ESP-IDF discourages on the C3 (errata); not offered.
    "no_adc": (5,),
}
