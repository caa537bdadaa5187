# The HAL (boards/hal.py) on ESP32-family boards, written against MicroPython's ESP32
# port: machine.ADC/PWM/DAC/Pin/Timer/WDT, network.WLAN and socket (UDP). Each chip and
# its DevKit pin map is data in its own module, boards/esp32/chip_<chip>.py (the one
# description, shared with the sim and the host); pins.py is what they share. Board() is
# the board we run on (its chip from os.uname().machine), Board(variant) a given DevKit,
# detect() the one Board object of this node; only the chip asked for is imported.
#
# Only exercised so far on the sim board (boards/sim), whose machine module follows
# ESP32's API, and against a recording fake machine in tests/firmware/test_hal.py.
import time

import machine

from boards import hal
from boards.esp32 import pins as _pins

_ATTN = ("ATTN_0DB", "ATTN_2_5DB", "ATTN_6DB", "ATTN_11DB")  # machine.ADC constants
_ATTN_DB = ("0", "2.5", "6", "11")
_WDT_MIN_MS = 1000  # MicroPython's ESP32 quick reference: "1s is the minimum"
_PERIOD_MIN_US = 1000  # periodic() runs at most at 1 kHz (soft callbacks, see hal.py)


def _fraction(num, den, full):
    """num/den of full, clamped, in ints (full * den must stay below 2**30)."""
    if num <= 0:
        return 0
    if num >= den:
        return full
    return num * full // den


def _check_den(den):
    if not 1 <= den <= hal.DEN_MAX:
        raise ValueError("den must be 1..%d" % hal.DEN_MAX)


class AnalogIn(hal.AnalogIn):
    def __init__(self, pin, atten, min_mv, range_mv):
        self.pin = pin
        self.min_mv = min_mv
        self.range_mv = range_mv
        self.atten_db = _ATTN_DB[atten]
        self._adc = machine.ADC(machine.Pin(pin), atten=getattr(machine.ADC, _ATTN[atten]))

    def read_uv(self):
        return self._adc.read_uv()

    def read_u16(self):
        return self._adc.read_u16()


class DigitalIn(hal.DigitalIn):
    def __init__(self, pin, pull):
        self.pin = pin
        p = None if pull is None else (machine.Pin.PULL_UP if pull == "up" else machine.Pin.PULL_DOWN)
        self._pin = machine.Pin(pin, machine.Pin.IN, p)

    def read(self):
        return self._pin.value()


class DigitalOut(hal.DigitalOut):
    def __init__(self, pin, value):
        self.pin = pin
        self._pin = machine.Pin(pin, machine.Pin.OUT, value=1 if value else 0)

    def write(self, num, den=1):
        self._pin.value(1 if 2 * num >= den else 0)


class PwmOut(hal.PwmOut):
    def __init__(self, pin, freq_hz, duty_u16):
        self.pin = pin
        self.freq_hz = freq_hz
        self._pwm = machine.PWM(machine.Pin(pin), freq=freq_hz, duty_u16=duty_u16)

    def write(self, num, den):
        if den > hal.DEN_MAX:
            _check_den(den)
        self._pwm.duty_u16(_fraction(num, den, 65535))

    def duty_u16(self, duty):
        self._pwm.duty_u16(duty)


class DacOut(hal.DacOut):
    def __init__(self, pin, value, full_mv):
        self.pin = pin
        self.full_mv = full_mv
        self._dac = machine.DAC(machine.Pin(pin))
        self._dac.write(value)

    def write(self, num, den):
        if den > hal.DEN_MAX:
            _check_den(den)
        self._dac.write(_fraction(num, den, 255))

    def write_u8(self, value):
        self._dac.write(value)


class Periodic(hal.Periodic):
    """machine.Timer(tid) with a soft callback (ESP32 refuses hard=True)."""

    def __init__(self, board, tid, period_us, callback):
        self.period_us = period_us
        self.count = 0
        self._board = board
        self._tid = tid
        self._cb = callback
        # ESP32's Timer takes period= in ms, or freq= in Hz for sub-ms-exact rates.
        if period_us % 1000 == 0:
            kw = {"period": period_us // 1000}
        else:
            kw = {"freq": 1_000_000 // period_us}
        self._timer = machine.Timer(tid)
        # self._fire is bound once here; the timer calling it allocates nothing.
        self._timer.init(mode=machine.Timer.PERIODIC, callback=self._fire, **kw)

    def _fire(self, _timer):
        self.count += 1
        self._cb(self)

    def stop(self):
        if self._timer is not None:
            self._timer.deinit()
            self._timer = None
            self._board._timers[self._tid] = None


class Watchdog(hal.Watchdog):
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._wdt = machine.WDT(timeout=timeout_ms)

    def feed(self):
        self._wdt.feed()


# sendto() errors that mean "no room right now": the datagram is dropped (False).
# EAGAIN 11, ENOMEM 12 (lwIP out of pbufs), ENOBUFS 105, ETIMEDOUT 110 (ESP32's socket
# module reports a would-block sendto() on a non-blocking socket as ETIMEDOUT).
_SEND_DROPPED = (11, 12, 105, 110, 113, 118)  # ... and EHOSTUNREACH (Linux 113, ESP32's lwIP 118) while Wi-Fi is down
_EAGAIN = 11  # recvfrom() on a non-blocking socket with nothing waiting (also EWOULDBLOCK)


def _udp_socket(socket, bind_addr, reuse=True):
    """A non-blocking UDP socket bound to bind_addr (what the port's bind() takes)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        so_broadcast = getattr(socket, "SO_BROADCAST", None)  # not in older ESP32 ports
        if so_broadcast is not None:
            s.setsockopt(socket.SOL_SOCKET, so_broadcast, 1)
        s.bind(bind_addr)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def _poller(socks):
    import select

    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN)
    return p


class Datagram(hal.Datagram):
    """One socket bound to 0.0.0.0:port: unicasts to the station and broadcasts."""

    BROADCAST = "255.255.255.255"  # limited broadcast: the whole subnet of a station

    def __init__(self, board, ip, port):
        import socket

        self.local = (ip, port)
        self._board = board
        self._s = _udp_socket(socket, ("0.0.0.0", port))
        self._poll = None

    def _recv(self, sock, buf):
        # MicroPython's socket has no recvfrom_into (readinto() loses the sender), so
        # recvfrom() allocates the datagram and it is copied into buf.
        try:
            data, addr = sock.recvfrom(len(buf))
        except OSError as e:
            if e.errno == _EAGAIN:
                return None
            raise
        n = len(data)
        buf[:n] = data
        return n, addr

    def recv_into(self, buf):
        return self._recv(self._s, buf)

    def ready(self):
        if self._poll is None:          # made at the first call (then nothing is allocated:
            self._poll = _poller(self._socks())  # ipoll reuses its result)
        for _ in self._poll.ipoll(0):
            return True
        return False

    def _socks(self):
        return (self._s,)

    def _to(self, addr):
        return addr  # ESP32's sendto() takes (ip, port) and parses a dotted IPv4 itself

    def sendto(self, data, addr):
        try:
            self._s.sendto(data, self._to(addr))
        except OSError as e:
            if e.errno in _SEND_DROPPED:
                return False
            raise
        return True

    def broadcast(self, data, port):
        return self.sendto(data, (self.BROADCAST, port))

    def close(self):
        if self._s is not None:
            self._s.close()
            self._s = None
        if self._board._udp.get(self.local[1]) is self:
            del self._board._udp[self.local[1]]


def wdt_timeout_ms(timeout_ms):
    """What ESP32 can do: at least 1000 ms, in whole seconds (older ports truncate the
    timeout to seconds; rounding up here makes every port behave the same)."""
    if timeout_ms < _WDT_MIN_MS:
        return _WDT_MIN_MS
    return (timeout_ms + 999) // 1000 * 1000


def _buses():
    from boards.esp32 import buses
    return buses


def _machine_name():
    import os

    return os.uname().machine


def variant_of(machine_name):
    """The DevKit variant for an os.uname().machine ("... with ESP32S3" -> "s3")."""
    chip = _pins.chip_of_machine(machine_name)
    if chip is None:
        raise ValueError("no cyphy board for %r: supported are ESP32, ESP32-S3 and ESP32-C3" % (machine_name,))
    return _pins.CHIP_BOARD[chip]


class Board(hal.Board):
    def __init__(self, variant=None):
        if variant is None:
            # The chip we run on: MicroPython's os.uname().machine ends with " with ESP32",
            # " with ESP32S3" or " with ESP32C3" (its board's MICROPY_HW_MCU_NAME).
            variant = variant_of(_machine_name())
        if variant not in _pins.BOARD_CHIP:
            raise ValueError("unknown ESP32 board variant %r; known: %s" % (variant, ", ".join(sorted(_pins.BOARD_CHIP))))
        d = _pins.board(variant)  # imports this DevKit's chip module, and no other
        self._d = d
        self.variant = variant
        self.name = d["name"]
        self.mcu = d["mcu"]
        self.chip = d["chip"]  # "esp32", "esp32s3", "esp32c3": boards/esp32/chip_<chip>.py
        # The clock is the time module's: instance attributes, so that calling
        # board.ticks_us() costs no bound-method allocation.
        self.ticks_us = time.ticks_us
        self.ticks_add = time.ticks_add
        self.ticks_diff = time.ticks_diff
        self.sleep_us = time.sleep_us
        self._timers = [None] * d["timers"]
        self._pwm = {}  # pin -> freq_hz of PWM channels handed out
        self._adc = []  # pins of analog inputs handed out
        self._wdt = None
        self._wifi_on = False  # the radio has been started (ADC2 is then unusable)
        self._wlan = None
        self._wifi_fail = None  # why the last wifi_connect gave up
        self._keeper = None  # a boards.esp32.wifi.WifiKeeper once wifi_keeper() made one
        self._udp = {}  # port -> open Datagram

    # ---- capabilities ----
    def caps(self, pin):
        d = self._d
        if pin not in d["gpio"] or pin in d["reserved"]:
            return ()
        c = [hal.DIN]
        if pin not in d["input_only"]:
            c.append(hal.DOUT)
            c.append(hal.PWM)
        if pin in d["adc1"] or (pin in d["adc2"] and not self._wifi_on):
            c.append(hal.ADC)
        if pin in d["dac"]:
            c.append(hal.DAC)
        return tuple(c)

    def pin_note(self, pin):
        d = self._d
        if pin not in d["gpio"]:
            return "there is no such GPIO on this board"
        if pin in d["reserved"]:
            return "reserved for " + d["reserved"][pin]
        notes = []
        if pin in d["input_only"]:
            notes.append("input only, without internal pull resistors")
        if pin in d["adc2"]:
            now = " (it is now)" if self._wifi_on else ""
            notes.append("ADC2, unusable as an analog input while Wi-Fi is active" + now)
        if pin in d["notes"]:
            notes.append(d["notes"][pin])
        return "; ".join(notes)

    def pins(self, kind):
        return tuple([p for p in sorted(self._d["gpio"]) if kind in self.caps(p)])

    # ---- channels ----
    def analog_in(self, pin, max_mv=None, atten_db=None):
        self.check_pin(pin, hal.ADC)
        ranges = self._d["adc_mv"]
        if atten_db is not None:
            atten = _pins.atten_index(atten_db)
            if max_mv is not None and max_mv > ranges[atten]:
                raise ValueError("pin %d: %s at %s dB measures at most %d mV (calibrated), not %d"
                                 % (pin, self.mcu, _ATTN_DB[atten], ranges[atten], max_mv))
        else:
            if max_mv is None:
                max_mv = ranges[-1]
            for atten in range(len(ranges)):
                if max_mv <= ranges[atten]:
                    break
            else:
                raise ValueError("pin %d: %s measures at most %d mV (at 11 dB); %d mV needs a divider"
                                 % (pin, self.mcu, ranges[-1], max_mv))
        lo, hi = self._d["adc_range_mv"][atten]
        ch = AnalogIn(pin, atten, lo, hi)
        self._adc.append(pin)
        return ch

    def digital_in(self, pin, pull=None):
        self.check_pin(pin, hal.DIN)
        if pull not in (None, "up", "down"):
            raise ValueError('pull must be None, "up" or "down", not %r' % (pull,))
        if pull is not None and pin in self._d["no_pull"]:
            raise ValueError("pin %d on %s has no internal pull resistors; fit an external one" % (pin, self.name))
        return DigitalIn(pin, pull)

    def digital_out(self, pin, value=0):
        self.check_pin(pin, hal.DOUT)
        return DigitalOut(pin, value)

    # Buses and counters for device channels (boards/esp32/buses.py, loaded only when a
    # config has one: a node without them pays for these lines only)
    def onewire(self, pin):
        return _buses().onewire(self, pin)

    def uart(self, id, tx, rx, baud=9600, parity="none", stop=1):
        return _buses().uart(self, id, tx, rx, baud, parity, stop)

    def i2c(self, id, sda, scl, freq=100000):
        return _buses().i2c(self, id, sda, scl, freq)

    def spi(self, id, sck, miso, baudrate=1000000, mosi=None):
        return _buses().spi(self, id, sck, miso, baudrate, mosi)

    def counter(self, unit, pin, edge="rising", filter_ns=0):
        return _buses().counter(self, unit, pin, edge, filter_ns)

    def encoder(self, unit, pin_a, pin_b, phases=4, filter_ns=0):
        return _buses().encoder(self, unit, pin_a, pin_b, phases, filter_ns)

    def pwm_out(self, pin, freq_hz=1000, duty_u16=0):
        self.check_pin(pin, hal.PWM)
        if not isinstance(freq_hz, int) or not 1 <= freq_hz <= 40_000_000:
            raise ValueError("pin %d: PWM frequency must be an int from 1 Hz to 40 MHz, not %r" % (pin, freq_hz))
        why = _pins.pwm_error(self.chip, freq_hz)
        if why is not None:
            raise ValueError("pin %d: PWM at %d Hz: %s; %s PWM runs from %d Hz"
                             % (pin, freq_hz, why, self.mcu, _pins.pwm_min_hz(self.chip)))
        if not 0 <= duty_u16 <= 65535:
            raise ValueError("duty_u16 must be 0..65535")
        used = dict(self._pwm)
        used[pin] = freq_hz
        if len(used) > self._d["pwm_channels"]:
            raise ValueError("pin %d: %s has only %d PWM channels, all in use (pins %s)"
                             % (pin, self.mcu, self._d["pwm_channels"], sorted(self._pwm)))
        freqs = set(used.values())
        if len(freqs) > self._d["pwm_freqs"]:
            raise ValueError("pin %d: %s can run only %d different PWM frequencies at once; in use: %s Hz"
                             % (pin, self.mcu, self._d["pwm_freqs"], sorted(set(self._pwm.values()))))
        ch = PwmOut(pin, freq_hz, duty_u16)
        self._pwm[pin] = freq_hz
        return ch

    def dac_out(self, pin, value=0):
        self.check_pin(pin, hal.DAC)
        return DacOut(pin, value, self._d["dac_mv"])

    # ---- time ----
    def periodic(self, period_us, callback):
        if not isinstance(period_us, int) or period_us < _PERIOD_MIN_US:
            raise ValueError("period_us must be an int >= %d (at most 1 kHz), not %r" % (_PERIOD_MIN_US, period_us))
        if period_us % 1000 and 1_000_000 % period_us:
            raise ValueError("period_us %d: ESP32 timers take whole ms or an integer rate in Hz" % period_us)
        for tid in range(len(self._timers)):
            if self._timers[tid] is None:
                break
        else:
            raise ValueError("all %d timers of %s are in use; stop() one first" % (len(self._timers), self.mcu))
        h = Periodic(self, tid, period_us, callback)
        self._timers[tid] = h
        return h

    def watchdog(self, timeout_ms):
        if not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError("timeout_ms must be a positive int, not %r" % (timeout_ms,))
        ms = wdt_timeout_ms(timeout_ms)
        if self._wdt is None:
            self._wdt = Watchdog(ms)
        elif self._wdt.timeout_ms != ms:
            raise ValueError("the watchdog already runs with %d ms; it cannot be changed or stopped"
                             % self._wdt.timeout_ms)
        return self._wdt

    def reset(self):
        machine.reset()

    # ---- identity and network ----
    def unique_id(self):
        return machine.unique_id()

    def _radio_on(self):
        """Wi-Fi is about to start: ADC2 channels would stop working, so refuse."""
        busy = [p for p in self._adc if p in self._d["adc2"]]
        if busy:
            raise ValueError("Wi-Fi needs ADC2, used by the analog inputs on pins %s; move them to ADC1 pins %s"
                             % (", ".join([str(p) for p in busy]), ", ".join([str(p) for p in self._d["adc1"]])))
        self._wifi_on = True

    def wifi_connect(self, ssid, key, timeout_ms=15000):
        import network  # only when Wi-Fi is wanted: the radio costs RAM

        self._radio_on()
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
        w = self._wlan
        w.active(True)
        self._wifi_fail = None
        w.connect(ssid, key)
        names = _status_names(network)
        t0 = time.ticks_ms()
        while not w.isconnected():
            st = names.get(w.status())
            if st == "wrong_password":  # definite; anything else may still recover
                self._wifi_fail = st
                break
            if time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
                self._wifi_fail = st if st in ("no_ap_found", "failed") else "failed"
                break
            time.sleep_ms(50)
        if self._wifi_fail:
            # ESP32 retries forever after connect(); stop, so that the result is final.
            w.disconnect()
            return False
        return True

    def wifi_keeper(self, ssid, key, **kw):
        """Wi-Fi kept up without blocking: a boards.esp32.wifi.WifiKeeper on this board's
        station interface (connects, and reconnects with back-off after a drop or a
        failure). Call its poll() every 10-100 ms; start() turns the radio on."""
        import network
        from boards.esp32.wifi import WifiKeeper

        self._radio_on()
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
        self._wifi_fail = None
        self._keeper = WifiKeeper(self._wlan, ssid, key, **kw)
        return self._keeper

    def wifi_status(self):
        import network

        w = self._wlan
        if w is None or not w.active():
            return "off"
        if w.isconnected():
            return "connected"
        k = self._keeper
        if k is not None:
            return {"wrong password": "wrong_password", "no access point": "no_ap_found",
                    "off": "off"}.get(k.state, "connecting")
        if self._wifi_fail:
            return self._wifi_fail
        return _status_names(network).get(w.status(), "idle")

    def wifi_ip(self):
        w = self._wlan
        if w is None or not w.isconnected():
            return None
        return w.ifconfig()[0]

    Datagram = Datagram  # the class udp() makes (the sim board has its own)

    def udp(self, port):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError("udp port must be an int 1..65535, not %r" % (port,))
        st = self.wifi_status()
        if st != "connected":
            raise OSError("udp(%d): Wi-Fi is not connected (status %r); call board.wifi_connect(ssid, key) first"
                          % (port, st))
        if port in self._udp:
            raise ValueError("udp port %d is already open on this board; close() it first" % port)
        d = self.Datagram(self, self.wifi_ip(), port)
        self._udp[port] = d
        return d

    def info(self):
        i = hal.Board.info(self)
        d = self._d
        i.update(module=d["module"], chip=self.chip, timers=d["timers"], pwm_channels=d["pwm_channels"],
                 adc_mv=d["adc_mv"], adc_range_mv=d["adc_range_mv"], reserved=d["reserved"],
                 notes=d["notes"])
        return i


def _status_names(network):
    """network.WLAN.status() codes -> hal status names (constants differ by version)."""
    names = {}
    for const, name in (("STAT_IDLE", "idle"), ("STAT_CONNECTING", "connecting"),
                        ("STAT_GOT_IP", "connected"), ("STAT_WRONG_PASSWORD", "wrong_password"),
                        ("STAT_NO_AP_FOUND", "no_ap_found"), ("STAT_CONNECT_FAIL", "failed"),
                        ("STAT_ASSOC_FAIL", "failed"), ("STAT_HANDSHAKE_TIMEOUT", "failed")):
        v = getattr(network, const, None)
        if v is not None:
            names[v] = name
    return names


_the_board = None


def detect(machine_name=None):
    """The Board we run on, from os.uname().machine ("... with ESP32S3" and so on).
    A sim node ("cyphy-sim with ESP32") gets the sim board. Boards other than the three
    DevKits get their chip's DevKit pin map: check it against your board's schematic.
    Without an argument it returns the same object on every call: the chip has one set
    of timers and one watchdog, which two Board objects would each think they own."""
    global _the_board
    if machine_name is None:
        if _the_board is None:
            import os

            _the_board = detect(os.uname().machine)
        return _the_board
    if machine_name.startswith("cyphy-sim"):
        from boards.sim.board import Board as SimBoard

        return SimBoard(_pins.chip_of_machine(machine_name))
    return Board(variant_of(machine_name))
