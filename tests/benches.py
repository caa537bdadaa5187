"""Bench files (plant + wiring of the sim board's pins) shared by the sim tests."""

# The thermal plant of ../shared/anchors.md: heater PWM on pin 25, temperature ADC on 34.
THERMAL = {
    "plant": {"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12, "ambient": 20.0},
    "wiring": [
        {"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150], "volts": [0.0, 2.45]},
        {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]},
    ],
    "seed": 1,
}
