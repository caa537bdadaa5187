# The sim board's peripherals: ESP32's machine.Pin, ADC, PWM, DAC and WDT, with the pins
# wired to a plant model (_plant.py) as described by the bench wiring file
# (`cyphy sim start --bench FILE`):
#
#   {"plant": {"type": "fotd", ...},               # see docs/plants.md
#    "wiring": [
#      {"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150], "volts": [0.0, 2.45]},
#      {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]},
#      {"pin": 26, "kind": "dac", "signal": "pump", "range": [0, 12]},
#      {"pin": 27, "kind": "dout", "signal": "valve", "range": [0, 1]},
#      {"pin": 35, "kind": "din", "signal": "level", "threshold": 0.5}],
#    "seed": 1}
#
# An adc pin sees the sensor's reading mapped linearly from `range` to `volts`; a pwm,
# dac or dout pin drives the plant input with the output fraction mapped onto `range`.
# The plant advances whenever the clock services the board (while the node waits), never
# inside a read or write, so reading a sensor in the control tick allocates nothing: it
# returns a value computed when the plant last stepped.
from micropython import const

# ESP32-WROOM (DevKitC) pin capabilities, from the ESP32 datasheet
_ADC_PINS = (32, 33, 34, 35, 36, 37, 38, 39, 0, 2, 4, 12, 13, 14, 15, 25, 26, 27)
_DAC_PINS = (25, 26)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_FLASH_PINS = (6, 7, 8, 9, 10, 11)  # wired to the SPI flash on every module
_NPINS = const(40)
# ADC full scale per attenuation (mV), as ESP-IDF recommends for the ESP32
_ATTN_MV = (950, 1250, 1750, 2450)


class Bench:
    """The plant and the wiring of the board's pins to its signals."""

    def __init__(self, spec, clock):
        self.clock = clock
        self.plant = None
        if spec:
            import gc

            gc.collect()  # compiling the plant module needs contiguous heap
            import _plant  # only a board with a bench needs the physics

            self.plant = _plant.make(spec["plant"], spec.get("seed", 1))
        self.inputs = {}  # pin -> wiring entry (adc, din)
        self.outputs = {}  # pin -> wiring entry (pwm, dac, dout)
        # Reads and writes in the control tick only touch these int lists (no allocation);
        # advance() moves values between them and the plant.
        self.uv = [0] * _NPINS  # latest ADC voltage per pin, microvolts
        self.level = [0] * _NPINS  # latest digital input level per pin
        self.out_num = [0] * _NPINS  # output pins: fraction num/den of the wired range
        self.out_den = [1] * _NPINS
        for w in (spec or {}).get("wiring", ()):
            pin = w["pin"]
            (self.inputs if w["kind"] in ("adc", "din") else self.outputs)[pin] = w
        self._last_us = clock.now_us()
        self._refresh()

    def advance(self):
        """Step the plant up to the clock's now (called by the clock, outside user ticks)."""
        if self.plant is None:
            return
        now = self.clock.now_us()  # unwrapped: a long virtual sleep may exceed half a tick period
        if now <= self._last_us:
            return
        try:
            dt = (now - self._last_us) / 1_000_000  # a float: allocates, hence inside the try
            for pin, w in self.outputs.items():
                lo, hi = w.get("range", (0, 1))
                self.plant.set_input(w["signal"], lo + (hi - lo) * self.out_num[pin] / self.out_den[pin])
            self.plant.step(dt)  # the models integrate any dt exactly or sub-step themselves
            self._refresh()
        except MemoryError:
            return  # the heap is locked by user code: the world waits until it is unlocked
        self._last_us = now

    def _refresh(self):
        if self.plant is None:
            return
        for pin, w in self.inputs.items():
            v = self.plant.measure(w["signal"])
            if w["kind"] == "adc":
                lo, hi = w.get("range", (0, 1))
                v0, v1 = w.get("volts", (0.0, 2.45))
                volts = v0 + (v - lo) * (v1 - v0) / (hi - lo)
                self.uv[pin] = int(max(0.0, volts) * 1_000_000)
            else:
                self.level[pin] = 1 if v > w.get("threshold", 0.5) else 0

    def drive(self, pin, num, den):
        """An output pin changed to num/den of full scale (applied at the next advance)."""
        self.out_num[pin] = num
        self.out_den[pin] = den

    def true(self, signal):
        return self.plant.true(signal)


def make_machine_classes(bench, on_wdt):
    """Pin, ADC, PWM, DAC and WDT bound to this board's bench."""

    def check_pin(n, ok, what):
        if not isinstance(n, int) or not 0 <= n < _NPINS or n in _FLASH_PINS:
            raise ValueError("invalid pin %r" % (n,))
        if ok is not None and n not in ok:
            raise ValueError("invalid Pin for %s" % what)

    class Pin:
        IN = 1
        OUT = 3
        OPEN_DRAIN = 7
        PULL_UP = 2
        PULL_DOWN = 1
        IRQ_RISING = 1
        IRQ_FALLING = 2

        def __init__(self, id, mode=-1, pull=-1, value=None):
            check_pin(id, None, "Pin")
            self.id = id
            self._mode = Pin.IN
            self._out = 0
            self.init(mode, pull, value)

        def init(self, mode=-1, pull=-1, value=None):
            if mode != -1:
                if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self.id in _INPUT_ONLY:
                    raise ValueError("pin can only be input")
                self._mode = mode
            if value is not None:
                self.value(value)

        def value(self, v=None):
            if v is None:
                if self._mode == Pin.IN:
                    return bench.level[self.id]
                return self._out
            self._out = 1 if v else 0
            bench.drive(self.id, self._out, 1)

        def on(self):
            self.value(1)

        def off(self):
            self.value(0)

        def __call__(self, v=None):
            return self.value(v)

    def pin_id(p):
        return p.id if isinstance(p, Pin) else p

    class ADC:
        ATTN_0DB = 0
        ATTN_2_5DB = 1
        ATTN_6DB = 2
        ATTN_11DB = 3
        WIDTH_9BIT = 9
        WIDTH_10BIT = 10
        WIDTH_11BIT = 11
        WIDTH_12BIT = 12

        def __init__(self, pin, atten=0):
            self.pin = pin_id(pin)
            check_pin(self.pin, _ADC_PINS, "ADC")
            self._atten = atten
            self._fs_uv = _ATTN_MV[atten] * 1000
            self._bits = 12

        def atten(self, a):
            self._atten = a
            self._fs_uv = _ATTN_MV[a] * 1000

        def width(self, bits):
            self._bits = bits

        def read_uv(self):
            uv = bench.uv[self.pin]
            if uv > self._fs_uv:
                return self._fs_uv
            # 12-bit converter: the result is quantised to full scale / 4095
            step = self._fs_uv // 4095
            return uv // step * step

        def read_u16(self):
            code = self.read_uv() * 4095 // self._fs_uv  # the 12-bit conversion result
            return code * 65535 // 4095

        def read(self):
            return self.read_u16() >> (16 - self._bits)

    class PWM:
        def __init__(self, pin, freq=5000, duty_u16=0, duty_ns=-1):
            self.pin = pin_id(pin)
            check_pin(self.pin, None, "PWM")
            if self.pin in _INPUT_ONLY:
                raise ValueError("pin can only be input")
            self._freq = freq
            self._duty = 0
            if duty_ns >= 0:
                self.duty_ns(duty_ns)
            else:
                self.duty_u16(duty_u16)

        def freq(self, f=None):
            if f is None:
                return self._freq
            if not 1 <= f <= 40_000_000:
                raise ValueError("frequency must be from 1Hz to 40MHz")
            self._freq = f

        def duty_u16(self, d=None):
            if d is None:
                return self._duty
            if not 0 <= d <= 65535:
                raise ValueError("duty_u16 must be from 0 to 65535")
            self._duty = d
            bench.drive(self.pin, d, 65535)

        def duty(self, d=None):
            if d is None:
                return self._duty >> 6
            self.duty_u16(d * 65535 // 1023)

        def duty_ns(self, ns=None):
            period_ns = 1_000_000_000 // self._freq
            if ns is None:
                return self._duty * period_ns // 65535
            self.duty_u16(min(65535, ns * 65535 // period_ns))

        def deinit(self):
            self.duty_u16(0)

    class DAC:
        def __init__(self, pin):
            self.pin = pin_id(pin)
            check_pin(self.pin, _DAC_PINS, "DAC")

        def write(self, value):
            if not 0 <= value <= 255:
                raise ValueError("value out of range")
            bench.drive(self.pin, value, 255)

    class WDT:
        """The task watchdog: once started it cannot be stopped (as on ESP32)."""

        def __init__(self, id=0, timeout=5000):
            if timeout < 1:
                raise ValueError("WDT timeout too short")
            on_wdt(timeout)

        def feed(self):
            on_wdt(0)

    return Pin, ADC, PWM, DAC, WDT
