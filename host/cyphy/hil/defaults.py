"""The node the HIL fixtures set up when a test does not say otherwise: one oven loop on
the thermal bench of ../shared/anchors.md (FOPDT: 0.9 degC/%, tau 160 s, dead time 12 s),
PID tuned by SIMC (kp 4.9 %/degC, Ti 144 s)."""

THERMAL_BENCH = {
    "plant": {"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12, "ambient": 20.0},
    "wiring": [
        {"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150], "volts": [0.0, 2.45]},
        {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]},
    ],
    "seed": 1,
}

THERMAL_CONFIG = {
    "schema": 1,
    "comms_timeout_ms": 0,
    "channels": [
        {"name": "temp", "pin": 34, "kind": "adc",
         # the bench's sensor: 0..150 degC as 0..2450 mV; ESP32 at 11 dB reads 150..2450 mV
         # calibrated (boards/esp32/pins.py), so valid starts at 9.2 degC
         "atten_db": 11,
         "scale": {"mv_min": 0, "mv_max": 2450, "eng_min": 0, "eng_max": 150},
         "units": "degC", "valid": [10, 149]},
        {"name": "heater", "pin": 25, "kind": "pwm", "freq_hz": 1000,
         "range": [0, 100], "units": "%", "failsafe": 0},
    ],
    "loops": [
        {"name": "oven", "rate_hz": 10, "sensor": "temp", "actuator": "heater",
         "filter": {"type": "lowpass", "tau_s": 0.5},
         "controller": {"type": "pid", "kp": 4.9, "ki": 0.034, "kd": 0.0,
                        "out_min": 0, "out_max": 100, "setpoint": 20.0},
         "alarms": {"high": 90, "low": 12, "hysteresis": 1}},
    ],
}
