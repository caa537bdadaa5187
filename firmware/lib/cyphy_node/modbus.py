# Modbus RTU master over a UART (docs/config.md, "Sensors and buses": modbus_in, modbus_out).
#
# The protocol (Modbus over Serial Line V1.02, and the application protocol V1.1b3):
# - a frame is: slave address, function code, data, CRC-16/MODBUS (polynomial 0xA001
#   reflected, initial value 0xFFFF, low byte first); every request here is 8 bytes:
#   function 3 (read holding registers) or 4 (read input registers): address, count;
#   function 6 (write single register): address, value. Answers: 3/4: byte count and the
#   registers (5 + 2 x count bytes), 6: the request echoed (8 bytes), an exception: the
#   function code | 0x80 and an exception code (5 bytes);
# - a character is 11 bits (start, 8 data, parity or a second stop bit, stop); frames are
#   separated by at least 3.5 character times of silence (1.75 ms above 19200 baud);
# - one request at a time on a bus: the master waits for the answer or its timeout.
#
# The node's service steps the bus between control passes, one short action per call:
# send a request (write() fills the UART's TX buffer and returns: ESP32's driver sends it
# in the background), then in later calls collect what uart.any() says has arrived,
# until the frame is whole or timeout_ms has passed on the node's ms clock. Nothing ever
# waits for the slave. With an RS-485 driver-enable pin the request's step waits while the
# 8 bytes go out (uart.flush(): 88 bit times, 9.2 ms at 9600 baud), then drops DE so that
# the slave's answer can come in; without one nothing waits.
#
# The control tick only reads the latest value and its age (Register.read / ok, as every
# bus sensor: allocation-free ints); a register without a fresh good answer (no answer,
# CRC error, exception, bad frame, stale) is a sensor fault there. An output's write() in
# the tick only stores the value; the bus writes it (function 6) when its register value
# changes and again every period_ms, the fail-safe value first at the bus's next request.
import time

from .devices import Reading
from .fixed import VAL_MAX, VAL_MIN, Gain, clamp, sat_add, to_fixed

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

OK = const(0)
TIMEOUT = const(1)
CRC = const(2)
STALE = const(3)
WAITING = const(4)
EXCEPTION = const(5)
BAD = const(6)
STATUS = ("ok", "no answer", "crc error", "stale", "waiting", "exception", "bad frame")

_RX = const(16)             # the longest answer here is 9 bytes (two registers)


def crc16(buf, n):
    """CRC-16/MODBUS of buf[0:n]: polynomial 0xA001 (reflected 0x8005), init 0xFFFF. A frame
    carries it low byte first; over a whole good frame (its CRC included) it is 0."""
    c = 0xFFFF
    i = 0
    while i < n:
        c ^= buf[i]
        k = 0
        while k < 8:
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
            k += 1
        i += 1
    return c


def request(buf, slave, fn, reg, word):
    """The 8-byte request into buf: slave, fn, reg (16 bits), word (a count or a value)."""
    buf[0] = slave
    buf[1] = fn
    buf[2] = (reg >> 8) & 0xFF
    buf[3] = reg & 0xFF
    buf[4] = (word >> 8) & 0xFF
    buf[5] = word & 0xFF
    c = crc16(buf, 6)
    buf[6] = c & 0xFF
    buf[7] = c >> 8


def answer(rx, n, req, want):
    """What the n bytes in rx say as the answer to the 8-byte request req (whose good
    answer is `want` bytes long): -1 while incomplete, else OK, CRC, EXCEPTION or BAD."""
    if n < 2:
        return -1
    m = 5 if rx[1] & 0x80 else want
    if n < m:
        return -1
    c = crc16(rx, m - 2)
    if rx[m - 2] != c & 0xFF or rx[m - 1] != c >> 8:
        return CRC
    if rx[0] != req[0] or rx[1] & 0x7F != req[1]:
        return BAD                  # another slave's or another function's answer
    if rx[1] & 0x80:
        return EXCEPTION
    if req[1] == 6:                 # a write is answered by its echo
        i = 2
        while i < 6:
            if rx[i] != req[i]:
                return BAD
            i += 1
    elif rx[2] != want - 5:         # the byte count
        return BAD
    return OK


class _Unit:
    """What an input and an output share: the register and the bus's bookkeeping."""

    urgent = 0                      # an output's fail-safe value waits to be written

    def __init__(self, ch):
        self.name = ch.name
        self.units = ch.units
        self.slave = ch.slave
        self.reg = ch.register
        self.period_ms = ch.period_ms
        self.timeout_ms = ch.timeout_ms
        s = ch.scale
        self.neg = 1 if s < 0 else 0
        self._g = Gain(abs(s) * 1000)           # raw -> milli-units
        self._inv = Gain(1 / (abs(s) * 1000))   # milli-units -> raw
        self.off = to_fixed(ch.offset)
        self.signed = 1 if ch.type in ("int16", "int32") else 0
        self.status = WAITING
        self.exc = 0                # the last exception code
        self.errors = 0
        self.last = 0               # ticks_ms of the last request
        self.fresh = 1              # never requested yet


class Register(_Unit, Reading):
    """One register (or two, for a 32-bit type) read into a value: the input a loop reads
    (read and ok: devices.Reading's)."""

    def __init__(self, ch):
        super().__init__(ch)
        self.kind = "modbus_in"
        self.fn = ch.function
        self.count = 2 if ch.type in ("int32", "uint32") else 1
        self.low_first = 1 if ch.word_order == "low_first" else 0
        self.want = 5 + 2 * self.count
        self.vmin = to_fixed(ch.valid[0])
        self.vmax = to_fixed(ch.valid[1])
        self.stale_ms = ch.stale_ms
        self.value = 0              # milli-units
        self.raw = 0
        self.t_ms = 0
        self.good = 0

    def state(self):
        d = {"value": self.value / 1000, "status": STATUS[self.status], "raw": self.raw,
             "age_ms": time.ticks_diff(time.ticks_ms(), self.t_ms) if self.good else None,
             "errors": self.errors}
        if self.status == EXCEPTION:
            d["exception"] = self.exc
        return d

    def due(self, now):
        return self.fresh or time.ticks_diff(now, self.last) >= self.period_ms

    def frame(self, buf):
        request(buf, self.slave, self.fn, self.reg, self.count)

    def done(self, st, rx, now):
        if st != OK:
            self.good = 0
            self.status = st
            self.errors += 1
            if st == EXCEPTION:
                self.exc = rx[2]
            return
        hi = (rx[3] << 8) | rx[4]
        if self.count == 1:
            raw = hi - 0x10000 if self.signed and hi & 0x8000 else hi
        else:
            lo = (rx[5] << 8) | rx[6]
            if self.low_first:
                hi, lo = lo, hi
            if self.signed and hi & 0x8000:
                hi -= 0x10000
            # beyond +-2**30 (a small int on ESP32): saturated, then out of the valid range
            raw = (0x3FFFFFFF if hi >= 0x4000 else -0x40000000 if hi < -0x4000
                   else (hi << 16) | lo)
        self.raw = raw
        v = self._g.mul(raw)
        self.value = clamp(sat_add(-v if self.neg else v, self.off), VAL_MIN, VAL_MAX)
        self.t_ms = now
        self.good = 1
        self.status = OK


class Holding(_Unit):
    """A holding register written from an output (function 6): the output a loop drives."""

    def __init__(self, ch):
        super().__init__(ch)
        self.kind = "modbus_out"
        self.want = 8
        self.lo = to_fixed(ch.range[0])
        self.hi = to_fixed(ch.range[1])
        self.failsafe = to_fixed(ch.failsafe)
        self.value = self.failsafe
        self.sent = None            # the register value the slave has (None: unknown)
        self.urgent = 1             # the fail-safe value, at the next request
        self.word = 0

    def write(self, u):
        # tick-safe: only stored; the bus writes it (the fail-safe value first)
        u = self.lo if u < self.lo else (self.hi if u > self.hi else u)
        if u == self.failsafe and u != self.value:
            self.urgent = 1
        self.value = u

    def safe(self):
        self.value = self.failsafe
        self.urgent = 1

    def state(self):
        return {"value": self.value / 1000, "status": STATUS[self.status], "raw": self.sent,
                "errors": self.errors}

    def _raw(self):
        # the register value for self.value, within the type's range
        v = self._inv.mul(self.value - self.off)
        v = -v if self.neg else v
        if self.signed:
            v = -32768 if v < -32768 else (32767 if v > 32767 else v)
        else:
            v = 0 if v < 0 else (65535 if v > 65535 else v)
        return v & 0xFFFF

    def due(self, now):
        return (self.fresh or self._raw() != self.sent
                or time.ticks_diff(now, self.last) >= self.period_ms)

    def frame(self, buf):
        self.urgent = 0
        self.word = self._raw()
        request(buf, self.slave, 6, self.reg, self.word)

    def done(self, st, rx, now):
        if st != OK:
            self.status = st
            self.errors += 1
            self.sent = None        # unknown: written again at the next turn
            if st == EXCEPTION:
                self.exc = rx[2]
            return
        self.sent = self.word
        self.status = OK


class Bus:
    """The registers on one UART: one request at a time, in turn (round robin), the
    fail-safe writes first; 3.5 characters of silence between frames."""

    def __init__(self, ch, board):
        self.uart = board.uart(ch.uart, ch.tx, ch.rx, ch.baud, ch.parity, ch.stop)
        self.de = None if ch.de is None else board.digital_out(ch.de, 0)
        bits = 10 + (0 if ch.parity == "none" else 1) + (ch.stop - 1)
        char_us = (bits * 1000000 + ch.baud - 1) // ch.baud
        gap_us = 1750 if ch.baud > 19200 else (35 * char_us + 9) // 10
        self.gap_ms = (gap_us + 999) // 1000
        self.units = []
        self.req = bytearray(8)
        self.rx = bytearray(_RX)
        self.tmp = bytearray(_RX)
        self.cur = None             # the unit whose answer is awaited
        self.n = 0                  # bytes of it so far
        self.t0 = 0
        self.k = 0                  # round robin: the next unit to look at
        self.quiet = time.ticks_ms()    # when the line last went quiet

    def add(self, u):
        self.units.append(u)

    def step(self, now):
        if self.cur is not None:
            self._poll(now)
        elif time.ticks_diff(now, self.quiet) > self.gap_ms:
            u = self._next(now)
            if u is not None:
                self._send(u, now)

    def _next(self, now):
        for u in self.units:
            if u.urgent:
                return u
        n = len(self.units)
        i = 0
        while i < n:
            u = self.units[(self.k + i) % n]
            if u.due(now):
                self.k = (self.k + i + 1) % n
                return u
            i += 1
        return None

    def _send(self, u, now):
        a = self.uart.any()         # a late answer to an earlier request: dropped
        while a:
            self.uart.readinto(self.tmp, a if a < _RX else _RX)
            a = self.uart.any()
        u.frame(self.req)
        u.last = now
        u.fresh = 0
        if self.de is not None:
            self.de.write(1)
        self.uart.write(self.req)
        if self.de is not None:
            self.uart.flush()       # the 8 bytes out (88 bit times), then listen
            self.de.write(0)
        self.cur = u
        self.n = 0
        self.t0 = now

    def _poll(self, now):
        u = self.cur
        a = self.uart.any()
        while a and self.n < _RX:
            r = _RX - self.n
            k = self.uart.readinto(self.tmp, a if a < r else r) or 0
            i = 0
            while i < k:
                self.rx[self.n] = self.tmp[i]
                self.n += 1
                i += 1
            a = self.uart.any() if k else 0
        st = answer(self.rx, self.n, self.req, u.want)
        if st < 0:
            if time.ticks_diff(now, self.t0) <= u.timeout_ms:
                return
            st = TIMEOUT if self.n == 0 else BAD
        self.cur = None
        self.quiet = now
        u.done(st, self.rx, now)

    def prime(self):
        """At boot, before the loops start: every output's fail-safe value written and every
        register read once, each waited for (at most its timeout_ms)."""
        for u in self.units:
            time.sleep_ms(self.gap_ms + 1)
            self._send(u, time.ticks_ms())
            while self.cur is not None:
                time.sleep_ms(1)
                self._poll(time.ticks_ms())
        self.quiet = time.ticks_ms()

    def recover(self, now):
        # a step raised (devices.py counted it): the request is dropped, the bus goes on
        self.cur = None
        self.quiet = now


def make(devices, ch):
    """The channel for config channel ch (devices.py): its UART's bus, made once."""
    key = ("uart", ch.uart)
    bus = devices.buses.get(key)
    if bus is None:
        bus = devices.buses[key] = Bus(ch, devices.board)
        devices.add_stepper(bus)
        devices.want_pass_us(20000)     # a step every 20 ms: an answer is soon collected
    u = Holding(ch) if ch.kind == "modbus_out" else Register(ch)
    bus.add(u)
    return u
