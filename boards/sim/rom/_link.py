# The sim board's "UART": the byte link between this MicroPython process and
# its supervisor (host/cyphy/sim/supervisor.py), which owns the serial port (a PTY).
#
# Wire format, child -> supervisor (our stdout, fd 1):
#   plain bytes            console text; the supervisor turns every \n into \r\n,
#                          like ESP32's "cooked" stdout (print, sys.stdout.write).
#   00 T LL LL payload     a frame (LL = little-endian payload length):
#       'R' raw console bytes, sent as they are (REPL control output, sys.stdout.buffer)
#       'S' state: b'C' compiling (an interrupt char now is held for the code),
#           b'R' user code running (the interrupt char is SIGINT), b'I' idle
#       'K' interrupt char: one byte, or empty to disable (micropython.kbd_intr)
#       'L' leftover input: bytes this process read but never consumed (before 'B')
#       'B' reboot: b's' + mode byte (b'f' friendly / b'r' raw), b'h' (hard reset) or
#           b'd' (deep-sleep wake-up)
#       'T' console text containing NUL: cooked like plain text (a NUL would start a frame)
#       'E' event for the supervisor's record (text)
#       'Q' answer to a 'P' request (JSON object, with the request's "id")
#       'A' console input consumed: count (LE16) of bytes this process took from its input
#           since the last 'A', then b'\x01' if it now blocks waiting for more input, else
#           b'\x00'. Sent before any other output and before blocking, so the supervisor
#           always knows how full the node's receive buffer is (see "Console RX" below).
# Supervisor -> child (our stdin, fd 0): host bytes, with 00 escaped as 00 FF, and
#   00 T LL LL payload     a command, T an uppercase letter (commands a ROM does not know
#                          are skipped whole); the supervisor writes each one atomically:
#       'P' a request for the board's test equipment (JSON object with "id" and "op",
#           e.g. plant.state): served while this process reads its input (the REPL
#           waits, input(), sys.stdin) and, in real time, while user code sleeps; the
#           answer is a 'Q' frame. Never mixed into the console input.
#   00 + any other byte    two bytes ignored (reserved)
#
# Ctrl-C: running code can only be stopped by SIGINT, and this MicroPython build raises
# KeyboardInterrupt from inside the signal handler, wherever the process is, even in the
# middle of C code. So SIGINT must never reach the REPL's own code. The supervisor sends
# it only in state 'R', and first stops this process (SIGSTOP) and reads what it has
# written: if the 'I' frame is there, the code has ended and the byte is ordinary input.
# The 'I' frame is the first thing written when user code returns, by a loop that neither
# allocates nor reads, so an interrupt landing there is harmless.
# Console RX: ESP32's REPL UART puts received bytes into a 260-byte ring buffer
# (stdin_ringbuf, ports/esp32/mphalport.c; py/ringbuf.h keeps one slot free: 259 bytes)
# from its RX interrupt (ports/esp32/uart.c uart_irq_handler), and ringbuf_put() drops a
# byte when the buffer is full: no flow control. The supervisor models that buffer: it
# counts the bytes it has delivered here against the 'A' reports of what was consumed,
# and drops what arrives while the buffer is full and user code is not waiting for input.
import sys
import select

_ESC = 0
# state frames, built once: leave_user() must not allocate
_COMPILING = b"\x00S\x01\x00C"
_RUNNING = b"\x00S\x01\x00R"
_IDLE = b"\x00S\x01\x00I"
_MAX_FRAME = 4000  # pipe writes below PIPE_BUF (4096) are atomic: a frame is never torn
# the answer to a request that arrives before the board serves them (no id: the
# supervisor takes it for the oldest request it is waiting on)
_NOT_READY = b'\x00Q\x2d\x00{"ok": false, "error": "the node is booting"}'


def _unescape(raw, i, cmds):
    """Decode raw from the first escape at i; returns (bytes, how many raw bytes used).
    Whole commands are appended to cmds as (letter, payload)."""
    out = bytearray(raw[:i])
    j = i
    n = len(raw)
    while j < n:
        c = raw[j]
        if c != 0:
            out.append(c)
            j += 1
        elif j + 1 >= n:
            break  # escape split across reads: wait for its second byte
        elif raw[j + 1] == 0xFF:
            out.append(0)
            j += 2
        elif 65 <= raw[j + 1] <= 90:  # 'A'..'Z': a command with a payload
            if j + 4 > n:
                break
            end = j + 4 + (raw[j + 2] | raw[j + 3] << 8)
            if end > n:
                break  # the rest is on its way
            cmds.append((raw[j + 1], bytes(raw[j + 4 : end])))
            j = end
        else:
            j += 2  # reserved: ignored
    return out, j


class Link:
    def __init__(self, clock=None):
        self.clock = clock  # runs the board's soft timers while the link waits
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._tmp = bytearray(512)
        self._tmpv = memoryview(self._tmp)
        self._raw = bytearray()  # escaped bytes read from the pipe, not yet decoded
        self._q = bytearray()  # decoded console input, not yet consumed
        self._hdr = bytearray(4)
        # one frame, built in place: frames of console output allocate nothing
        self._fbuf = bytearray(4 + _MAX_FRAME)
        self._ackb = bytearray(b"\x00A\x03\x00\x00\x00\x00")
        self._consumed = 0  # console input bytes taken since the last 'A'
        self._waiting = False  # the last 'A' said "blocked for input"
        self._user = False  # user code runs (between enter_user and leave_user)
        self._cmds = []  # commands decoded from the input, not yet served
        # Test equipment (the supervisor's control socket): a bench board sets this to a
        # function that takes a 'P' payload and writes the 'Q' answer (_gear.py).
        self.on_request = None

    # ---- output ----
    def _ack(self, waiting):
        """Tell the supervisor what was consumed ('A'); allocation-free."""
        n = self._consumed
        if n < 0:
            n = 0
        elif n > 0xFFFF:
            n = 0xFFFF
        b = self._ackb
        b[4] = n & 0xFF
        b[5] = n >> 8
        b[6] = 1 if waiting else 0
        self._consumed -= n
        self._waiting = waiting
        self._out.write(b)

    def frame(self, kind, payload=b""):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._frame(kind, payload)
        finally:
            c.unlock()

    def _frame(self, kind, payload=b""):
        """One frame, written at once (never torn); allocates nothing when payload is
        a bytes-like object of at most _MAX_FRAME bytes."""
        if self._consumed > 0 or self._waiting:
            self._ack(False)
        n = len(payload)
        f = self._fbuf
        f[0] = _ESC
        f[1] = kind
        f[2] = n & 0xFF
        f[3] = n >> 8
        if n:
            f[4 : 4 + n] = payload  # a slice store on a bytearray allocates nothing (py/vm.c)
        self._out.write(f, 4 + n)

    def _frames(self, kind, data):
        if isinstance(data, str):
            data = data.encode()
        n = len(data)
        if n <= _MAX_FRAME:
            self.frame(kind, data)
            return n
        mv = memoryview(data)
        for i in range(0, n, _MAX_FRAME):
            self.frame(kind, mv[i : i + _MAX_FRAME])
        return n

    def write_raw(self, data):
        """Console bytes exactly as given (no newline translation); returns the count."""
        return self._frames(82, data)  # 'R'

    def write_text(self, data):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._write_text(data)
        finally:
            c.unlock()

    def _write_text(self, data):
        """Console text; newlines are cooked to \\r\\n on the way out (by the supervisor).
        Returns the byte count. Plain text (no NUL) of any size allocates nothing."""
        if self._consumed > 0 or self._waiting:
            self._ack(False)
        if ("\x00" in data) if isinstance(data, str) else (b"\x00" in data):
            return self._frames(84, data)  # 'T': a NUL would start a frame
        return self._out.write(data)  # the Unix port's stream writes it all (py/stream.c)

    def event(self, text):
        self.frame(69, text.encode())  # 'E'

    # ---- input ----
    def _fill(self, timeout_ms):
        """Read what the pipe holds into self._raw; False on timeout (-1: no timeout).

        While waiting, the board's soft timers run when due (see _clock.py)."""
        clock = self.clock
        end = -1
        if timeout_ms > 0:
            end = clock.ticks_add(clock.ticks_ms(), timeout_ms) if clock else -1
        raw0 = len(self._raw)
        q0 = len(self._q)
        while True:
            wait = timeout_ms
            if clock is not None:
                clock.service()
                if len(self._q) != q0 or len(self._raw) != raw0:
                    # a callback that slept took input from the pipe meanwhile (_gear.py
                    # wait_us queues it): it is here already, and poll() would wait for more
                    return True
                due = clock.due_in_us()
                if 0 <= due < 1000:
                    clock.sleep_us(due)  # sub-millisecond: poll() cannot wait that precisely
                    if self._poll.poll(0):
                        break            # input waiting: a 1 kHz timer must not starve it
                    if timeout_ms == 0:
                        return False
                    continue
                if clock.hardware is not None and not clock.virtual and (due < 0 or due > 20_000):
                    due = 20_000  # keep the plant moving while the node idles
                if due >= 0:
                    due_ms = due // 1000
                    if end >= 0:
                        left = clock.ticks_diff(end, clock.ticks_ms())
                        wait = left if left < due_ms else due_ms
                    elif wait < 0 or due_ms < wait:
                        wait = due_ms
            if self._consumed > 0 or (wait != 0 and self._user and not self._waiting):
                # what was read is gone from the buffer; about to block: the supervisor
                # may deliver freely (_fill runs only once the queue is empty)
                self._ack(wait != 0)
            if self._poll.poll(wait):
                break
            if clock is None or wait == timeout_ms or (end >= 0 and clock.ticks_diff(end, clock.ticks_ms()) <= 0):
                return False
        if self._waiting and self._user:
            self._ack(False)  # input came: user code is busy again until it next waits
        n = self._in.readinto(self._tmp)
        self._raw.extend(self._tmpv[:n])
        if n == 0:
            # Supervisor gone: nothing left to serve.
            raise SystemExit(3)
        return True

    def _decode(self):
        """Move escaped bytes from _raw to _q (a split escape waits for its second byte)."""
        raw = self._raw
        i = raw.find(b"\x00")
        if i < 0:
            out, j = raw, len(raw)
        else:
            cmds = self._cmds
            del cmds[:]  # an interrupted decode left nothing committed: start over
            out, j = _unescape(raw, i, cmds)
        # Commit with two statements and no jump between them: a KeyboardInterrupt can
        # only fire before (nothing moved) or after (everything moved), never halfway.
        self._q.extend(out)
        raw[:j] = b""
        if i >= 0:
            self._serve()

    def _serve(self):
        """Answer the decoded commands (requests for the test equipment)."""
        cmds = self._cmds
        while cmds:
            kind, payload = cmds.pop(0)
            if kind == 80:  # 'P'
                if self.on_request is None:
                    self._out.write(_NOT_READY)
                else:
                    self.on_request(payload)

    def _wait_input(self, timeout_ms):
        """True once decoded input is queued; False on timeout."""
        while not self._q:
            if self._raw:
                self._decode()
                if self._q:
                    break
            if not self._fill(timeout_ms):
                return False
            self._decode()
        return True

    def wait_input(self, timeout_ms):
        """True once input is queued, False after timeout_ms (-1: no limit); the board's
        timers run meanwhile."""
        return self._wait_input(timeout_ms)

    def available(self):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._available()
        finally:
            c.unlock()

    def _available(self):
        """Number of input bytes readable without blocking."""
        self._wait_input(0)
        return len(self._q)

    def read_byte(self, timeout_ms=-1):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._read_byte(timeout_ms)
        finally:
            c.unlock()

    def _read_byte(self, timeout_ms=-1):
        """Next console input byte, or -1 on timeout."""
        if not self._wait_input(timeout_ms):
            return -1
        c = self._q[0]
        self._q[0:1] = b""
        self._consumed += 1
        return c

    def read(self, n, timeout_ms=-1):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._read(n, timeout_ms)
        finally:
            c.unlock()

    def _read(self, n, timeout_ms=-1):
        """Up to n bytes; blocks for the first one (b'' on timeout)."""
        if not self._wait_input(timeout_ms):
            return b""
        r = bytes(self._q[:n])
        self._q[:n] = b""
        self._consumed += len(r)
        return r

    def readinto(self, buf, n):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._readinto(buf, n)
        finally:
            c.unlock()

    def _readinto(self, buf, n):
        """Exactly n bytes into buf (blocking), as a board's stdio read does."""
        got = 0
        q = self._q
        while got < n:
            self._wait_input(-1)
            k = len(q)
            if k > n - got:
                k = n - got
            buf[got : got + k] = q[:k]
            q[:k] = b""
            self._consumed += k
            got += k
        return got

    def take_plain(self, line):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._take_plain(line)
        finally:
            c.unlock()

    def _take_plain(self, line):
        """Append queued input up to the next control byte (<= Ctrl-E) to line."""
        q = self._q
        if not q:
            return
        end = len(q)
        for i in range(end):
            if q[i] <= 5:
                end = i
                break
        line.extend(q[:end])
        q[:end] = b""
        self._consumed += end

    def unread(self, data):
        c = self.clock
        c.hold += 1  # as a C function on the chip: no soft callback inside (_clock.py)
        try:
            return self._unread(data)
        finally:
            c.unlock()

    def _unread(self, data):
        """Put bytes taken from the input back in front of it."""
        self._q[0:0] = data
        self._consumed -= len(data)

    # ---- state ----
    def compiling(self):
        if self._consumed > 0 or self._waiting:
            self._ack(False)
        self._out.write(_COMPILING)

    def enter_user(self):
        if self._consumed > 0 or self._waiting:
            self._ack(False)
        self._user = True
        self._out.write(_RUNNING)

    def leave_user(self):
        """First thing after user code: say so. Allocation-free and retried, because a
        Ctrl-C may still land here (it is then simply ignored, as on ESP32)."""
        out = self._out
        frame = _IDLE
        while True:
            try:
                out.write(frame)
                self._user = False
                return
            except KeyboardInterrupt:
                pass

    def set_interrupt_char(self, c):
        self.frame(75, b"" if c < 0 else bytes((c & 0xFF,)))  # 'K'

    def reboot(self, kind):
        """Ask for a reset (b'sf'/b'sr' soft into friendly/raw REPL, b'h' hard) and hand
        back input read from the pipe but not consumed, so no typed byte is lost."""
        while self._fill(0):
            pass
        self._decode()
        leftover = bytes(self._q) + bytes(self._raw).replace(b"\x00\xff", b"\x00")
        mv = memoryview(leftover)
        for i in range(0, len(leftover), _MAX_FRAME):
            self.frame(76, mv[i : i + _MAX_FRAME])  # 'L'
        self.frame(66, kind)  # 'B'
