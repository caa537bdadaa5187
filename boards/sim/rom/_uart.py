# The sim's machine.UART and the Modbus RTU slaves on its lines.
#
# machine.UART on ESP32 (MicroPython's ports/esp32/machine_uart.c over ESP-IDF's UART
# driver): UART(id, baudrate=115200, bits=8, parity=None, stop=1, *, tx, rx, rts, cts,
# txbuf=256, rxbuf=256, timeout=0, timeout_char=0, invert, flow); one object per id (a
# second UART(id, ...) re-initialises it and discards what was received); parity None,
# 0 (even) or 1 (odd); any() -> the bytes in the RX ring buffer; read([n]) and
# readinto(buf[, n]) with timeout 0 return at once what is there, None when nothing is;
# write(buf) copies into the TX ring buffer and returns while the bytes go out; txdone();
# flush() waits until the last bit is out. What the model keeps of the wire:
# - a character takes 1 start + 8 data (+ parity) + stop bits at the baud rate; bytes
#   leave one after another from write() on, and arrive one by one at their time (any()
#   counts only those that have fully arrived);
# - the RX ring buffer holds rxbuf bytes (ESP-IDF: more than the 128-byte FIFO); what
#   comes while it is full is lost;
# - both ends must use the same baud rate, parity and stop bits, or the slave hears noise
#   and answers nothing;
# - RS-485 half duplex, when the bench wiring names the master's driver-enable pin ("de"):
#   a request sent while DE is low never reaches the line, and an answer that arrives while
#   DE is still high is lost (DE is looked at whenever the UART is used: a driver must drop
#   it as soon as its request is out, before the slave can answer).
#
# The Modbus RTU slave (Modbus over Serial Line V1.02; application protocol V1.1b3): a
# frame ends after 3.5 characters of silence (1.75 ms above 19200 baud); a frame with a
# bad CRC, for another address or broadcast (0) gets no answer; functions 3 (read holding
# registers), 4 (read input registers) and 6 (write single register), exceptions 1
# (illegal function), 2 (illegal data address), 3 (illegal data value: a count outside
# 1..125); the answer starts latency_ms after the request (at least 3.5 characters).
# Input registers read plant outputs, holding registers may drive plant inputs.
#
# Bench wiring (one slave per entry; entries with the same tx/rx share the line):
#   {"kind": "modbus", "tx": 17, "rx": 16, "de": 4 (optional), "baud": 9600,
#    "parity": "even", "stop": 1, "slave": 1, "latency_ms": 5,
#    "registers": [{"type": "input", "address": 0, "signal": "h2", "scale": 0.01,
#                   "offset": 0, "format": "int16"},
#                  {"type": "holding", "address": 10, "drives": "pump", "scale": 0.01,
#                   "value": 0}],
#    "faults": [{"at_s": 100, "fault": "silent"|"crc"|"exception"|"none", "code": 4}]}
# (tx and rx are the node's pins: tx carries the requests to the slave.) An input
# register's value is round((signal - offset) / scale) in its format (int16, uint16, or
# int32/uint32 over two registers, high word first); a holding register drives its plant
# input with offset + scale x value.

_FAULTS = ("silent", "crc", "exception", "none")


def crc16(data):
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return c


def _with_crc(b):
    c = crc16(b)
    return bytes(b) + bytes((c & 0xFF, c >> 8))


def _char_bits(parity, stop):
    return 10 + (0 if parity is None else 1) + (stop - 1)


class Slave:
    def __init__(self, w, bench, where):
        self.bench = bench
        self.where = where
        self.addr = int(w["slave"])
        if not 1 <= self.addr <= 247:
            raise ValueError("bench wiring: %s: slave must be 1..247, not %r" % (where, w["slave"]))
        self.latency_us = int(float(w.get("latency_ms", 5)) * 1000)
        self.input = {}             # address -> (signal, scale, offset, format, word)
        self.holding = {}           # address -> int value
        self.drives = []            # (address, plant input, scale, offset)
        self.holding_src = {}       # address -> a plant signal read into it, as input's
        for i, r in enumerate(w.get("registers", [])):
            at = "%s registers[%d]" % (where, i)
            t = r.get("type")
            a = int(r["address"])
            fmt = r.get("format", "int16")
            if fmt not in ("int16", "uint16", "int32", "uint32"):
                raise ValueError("bench wiring: %s: format %r (int16, uint16, int32, uint32)"
                                 % (at, fmt))
            words = 2 if fmt in ("int32", "uint32") else 1
            scale = float(r.get("scale", 1.0))
            off = float(r.get("offset", 0.0))
            if scale == 0:
                raise ValueError("bench wiring: %s: scale must not be 0" % at)
            if t == "input" or (t == "holding" and "signal" in r):
                for k in range(words):
                    (self.input if t == "input" else self.holding_src)[a + k] = (
                        r["signal"], scale, off, fmt, k)
                if t == "holding":
                    for k in range(words):
                        self.holding[a + k] = 0
            elif t == "holding":
                self.holding[a] = int(r.get("value", 0)) & 0xFFFF
                if "drives" in r:
                    self.drives.append((a, r["drives"], scale, off, fmt == "int16"))
            else:
                raise ValueError("bench wiring: %s: type must be input or holding, not %r"
                                 % (at, t))
        self.faults = sorted([(float(f["at_s"]), f["fault"], int(f.get("code", 4)))
                              for f in w.get("faults", [])])
        for _, f, _ in self.faults:
            if f not in _FAULTS:
                raise ValueError("bench wiring: %s: fault %r (%s)" % (where, f, ", ".join(_FAULTS)))
        self.requests = 0           # frames addressed to it (what the tests look at)
        self.writes = []            # (now_us, address, value) of every good write

    def fault(self, now_us):
        f, code = "none", 0
        for at, what, c in self.faults:
            if now_us >= at * 1000000:
                f, code = what, c
        return f, code

    def _word(self, src, now_us):
        sig, scale, off, fmt, k = src
        v = int(round((self.bench.measure(sig) - off) / scale))
        lo, hi = {"int16": (-32768, 32767), "uint16": (0, 65535),
                  "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1)}[fmt]
        v = lo if v < lo else (hi if v > hi else v)
        if fmt in ("int32", "uint32"):
            v &= 0xFFFFFFFF
            return (v >> 16) if k == 0 else v & 0xFFFF
        return v & 0xFFFF

    def handle(self, frame, now_us):
        """The answer to a whole, good frame addressed here (bytes), or None."""
        self.requests += 1
        f, code = self.fault(now_us)
        if f == "silent":
            return None
        fn = frame[1]
        if f == "exception":
            ans = bytes((self.addr, fn | 0x80, code))
        else:
            ans = self._answer(fn, frame, now_us)
        ans = _with_crc(ans)
        if f == "crc":
            ans = ans[:-1] + bytes(((ans[-1] ^ 0x5A) & 0xFF,))
        return ans

    def _answer(self, fn, frame, now_us):
        def exc(code):
            return bytes((self.addr, fn | 0x80, code))
        if fn not in (3, 4, 6) or len(frame) != 6:
            return exc(1)
        reg = (frame[2] << 8) | frame[3]
        word = (frame[4] << 8) | frame[5]
        if fn == 6:
            if reg not in self.holding:
                return exc(2)
            self.holding[reg] = word
            self.writes.append((now_us, reg, word))
            return bytes(frame[:6])
        if not 1 <= word <= 125:
            return exc(3)
        out = bytearray((self.addr, fn, 2 * word))
        for a in range(reg, reg + word):
            if fn == 4:
                if a not in self.input:
                    return exc(2)
                v = self._word(self.input[a], now_us)
            else:
                if a not in self.holding:
                    return exc(2)
                src = self.holding_src.get(a)
                v = self.holding[a] if src is None else self._word(src, now_us)
            out += bytes((v >> 8, v & 0xFF))
        return bytes(out)

    def drive(self, plant):
        for a, sig, scale, off, signed in self.drives:
            v = self.holding[a]
            if signed and v & 0x8000:
                v -= 0x10000
            plant.set_input(sig, off + scale * v)


class Line:
    """The slaves on one pair of the node's pins (tx, rx), their settings, and the frames
    on the wire."""

    def __init__(self, w, where):
        self.tx, self.rx = int(w["tx"]), int(w["rx"])
        self.de = w.get("de")
        self.baud = int(w.get("baud", 9600))
        p = w.get("parity", "even")
        if p not in ("none", "even", "odd"):
            raise ValueError("bench wiring: %s: parity %r (none, even, odd)" % (where, p))
        self.parity = None if p == "none" else (0 if p == "even" else 1)
        self.stop = int(w.get("stop", 2 if p == "none" else 1))
        self.slaves = []
        self.where = where

    def add(self, w, bench, where):
        for k, want in (("baud", self.baud), ("stop", self.stop)):
            if k in w and int(w[k]) != want:
                raise ValueError("bench wiring: %s: %s differs from %s's on the same line"
                                 % (where, k, self.where))
        s = Slave(w, bench, where)
        if s.addr in [o.addr for o in self.slaves]:
            raise ValueError("bench wiring: %s: slave %d is on this line already" % (where, s.addr))
        self.slaves.append(s)

    def char_us(self):
        return _char_bits(self.parity, self.stop) * 1000000 / self.baud

    def gap_us(self):
        return 1750 if self.baud > 19200 else 3.5 * self.char_us()

    def answer(self, frame, now_us):
        """The answering slave's bytes for a whole frame heard on the line, or None."""
        if len(frame) < 4 or crc16(frame) != 0:
            return None
        for s in self.slaves:
            if s.addr == frame[0]:
                a = s.handle(bytes(frame[:-2]), now_us)
                return None if a is None else (a, s.latency_us)
        return None

    def drive(self, plant):
        for s in self.slaves:
            s.drive(plant)


def wire(bench, w, where):
    """Add a wiring entry's slave to bench.modbus ((tx, rx) -> Line)."""
    for k in ("tx", "rx", "slave"):
        if not isinstance(w.get(k), int):
            raise ValueError("bench wiring: %s (modbus) needs %s (an integer)" % (where, k))
    key = (w["tx"], w["rx"])
    line = bench.modbus.get(key)
    if line is None:
        line = bench.modbus[key] = Line(w, where)
    line.add(w, bench, where)
    return line


def make_class(bench, clock, mcu, pin_ok):
    """machine.UART of a board with this bench; pin_ok(n, output) checks a pin."""
    n_uarts = 2 if mcu == "ESP32-C3" else 3
    objs = {}

    class UART:
        INV_TX = 1 << 22            # ESP-IDF's UART_SIGNAL_*_INV
        INV_RX = 1 << 19
        INV_RTS = 1 << 23
        INV_CTS = 1 << 20
        RTS = 1
        CTS = 2

        def __new__(cls, id, *args, **kw):
            if not isinstance(id, int) or not 0 <= id < n_uarts:
                raise ValueError("UART(%s) does not exist" % (id,))
            if id == 0:
                # the REPL's console (and cyphy's link to the node) in the sim
                raise ValueError("UART(0) is the REPL's console")
            o = objs.get(id)
            if o is None:
                o = objs[id] = object.__new__(cls)
                o.id = id
                o._fresh()
            return o

        def __init__(self, id, *args, **kw):
            self.init(*args, **kw)

        def _fresh(self):
            self.baud, self.bits, self.parity, self.stop = 115200, 8, None, 1
            self.tx_pin, self.rx_pin = (10, 9) if self.id == 1 else (17, 16)
            self.txbuf, self.rxbuf = 256, 256
            self.timeout = 0
            self.line = None
            self.buf = bytearray()      # the RX ring buffer
            self.incoming = []          # [arrival_us, byte] on their way to it
            self.tx_end = 0             # now_us when the last byte written is out
            self.frame = bytearray()    # what the slaves are hearing (a request)
            self.frame_end = 0
            self.busy_until = 0         # a slave's answer is on the wire until then
            self.lost = 0               # bytes lost (RX buffer full, DE high)

        def init(self, baudrate=0, bits=0, parity=-1, stop=0, *, tx=None, rx=None, rts=None,
                 cts=None, txbuf=-1, rxbuf=-1, timeout=-1, timeout_char=-1, invert=-1,
                 flow=-1):
            if baudrate:
                if not 0 < baudrate <= 5000000:
                    raise ValueError("invalid baudrate")
                self.baud = baudrate
            if bits:
                if bits not in (5, 6, 7, 8):
                    raise ValueError("invalid data bits")
                self.bits = bits
            if parity != -1:
                self.parity = None if parity is None else (1 if parity & 1 else 0)
            if stop:
                if stop not in (1, 2):
                    raise ValueError("invalid stop bits")
                self.stop = stop
            if tx is not None:
                self.tx_pin = tx if isinstance(tx, int) else tx.id
            if rx is not None:
                self.rx_pin = rx if isinstance(rx, int) else rx.id
            pin_ok(self.tx_pin, True)
            pin_ok(self.rx_pin, False)
            if rxbuf != -1:
                if rxbuf <= 128:
                    raise OSError("ESP_ERR_INVALID_ARG: rxbuf must exceed the 128-byte FIFO")
                self.rxbuf = rxbuf
            if txbuf != -1:
                self.txbuf = txbuf
            if timeout != -1:
                self.timeout = timeout
            self.line = bench.modbus.get((self.tx_pin, self.rx_pin))
            self.buf = bytearray()      # uart_flush_input: what came before is dropped
            self.incoming = []

        def deinit(self):
            self.line = None

        def _char_us(self):
            return _char_bits(self.parity, self.stop) * 1000000 / self.baud

        def _de_high(self):
            ln = self.line
            return ln is not None and ln.de is not None and bench.out_num[ln.de] != 0

        def _catch_up(self):
            # what happened on the wire up to now: a request heard whole, answers arriving
            now = clock.now_us()
            ln = self.line
            if ln is not None and self.frame and now >= self.frame_end + ln.gap_us():
                self._heard(ln)
            if not self.incoming:
                return
            de = self._de_high()
            k = 0
            for t, b in self.incoming:
                if t > now:
                    break
                k += 1
                if de or len(self.buf) >= self.rxbuf:
                    self.lost += 1
                else:
                    self.buf.append(b)
            if k:
                self.incoming = self.incoming[k:]

        def _heard(self, ln):
            frame = bytes(self.frame)
            end = self.frame_end
            self.frame = bytearray()
            same = (self.baud == ln.baud and self.parity == ln.parity and self.stop == ln.stop
                    and self.bits == 8)
            got = ln.answer(frame, end) if same else None
            if got is None:
                return
            ans, latency = got
            c = ln.char_us()
            t = end + max(latency, ln.gap_us())
            for i, b in enumerate(ans):
                self.incoming.append([int(t + (i + 1) * c), b])
            self.busy_until = int(t + len(ans) * c)

        def any(self):
            self._catch_up()
            return len(self.buf)

        def read(self, n=-1):
            self._catch_up()
            if not self.buf:
                return None
            if n is None or n < 0 or n > len(self.buf):
                n = len(self.buf)
            out = bytes(self.buf[:n])
            self.buf = self.buf[n:]
            return out

        def readinto(self, buf, n=-1):
            self._catch_up()
            if not self.buf:
                return None
            n = len(buf) if n is None or n < 0 else min(n, len(buf))
            n = min(n, len(self.buf))
            for i in range(n):
                buf[i] = self.buf[i]
            self.buf = self.buf[n:]
            return n

        def readline(self):
            self._catch_up()
            i = self.buf.find(b"\n")
            return self.read(len(self.buf) if i < 0 else i + 1)

        def write(self, data):
            if isinstance(data, str):
                data = data.encode()
            self._catch_up()
            now = clock.now_us()
            c = self._char_us()
            start = max(now, self.tx_end)
            # more than the TX ring buffer and the FIFO hold: write() waits for room
            room = self.txbuf + 128 - int((start - now) / c)
            if len(data) > room:
                clock.busy_us(int((len(data) - room) * c) + 1)
            ln = self.line
            if ln is not None and (ln.de is None or self._de_high()):
                if self.incoming and start < self.busy_until:
                    self.incoming = []          # a collision: both frames garbled
                    self.frame = bytearray(b"\x00")
                elif self.frame and start >= self.frame_end + ln.gap_us():
                    self._heard(ln)             # the earlier request ended first
                self.frame += data
                self.frame_end = int(start + len(data) * c)
            self.tx_end = int(start + len(data) * c)
            return len(data)

        def txdone(self):
            return clock.now_us() >= self.tx_end

        def flush(self):
            left = self.tx_end - clock.now_us()
            if left > 0:
                clock.busy_us(left)

        def sendbreak(self):
            self.flush()
            clock.busy_us(int(13 * 1000000 / self.baud) + 1)

        def __repr__(self):
            return "UART(%d, baudrate=%d, bits=%d, parity=%s, stop=%d, tx=%d, rx=%d)" % (
                self.id, self.baud, self.bits,
                {None: "None", 0: "0", 1: "1"}[self.parity], self.stop, self.tx_pin,
                self.rx_pin)

    return UART
