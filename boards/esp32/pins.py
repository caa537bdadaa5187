# Pin maps and peripheral counts of the ESP32 development boards cyphy supports, as data.
# boards/esp32/board.py derives each pin's capabilities from these tables:
#   - a pin in "reserved" can do nothing (the reason is shown in errors);
#   - every other pin in "gpio" is a digital input; an output (dout, pwm) unless in
#     "input_only"; an analog input if in "adc1", or in "adc2" while Wi-Fi is off;
#     a DAC output if in "dac".
# Sources: MicroPython's "Quick reference for the ESP32" (pins, ADC ranges, PWM, timers,
# WDT), ESP-IDF's ADC and GPIO pages and the boards' user guides. Not yet checked on
# hardware: see docs/hal.md.

_STRAP = "strapping pin, read at reset: "

DEVKITC = {
    "name": "ESP32-DevKitC",
    "module": "ESP32-WROOM-32",
    "mcu": "ESP32",
    # GPIOs on the DevKitC headers. 20, 24 and 28-31 do not exist; 37 and 38 are not
    # bonded out on the WROOM-32 module.
    "gpio": tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27, 32, 33, 34, 35, 36, 39),
    "reserved": {
        1: "UART0 TX, the REPL console",
        3: "UART0 RX, the REPL console",
        6: "SPI flash (CLK)", 7: "SPI flash (D0)", 8: "SPI flash (D1)",
        9: "SPI flash (D2)", 10: "SPI flash (D3)", 11: "SPI flash (CMD)",
    },
    "input_only": (34, 35, 36, 39),  # no output driver and no internal pulls
    "no_pull": (34, 35, 36, 39),
    "adc1": (32, 33, 34, 35, 36, 39),
    # ADC2 is taken by the Wi-Fi driver while it runs. GPIO0 is left out: ESP-IDF says
    # the DevKitC's auto-program circuit on it spoils ADC readings.
    "adc2": (2, 4, 12, 13, 14, 15, 25, 26, 27),
    "dac": (25, 26),
    "notes": {
        0: _STRAP + "low enters the serial bootloader (the BOOT button)",
        2: _STRAP + "must be low or floating to enter the bootloader",
        5: _STRAP + "SDIO slave timing; high at reset",
        12: _STRAP + "high selects 1.8 V flash and the WROOM-32 will not boot; keep it low at reset",
        15: _STRAP + "low silences the ROM boot log",
        16: "PSRAM on WROVER modules (free on the WROOM-32)",
        17: "PSRAM on WROVER modules (free on the WROOM-32)",
    },
    # ADC full scale (mV) at 0, 2.5, 6 and 11 dB; readings are poor below 100-150 mV.
    "adc_mv": (950, 1250, 1750, 2450),
    "dac_mv": 3300,
    "timers": 4,  # machine.Timer(0..3)
    "pwm_channels": 16,  # LEDC: 2 speed modes x 8 channels
    "pwm_freqs": 8,  # LEDC timers: at most 8 different PWM frequencies at once
}

S3 = {
    "name": "ESP32-S3-DevKitC-1",
    "module": "ESP32-S3-WROOM-1 (N8R8)",
    "mcu": "ESP32-S3",
    # The chip's GPIOs (22-25 do not exist); 26-37 are wired to the module's flash/PSRAM.
    "gpio": tuple(range(0, 22)) + tuple(range(26, 49)),
    "reserved": dict(
        [(p, "SPI flash / PSRAM") for p in range(26, 33)]
        + [(p, "octal PSRAM on R8 modules") for p in range(33, 38)]
        + [(19, "USB D-, the native USB port"), (20, "USB D+, the native USB port"),
           (43, "UART0 TX, the REPL console"), (44, "UART0 RX, the REPL console")]
    ),
    "input_only": (),
    "no_pull": (),
    "adc1": tuple(range(1, 11)),
    "adc2": tuple(range(11, 19)),  # 11-20, less the USB pins
    "dac": (),
    "notes": {
        0: _STRAP + "low enters the serial bootloader (the BOOT button)",
        3: _STRAP + "selects the JTAG source",
        45: _STRAP + "selects the flash voltage (VDD_SPI); keep it low at reset",
        46: _STRAP + "boot mode and ROM log; keep it low at reset",
        38: "the RGB LED on DevKitC-1 v1.1",
        48: "the RGB LED on DevKitC-1 v1.0",
    },
    "adc_mv": (950, 1250, 1750, 3100),
    "dac_mv": 0,
    "timers": 4,
    "pwm_channels": 8,
    "pwm_freqs": 4,
}

C3 = {
    "name": "ESP32-C3-DevKitM-1",
    "module": "ESP32-C3-MINI-1",
    "mcu": "ESP32-C3",
    "gpio": tuple(range(0, 22)),
    "reserved": dict(
        [(11, "VDD_SPI, the flash supply")]
        + [(p, "SPI flash") for p in range(12, 18)]
        + [(18, "USB D-, the USB Serial/JTAG console"), (19, "USB D+, the USB Serial/JTAG console"),
           (20, "UART0 RX, the REPL console"), (21, "UART0 TX, the REPL console")]
    ),
    "input_only": (),
    "no_pull": (),
    "adc1": (0, 1, 2, 3, 4),
    # GPIO5 is ADC2, which ESP-IDF discourages on the C3 (errata); not offered.
    "adc2": (),
    "dac": (),
    "notes": {
        2: _STRAP + "must be high at reset for a normal boot",
        8: _STRAP + "must be high to enter the bootloader; the RGB LED on DevKitM-1",
        9: _STRAP + "low enters the serial bootloader (the BOOT button)",
        5: "ADC2, not offered (ESP32-C3 errata)",
    },
    "adc_mv": (750, 1050, 1300, 2500),
    "dac_mv": 0,
    "timers": 2,  # machine.Timer(0..1)
    "pwm_channels": 6,
    "pwm_freqs": 4,
}

VARIANTS = {"devkitc": DEVKITC, "s3": S3, "c3": C3}
