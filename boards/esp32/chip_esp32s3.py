# ESP32-S3 and its DevKit (ESP32-S3-DevKitC-1, variant "s3"): the one description of this
# chip, as data, no imports. A node of this chip imports this module and no other chip's
# (boards/esp32/pins.py chip()); the sim ROM and the host read it too. The sources cited
# ([MP-ADC], [IDF-ADC], [IDF-LEDC], [MP-PWM], [MP-TIM], [ESPTOOL]) are listed in pins.py.
# Not yet checked on hardware: see docs/hal.md.

# The bare chip (what its MicroPython port accepts).
CHIP = {
    "mcu": "ESP32-S3",
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
    # The sim's raw response (boards/sim/rom/_adc.py): 0 below zero_mv, 4095 at sat_mv,
    # Vref 1100 mV / k (100, 75, 50, 25 %) ([IDF-ADC], v6 page)
    "adc_zero_mv": (0, 0, 0, 0),
    "adc_sat_mv": (1100, 1467, 2200, 4400),
    "adc_cali": "curve fitting",
    "adc2_wifi": True,  # ADC2 is shared with Wi-Fi through an arbiter
    "timers": 4,  # [MP-TIM] machine.Timer(0..3)
    "pcnt_units": 4,  # [IDF-PCNT] pulse counter units, [MP-PCNT] Counter/Encoder ids: 4 units
    "pwm_channels": 8,  # [IDF-LEDC] SOC_LEDC_CHANNEL_NUM, one speed mode
    "pwm_timers": 4,  # SOC_LEDC_TIMER_NUM
    "pwm_bits": 14,  # SOC_LEDC_TIMER_BIT_WIDTH
    "pwm_ref_tick": False,  # [MP-PWM] no REF_TICK: APB only
    "pwm_clk_hz": 80000000,
    "dac_mv": 0,
    # [ESPTOOL] targets/esp32s3.py: IMAGE_CHIP_ID 9; USES_MAGIC_VALUE False: the ROM
    # answers GET_SECURITY_INFO with the chip id, which esptool reads instead
    "esptool_name": "ESP32-S3",
    "magic": None,
    "chip_id": 9,
}

# The DevKit: the chip's pins less the ones it wires to flash, PSRAM, USB or the console
# (pins.board() adds the chip's flash pins and the strapping prefix).
BOARD = {
    "variant": "s3",
    "name": "ESP32-S3-DevKitC-1",
    "module": "ESP32-S3-WROOM-1 (N8R8)",
    "reserved": dict([(p, "SPI flash / PSRAM") for p in range(26, 33)]
                     + [(p, "octal PSRAM on R8 modules") for p in range(33, 38)]
                     + [(19, "USB D-, the native USB port"), (20, "USB D+, the native USB port"),
                        (43, "UART0 TX, the REPL console"), (44, "UART0 RX, the REPL console")]),
    "strapping": {0: "low enters the serial bootloader (the BOOT button)",
                  3: "selects the JTAG source",
                  45: "selects the flash voltage (VDD_SPI); keep it low at reset",
                  46: "boot mode and ROM log; keep it low at reset"},
    "notes": {38: "the RGB LED on DevKitC-1 v1.1",
              48: "the RGB LED on DevKitC-1 v1.0"},
}
