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
#
# The chip (`cyphy sim start --chip esp32|esp32s3|esp32c3`, boot argument chip=) decides
# the pins and their functions, the DAC (ESP32 only), the ADC's response and the PWM
# limits, all from the chip's description (boards/esp32/chip_<chip>.py, with pins.py),
# the same description the HAL uses.
#
# The ADC is not a perfect line (_adc.py; [IDF-ADC] and [MP-ADC] in pins.py): read_u16() and read()
# give the raw conversion, non-linear as on the chip (0 below about 50-75 mV on ESP32, a
# toe up to the documented lower bound, compressed and saturating above the documented
# upper bound, its gain off by the chip instance's Vref); read_uv() is the calibrated
# value (ESP-IDF's eFuse calibration, in whole millivolts), within a small error of the
# pin's voltage inside the documented range only. A chip instance's errors come from the
# bench's seed (reproducible): raw gain from Vref 1040..1160 mV (ESP-IDF: 1000-1200
# among chips; the sim stays inside so that every documented range stays below
# saturation), and a residual calibration error of up to +-0.2 % and +-2 mV.
import sys

from micropython import const

# The device models (_onewire, _uart, _i2c, _spi, _pulse) are imported by Bench only when
# its wiring has such a bus: the ROM shares the node's heap (a 160K node did not boot with
# every model loaded), so a bench without them must not shrink it.
_DEV = {"onewire": "_onewire", "modbus": "_uart", "i2c": "_i2c", "spi": "_spi",
        "pulses": "_pulse", "quadrature": "_pulse"}


def _boot_arg(key, default):
    # simboot.py's arguments (key=value); _hw is imported before simboot reads them.
    for kv in sys.argv[1:]:
        if kv.startswith(key + "="):
            return kv[len(key) + 1:]
    return default


CHIP = _boot_arg("chip", "esp32")


def _load_chip():
    """boards/esp32/pins.py (what the chips share) and CHIP's own description,
    boards/esp32/chip_<CHIP>.py: the files the firmware's HAL and the host read. The
    supervisor hands their text over in the environment (CYPHY_SIM_CHIPS, a JSON object:
    file name -> text), since the node's sandbox lets it read only the ROM's directory;
    without it (no sandbox) the files are read from the repository. Only this chip's
    description is loaded, as on a node."""
    import os

    src = os.getenv("CYPHY_SIM_CHIPS")
    files = None
    if src:
        import json

        files = json.loads(src)
    rom = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."

    def run(name):
        if files is not None:
            text = files.get(name)
            if text is None:
                raise SystemExit("sim: no %s in CYPHY_SIM_CHIPS" % name)
        else:
            with open(rom + "/../../esp32/" + name) as f:
                text = f.read()
        ns = {"__name__": name[:-3]}
        exec(text, ns)
        return ns

    pins = run("pins.py")
    if CHIP not in pins["CHIP_NAMES"]:
        raise SystemExit("sim: unknown chip %r" % (CHIP,))
    pins["CHIPS"][CHIP] = run("chip_" + CHIP + ".py")["CHIP"]
    return pins


_pins = _load_chip()
C = _pins["CHIPS"][CHIP]
# the raw response and the calibration (ints, allocation-free): the sim's model, _adc.py
from _adc import adc_points as _adc_points, adc_raw as _adc_raw, adc_cal_uv as _adc_cal_uv  # noqa: E402
MCU = C["mcu"]  # "ESP32", "ESP32-S3", "ESP32-C3"
UNAME = _pins["uname"](CHIP)  # os.uname().machine: "cyphy-sim with " + UNAME

# The bare chip's pins (the HAL's DevKit maps refuse more, e.g. the console's UART pins).
_GPIO = C["gpio"]
_FLASH_PINS = C["flash"]  # wired to the SPI flash on every module: Pin() refuses them
_INPUT_ONLY = C["input_only"]
_ADC1 = C["adc1"]
_ADC2 = C["adc2"]
_ADC_PINS = _ADC1 + _ADC2
_DAC_PINS = C["dac"]
_NPINS = const(49)
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
        seed = (spec or {}).get("seed", 1)
        # The chip instance (from the seed, so that two nodes on the same bench agree):
        # raw gain error in ppm (Vref 1040..1160 mV for 1100 nominal), and per attenuation
        # the calibration's residual gain (ppm) and offset (uV).
        h = (seed * 2654435761 + 12345) & 0x7FFFFFFF
        vref = 1040 + h % 121
        self.adc_gain_ppm = 1100 * 1000000 // vref - 1000000
        self.cal = []
        for a in range(4):
            h = (h * 1103515245 + 12345) & 0x7FFFFFFF
            self.cal.append((h % 4001 - 2000, (h >> 12) % 4001 - 2000))
        self.inputs = {}  # pin -> wiring entry (adc, din)
        self.outputs = {}  # pin -> wiring entry (pwm, dac, dout)
        # Reads and writes in the control tick only touch these int lists (no allocation);
        # advance() moves values between them and the plant.
        self.uv = [0] * _NPINS  # latest ADC voltage per pin, microvolts
        self.level = [0] * _NPINS  # latest digital input level per pin
        self.out_num = [0] * _NPINS  # output pins: fraction num/den of the wired range
        self.driven = bytearray(_NPINS)  # 1: the code drives the pin (a chip select too)
        self.out_den = [1] * _NPINS
        self.onewire = {}  # pin -> _onewire.Bus (its DS18B20 models)
        self.i2c = {}  # (sda, scl) -> _i2c.Bus
        self.spi = {}  # (sck, miso) -> _spi.Bus
        self.modbus = {}  # the node's (tx, rx) -> _uart.Line (its Modbus slaves)
        self.pulses = []  # _pulse.Source: edges from plant signals
        self.irqs = {}  # pin -> (handler, Pin): soft GPIO interrupts (Pin.irq)
        self.mods = {}  # the device models this bench loaded: "_i2c" -> module
        for w in (spec or {}).get("wiring", ()):
            m = _DEV.get(w["kind"])
            if m is not None and m not in self.mods:
                self.mods[m] = __import__(m)  # now, while the ROM's files can still be read
        _pulse, _uart = self.mods.get("_pulse"), self.mods.get("_uart")
        _i2c, _spi, _onewire = self.mods.get("_i2c"), self.mods.get("_spi"), self.mods.get("_onewire")
        for n, w in enumerate((spec or {}).get("wiring", ())):
            if w["kind"] in ("pulses", "quadrature"):
                self.pulses.append(_pulse.wire(w, "wiring[%d]" % n))
                continue
            if w["kind"] == "modbus":
                _uart.wire(self, w, "wiring[%d]" % n)
                continue
            if w["kind"] == "i2c":
                self.i2c[(w["sda"], w["scl"])] = _i2c.wire(self, w, "wiring[%d]" % n)
                continue
            if w["kind"] == "spi":
                self.spi[(w["sck"], w["miso"])] = _spi.wire(self, w, "wiring[%d]" % n)
                continue
            pin = w["pin"]
            if w["kind"] == "onewire":
                self.onewire[pin] = _onewire.Bus(pin, [
                    _onewire.DS18B20(d, pin, i, self) for i, d in enumerate(w.get("devices", []))])
                continue
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
            for line in self.modbus.values():
                line.drive(self.plant)  # holding registers that drive plant inputs
            self.plant.step(dt)  # the models integrate any dt exactly or sub-step themselves
            for src in self.pulses:  # the edges the signal gave over the step
                src.step(self.plant, dt, now)
                if src.pins[0] in self.irqs:
                    self._irq(src)
            self._refresh()
        except MemoryError:
            return  # the heap is locked by user code: the world waits until it is unlocked
        self._last_us = now

    def _irq(self, src):
        # Pin.irq handlers for the new edges, each scheduled as a soft callback; a full
        # queue drops the rest (a pin's B level gives the direction of a quadrature pair)
        e = src.edges()
        new = e - src.seen
        src.seen = e
        if len(src.pins) > 1:
            self.level[src.pins[1]] = 1 if new < 0 else 0
        handler, pin = self.irqs[src.pins[0]]
        n = new if new >= 0 else -new
        while n > 0:
            try:
                self.clock.schedule(handler, pin)
            except RuntimeError:
                src.lost += n       # the queue is full: these edges never reach the code
                return
            n -= 1

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
        self.driven[pin] = 1

    def true(self, signal):
        return self.plant.true(signal)

    def measure(self, signal):
        """What a sensor of signal reads now (noise, sensor faults: the plant's)."""
        return self.plant.measure(signal)


def make_machine_classes(bench, on_wdt):
    """Pin, ADC, PWM, DAC and WDT of this board's chip, bound to its bench."""
    pins = _pins

    def check_pin(n, ok, what):
        if not isinstance(n, int) or n not in _GPIO or n in _FLASH_PINS:
            raise ValueError("invalid pin")
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

        def irq(self, handler=None, trigger=3, *, priority=1, wake=None, hard=False):
            # ESP32's GPIO interrupt with a soft handler: each edge schedules one call (the
            # 8-deep queue: edges beyond it are lost, as mp_sched_schedule drops them).
            # Edges come from the bench's pulse sources on this pin (_pulse.py).
            bench.irqs[self.id] = (handler, self)

    def pin_id(p):
        return p.id if isinstance(p, Pin) else p

    wifi = None
    try:
        import _network

        wifi = _network._state[0]  # the station interface's state (active or not)
    except (ImportError, AttributeError, IndexError):
        pass

    class ADC:
        # [MP-ADC]: ADC_ATTEN_DB_0.. = 0..3; the default attenuation is ADC_ATTEN_MAX (11 dB)
        ATTN_0DB = 0
        ATTN_2_5DB = 1
        ATTN_6DB = 2
        ATTN_11DB = 3
        if 9 in C["adc_widths"]:
            WIDTH_9BIT = 9
            WIDTH_10BIT = 10
            WIDTH_11BIT = 11
        WIDTH_12BIT = 12

        def __init__(self, pin, atten=3):
            self.pin = pin_id(pin)
            if not isinstance(self.pin, int) or self.pin not in _ADC_PINS:
                raise ValueError("invalid pin")
            self._adc2 = self.pin in _ADC2
            self._bits = 12
            self.atten(atten)

        def atten(self, a):
            if not isinstance(a, int) or not 0 <= a <= 3:
                raise ValueError("invalid attenuation")
            self._atten = a
            # (zero, lo, hi, sat, den, gain): the raw curve of this chip instance
            self._p = _adc_points(C, a, bench.adc_gain_ppm)
            self._cal_ppm, self._cal_uv = bench.cal[a]

        def width(self, bits):
            if bits not in C["adc_widths"]:
                raise ValueError("invalid bit-width")
            self._bits = bits

        def _raw12(self):
            if self._adc2 and wifi is not None and wifi["active"]:
                # ADC2 belongs to the Wi-Fi driver: adc_oneshot_read -> ESP_ERR_TIMEOUT
                raise OSError(263)
            return _adc_raw(self._p, bench.uv[self.pin])

        def read_uv(self):
            # adc_cali_raw_to_voltage on the 12-bit code: whole millivolts ([MP-ADC] adc.c)
            uv = _adc_cal_uv(self._p, self._raw12() >> (12 - self._bits) << (12 - self._bits))
            if uv:
                uv += uv // 1000 * self._cal_ppm // 1000 + self._cal_uv
                uv = (uv + 500) // 1000 * 1000
            return uv if uv > 0 else 0

        def read_u16(self):
            # [MP-ADC]: raw << (16 - bits) | raw >> (2 * bits - 16)
            b = self._bits
            raw = self._raw12() >> (12 - b)
            return (raw << (16 - b)) | (raw >> (2 * b - 16))

        def read(self):
            return self._raw12() >> (12 - self._bits)

    class PWM:
        def __init__(self, pin, freq=5000, duty_u16=0, duty_ns=-1):
            self.pin = pin_id(pin)
            check_pin(self.pin, None, "PWM")
            if self.pin in _INPUT_ONLY:
                raise ValueError("pin can only be input")
            self._freq = 0
            self.freq(freq)
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
            why = pins["pwm_error"](CHIP, f)
            if why is not None:
                # ledc_timer_config fails: MicroPython's check_esp_err raises OSError
                raise OSError(-1, "ESP_FAIL: " + why)
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
            if not _DAC_PINS:
                # no DAC on this chip: MicroPython's ESP32-S3/C3 builds have no machine.DAC
                raise AttributeError("'module' object has no attribute 'DAC'")
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

# (machine.I2C and machine.SPI: _i2c.make_class, _spi.make_class, bound in _board.py)
