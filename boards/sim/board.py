# The sim board's HAL: a sim node is an ESP32 DevKitC as far as user code can tell (its
# ROM's machine module follows ESP32's API and pin rules, boards/sim/rom/_hw.py), so the
# HAL is the ESP32 one with the DevKitC pin map. What differs:
# - Wi-Fi: the sim has no radio and no `network` module; its network is the host's
#   loopback, always up. wifi_connect() succeeds at once and the address is 127.0.0.1.
#   It still counts as starting the radio, so the ADC2 rule stays as on an ESP32.
# - virtual_time(): whether the node runs on the virtual clock (--virtual-time).
import time

from boards.esp32 import board as _esp32


class Board(_esp32.Board):
    def __init__(self):
        _esp32.Board.__init__(self, "devkitc")
        self.name = "cyphy-sim"  # with ESP32-DevKitC pins (self.variant == "devkitc")
        self._virtual = None

    def virtual_time(self):
        # The ROM does not say; its clocks do. Virtual ticks move only while the node
        # sleeps, while a real microsecond counter moves during any busy wait. The host's
        # wall clock (time.time_ns, which the ROM leaves alone) bounds the wait at 2 ms.
        if self._virtual is None:
            t0 = time.ticks_us()
            h0 = time.time_ns()
            while time.ticks_us() == t0:
                if time.time_ns() - h0 > 2_000_000:
                    self._virtual = True
                    return True
            self._virtual = False
        return self._virtual

    def wifi_connect(self, ssid, key, timeout_ms=15000):
        self._radio_on()
        return True

    def wifi_status(self):
        return "connected"

    def wifi_ip(self):
        return "127.0.0.1"

    def info(self):
        i = _esp32.Board.info(self)
        i.update(virtual_time=self.virtual_time(), pin_map="ESP32-DevKitC")
        return i
