"""cyphy: flash, provision, debug and test ESP32 MicroPython control nodes, real or simulated."""

__version__ = "0.1.0"
