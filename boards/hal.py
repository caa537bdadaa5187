# The board HAL: everything the node firmware may ask of the hardware.
#
# Firmware outside boards/ never imports `machine` or `network`; it gets a Board (from
# boards/esp32/board.py or boards/sim/board.py) and talks to it and to the channels it
# hands out. This file is the contract: base classes whose methods raise
# NotImplementedError, with the units in the docstrings. docs/hal.md has the overview.
#
# Conventions, for code that runs in the control tick:
# - ints only: microvolts, duty fractions num/den, microseconds. No floats.
# - reads and writes on channels, Periodic.count, Watchdog.feed() and the clock allocate
#   nothing (tests prove it under micropython.heap_lock()). Setup (the factory methods,
#   periodic(), watchdog(), wifi_*) may allocate and may raise; so may UDP (udp(),
#   Datagram), which is for the main loop around the control tick.
# - factory methods check the pin against the board's capabilities and raise ValueError
#   naming the pin, what it can do instead, and which pins can do what was asked.

ADC = "adc"  # analog input
DIN = "din"  # digital input
DOUT = "dout"  # digital output
PWM = "pwm"  # PWM output
DAC = "dac"  # analog output
KINDS = (ADC, DIN, DOUT, PWM, DAC)
_WHAT = {ADC: "an analog input", DIN: "a digital input", DOUT: "a digital output",
         PWM: "a PWM output", DAC: "a DAC output"}

# The largest denominator for write(num, den): num * 65535 must stay a small int on
# ESP32 (below 2**30), or the multiplication would allocate a long int.
DEN_MAX = 16384


class AnalogIn:
    """An ADC channel. Attributes: pin, range_mv (full scale at the chosen attenuation)."""

    def read_uv(self):
        """The input voltage in microvolts (int), calibrated where the chip allows
        (ESP32: ADC.read_uv(), eFuse calibration, millivolt resolution). Saturates at
        range_mv * 1000."""
        raise NotImplementedError

    def read_u16(self):
        """The raw conversion scaled to 0..65535 (uncalibrated), as machine.ADC.read_u16()."""
        raise NotImplementedError


class DigitalIn:
    """A digital input. Attribute: pin."""

    def read(self):
        """The pin level, 0 or 1."""
        raise NotImplementedError


class DigitalOut:
    """A digital output. Attribute: pin."""

    def write(self, num, den=1):
        """Drive the pin high if num/den >= 1/2, else low. write(1) and write(0) are
        plain on/off; the fraction form lets outputs of every kind share one call."""
        raise NotImplementedError


class PwmOut:
    """A PWM output. Attributes: pin, freq_hz (fixed at setup)."""

    def write(self, num, den):
        """Duty cycle num/den, clamped to 0..1. 1 <= den <= DEN_MAX (16384)."""
        raise NotImplementedError

    def duty_u16(self, duty):
        """Duty cycle duty/65535, duty an int 0..65535 (machine.PWM's unit)."""
        raise NotImplementedError


class DacOut:
    """An 8-bit DAC output (ESP32 GPIO25/26 only). Attribute: pin, full_mv (nominal)."""

    def write(self, num, den):
        """Output num/den of full scale, clamped to 0..1. 1 <= den <= DEN_MAX."""
        raise NotImplementedError

    def write_u8(self, value):
        """Output value/255 of full scale, value an int 0..255 (machine.DAC's unit)."""
        raise NotImplementedError


class Periodic:
    """A running periodic callback. Attributes: period_us, count (calls so far)."""

    def stop(self):
        """Stop calling back and free the timer. Idempotent."""
        raise NotImplementedError


class Watchdog:
    """The hardware watchdog. Attribute: timeout_ms (the effective timeout)."""

    def feed(self):
        """Restart the countdown. Feed only from a loop that has proven itself healthy."""
        raise NotImplementedError


class Datagram:
    """A UDP endpoint from Board.udp(port): non-blocking, one port, IPv4.

    Attribute local: (ip, port), the station's address and the bound port. Addresses
    are (ip, port) tuples with a dotted IPv4 string, as MicroPython's socket module on
    ESP32 gives and takes them; names are not resolved. All calls may allocate (the
    socket layer does), so use them around the control tick, not inside it."""

    def recv_into(self, buf):
        """Take the next waiting datagram into buf (a bytearray or memoryview):
        (nbytes, addr), or None when nothing is waiting. Never blocks and never raises
        for "nothing waiting". A datagram longer than buf is truncated to len(buf) bytes
        and the rest is lost (UDP semantics): size buf for the largest datagram expected.
        addr is the sender's (ip, port), fit for sendto()."""
        raise NotImplementedError

    def ready(self):
        """True if a datagram is waiting (recv_into() would return one). Allocates
        nothing, so a frequent poll (a timer's callback) costs little when idle. The
        network stack keeps only a few datagrams for a socket (ESP32: lwIP's receive
        mailbox, 6 by default) and drops what comes beyond: poll often under load."""
        raise NotImplementedError

    def sendto(self, data, addr):
        """Send data (bytes-like) as one datagram to addr (ip, port). True when handed to
        the network stack; False when the stack has no room right now (would block, out
        of buffers): the datagram is dropped, as UDP may drop it anyway, so retry later
        or not at all. Other errors (no route, Wi-Fi down...) raise OSError. True does
        not mean delivered."""
        raise NotImplementedError

    def broadcast(self, data, port):
        """Send data to every host on the subnet at port, from this endpoint's port;
        True/False/OSError as sendto(). The sender does not receive its own broadcast."""
        raise NotImplementedError

    def close(self):
        """Release the port. Idempotent; the endpoint cannot be used afterwards."""
        raise NotImplementedError


class Board:
    """One board. Attributes: name (e.g. "ESP32-DevKitC"), mcu ("ESP32", "ESP32-S3",
    "ESP32-C3"), variant (the key it was built from)."""

    name = "?"
    mcu = "?"
    variant = "?"

    # ---- pins and their capabilities ----
    def caps(self, pin):
        """The kinds (ADC, DIN, DOUT, PWM, DAC) pin can be used as right now, a tuple;
        () for a pin that does not exist or is reserved."""
        raise NotImplementedError

    def pin_note(self, pin):
        """Why a pin is limited or needs care (reserved, strapping, ADC2...), or ""."""
        raise NotImplementedError

    def pins(self, kind):
        """All pins that can be `kind` right now, ascending."""
        raise NotImplementedError

    def check_pin(self, pin, kind):
        """Raise ValueError unless pin can be `kind`, naming the pin and its options."""
        if not isinstance(pin, int) or isinstance(pin, bool):
            raise ValueError("pin must be a GPIO number (int), not %r" % (pin,))
        caps = self.caps(pin)
        if kind in caps:
            return
        note = self.pin_note(pin)
        msg = "pin %d on %s cannot be %s (%s); " % (pin, self.name, _WHAT[kind], kind)
        msg += "it can be: " + ", ".join(caps) if caps else "it cannot be used"
        msg += " (%s)" % note if note else ""
        ok = self.pins(kind)
        msg += "; %s pins: %s" % (kind, ", ".join([str(p) for p in ok]) if ok else "none on this board")
        raise ValueError(msg)

    # ---- channels (setup: may allocate, may raise ValueError) ----
    def analog_in(self, pin, max_mv=None):
        """An AnalogIn able to measure up to max_mv millivolts (default: the largest
        range the chip has). The board picks the smallest attenuation that covers it."""
        raise NotImplementedError

    def digital_in(self, pin, pull=None):
        """A DigitalIn; pull is None, "up" or "down"."""
        raise NotImplementedError

    def digital_out(self, pin, value=0):
        """A DigitalOut, driven to value (0/1) from the start."""
        raise NotImplementedError

    def pwm_out(self, pin, freq_hz=1000, duty_u16=0):
        """A PwmOut at freq_hz (int), starting at duty_u16/65535."""
        raise NotImplementedError

    def dac_out(self, pin, value=0):
        """A DacOut starting at value/255 (boards without a DAC refuse every pin)."""
        raise NotImplementedError

    # Buses and counters for device channels (not defined here, to keep this module small
    # on every node; the ESP32 board's: boards/esp32/buses.py):
    #   onewire(pin): MicroPython's onewire.OneWire (reset(required), readinto, writebyte,
    #     write, select_rom, scan, crc8; OneWireError); the pin must drive (4.7 kohm pull-up)
    #   uart(id, tx, rx, baud, parity, stop): machine.UART, non-blocking (timeout 0)
    #   i2c(id, sda, scl, freq): machine.I2C (writeto, readfrom_into; a NACK: OSError)
    #   spi(id, sck, miso, baudrate, mosi=None): machine.SPI, mode 0 (readinto, write)
    #   counter(unit, pin, edge, filter_ns), encoder(unit, pin_a, pin_b, phases,
    #     filter_ns): value(v=None) gets and optionally sets the count (machine.Counter,
    #     machine.Encoder on PCNT unit `unit`; without one, Pin IRQs)

    # ---- time ----
    def periodic(self, period_us, callback):
        """Call callback(handle) every period_us microseconds; returns the Periodic handle.

        Limits: 1000 <= period_us (at most 1 kHz), and period_us a whole number of
        milliseconds or a divisor of 1_000_000 (an integer rate in Hz); else ValueError.
        Callbacks are soft: they run in the main thread, never concurrently with the
        code they interrupt, and may allocate. They arrive late by whatever the main
        thread is doing (a GC pass, a flash write: up to several ms on ESP32); calls
        held off for several periods queue up (ESP32: 8 queue entries, shared) and then
        run back to back, and calls beyond the queue are dropped. So read the clock in
        the callback rather than counting calls. Boards have few timers (ESP32/S3: 4,
        C3: 2); ValueError when none is free."""
        raise NotImplementedError

    def watchdog(self, timeout_ms):
        """Start the hardware watchdog (or return the running one); it cannot be stopped.
        The board may round timeout_ms up to what the hardware can do (ESP32: whole
        seconds, at least 1000 ms); the Watchdog's timeout_ms says what it got. Asking
        again for a different timeout raises ValueError. If not fed in time, the chip
        resets and machine.reset_cause() is WDT_RESET (3)."""
        raise NotImplementedError

    def ticks_us(self):
        """Microsecond counter, wrapping at 2**30 on ESP32: only compare with ticks_diff."""
        raise NotImplementedError

    def ticks_add(self, t, delta_us):
        """t + delta_us on the ticks circle."""
        raise NotImplementedError

    def ticks_diff(self, a, b):
        """a - b in microseconds, correct across the wrap while |a - b| < 2**29."""
        raise NotImplementedError

    def sleep_us(self, us):
        """Sleep; periodic callbacks run meanwhile."""
        raise NotImplementedError

    def virtual_time(self):
        """True when time only moves while the node sleeps (the sim's test mode)."""
        return False

    def reset(self):
        """Hard-reset the chip now (machine.reset()); does not return. Callers first take
        every output to its fail-safe value."""
        raise NotImplementedError

    # ---- identity and network ----
    def unique_id(self):
        """The chip's unique id, bytes (ESP32: the base MAC address, 6 bytes)."""
        raise NotImplementedError

    def wifi_connect(self, ssid, key, timeout_ms=15000):
        """Join a Wi-Fi network as a station; True once connected with an address,
        False after timeout_ms or on a definite failure (see wifi_status())."""
        raise NotImplementedError

    def wifi_status(self):
        """One of "off", "idle", "connecting", "connected", "wrong_password",
        "no_ap_found", "failed"."""
        raise NotImplementedError

    def wifi_ip(self):
        """The station's IPv4 address as a string, or None when not connected."""
        raise NotImplementedError

    def udp(self, port):
        """A Datagram bound to UDP port (1..65535) on the station's address, receiving
        unicast datagrams to it and broadcasts to the port. Wi-Fi must be connected
        (wifi_connect() first), else OSError; a port already open on this board:
        ValueError. Non-blocking only: poll recv_into() from the main loop."""
        raise NotImplementedError

    def cpu_slowdown(self):
        """Chip microseconds per measured microsecond: 1 on the chip itself; on the sim the
        calibrated slowdown of its chip against the host (cyphy.sim.speed), None if unknown.
        The node reports its loops' compute time in chip microseconds with it."""
        return 1

    def info(self):
        """A dict describing the board (for the REPL and telemetry; allocates)."""
        return {"name": self.name, "mcu": self.mcu, "variant": self.variant,
                "pins": {k: self.pins(k) for k in KINDS}}
