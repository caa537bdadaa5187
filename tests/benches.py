"""Bench files (plant + wiring of the sim board's pins) shared by the sim tests."""

from cyphy.hil.defaults import THERMAL_BENCH

# The thermal plant of ../shared/anchors.md: heater PWM on pin 25, temperature ADC on 34.
THERMAL = THERMAL_BENCH
