# The protocol on the serial console (docs/protocol.md, "Serial"): serve() reads the
# console in the main thread (the REPL calls it through node.serve()), hands each whole frame
# to the node's service over SerialPort's one-slot inbox, and gives the console back to a
# person only when the person asks for it: Enter on a typed line, Ctrl-C twice (or CR
# Ctrl-C, what mpremote and ampy send), Ctrl-D. Line noise, stray bytes, oversize or
# undecodable frames are dropped and counted; they never end the session, so no protocol
# byte ever reaches the REPL as code.
import time

from . import proto as P

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_QUIET_MS = const(50)       # input after a pause this long may be a person (or a tool) typing
_TYPED_MAX = const(256)     # a longer typed "line" is not a person's
_TYPED_MIN = const(2)       # nor a shorter one (a stray byte and a CR)
_READY_MS = const(100)      # serve() says it runs (00 00 00) this often ...
_READY_N = const(20)        # ... this many times, until the host's first frame
_READY = b"\x00\x00\x00"    # never printed by the REPL: the host knows serve() has started
_BLOCK = const(7)           # a chunk of this length is a serfec block, never a frame
_END = b"\x00\x02\x02\x02" * 6 + b"\x00"   # serve() has ended (6 copies, for a noisy line)


class SerialPort:
    """The session on the serial console, while serve() runs (docs/protocol.md, "Serial").

    Two owners, one field each: serve() (main thread) puts a received frame, still COBS-
    encoded, in `inbox` when it is empty, counts the chunks it dropped (`dropped`) and sets
    `closing`; the service (soft context) takes the inbox, answers on the console, and sets
    `heard`, `session_ended` and `closed`. Nothing else is shared."""

    def __init__(self, out):
        self.out = out
        self.inbox = None                # main -> service: one frame (bytes), None: taken
        self.closing = False             # main: end the session, stop writing
        self.dropped = 0                 # main: oversize chunks dropped before the inbox
        self.closed = False              # service: done, the port is gone
        self.session_ended = False       # service: the host said BYE
        self.heard = time.ticks_ms()     # service: the last authentic frame here
        self.plain = False               # main: the inbox frame is decoded (came in blocks)
        self.fec = False                 # main: the host sends in blocks: answer in blocks
        self._dropped_seen = 0           # service: how many of `dropped` are counted
        self._rx_type = 0                # service: TYPE of the frame being received
        self._buf = bytearray(2 * P.MAX_FRAME + 4)
        self._fbuf = None                # a round of blocks (serfec), made with `fec`
        self._blk = None
        self._fid = 0

    def use_fec(self):
        # main thread, before it sets `fec`: the service's buffers for sending in blocks
        from .serfec import round_size
        self._fbuf = bytearray(round_size(P.MAX_FRAME))
        self._blk = bytearray(6)
        self.fec = True

    def poll(self, ep):
        d = self.dropped - self._dropped_seen
        if d:
            self._dropped_seen += d
            ep.counters[P.C_BAD_FRAME] += d
        if self.closing:
            if not self.closed:
                # The session is not ended: it waits (sending nothing) for the next serve(),
                # which takes it over, so a host that enters again goes on where it was
                # (exactly once included); else it expires as any idle session does.
                if self in ep.ports:
                    ep.ports.remove(self)
                self.closed = True
            return
        f = self.inbox
        if f is None:
            return
        plain = self.plain
        self.inbox = None
        if plain:
            data = f
        else:
            try:
                data = P.cobs_decode(f)
            except P.ProtoError:
                ep.counters[P.C_BAD_FRAME] += 1
                return
        self._rx_type = data[1] if len(data) > 1 else 0
        ep.receive(self, None, data)
        self._rx_type = 0

    def send(self, frame, addr):
        if self.closing:
            return                       # a person has the console: nothing more on it
        if self.fec:
            from .serfec import encode_round, ROUNDS
            b = self._fbuf
            o = encode_round(frame, len(frame), b, self._fid, self._blk)
            self._fid = (self._fid + 1) & 3
            m = memoryview(b)[:o]
            for _ in range(ROUNDS):
                self.out.write(m)
            return
        b = self._buf
        b[0] = 0
        o = P.cobs_encode(frame, len(frame), b, 1)
        b[o] = 0
        self.out.write(memoryview(b)[:o + 1])

    def ended(self, s):
        # Only the host's BYE ends serve(). A session that expired (no authentic frame for
        # the endpoint's idle time, e.g. on a noisy line) does not: the host says HELLO again.
        if self._rx_type == P.BYE:
            self.session_ended = True


class _Console:
    """Is a person (or a tool) typing? Input that starts after a pause (_QUIET_MS) or right
    after a 00, with no 00 in it, is watched as typing: printable characters make a line (backspace
    edits it), and the session ends on Enter after a line of at least _TYPED_MIN characters
    followed by a pause, or at once on two of Ctrl-C/Ctrl-D in a row or on CR Ctrl-C
    (mpremote's and ampy's next bytes then go to the REPL). Anything else (a 00, another
    control character, more input right after Enter) means it was not typing: line noise or
    a frame's bytes. A single stray byte can never end the session."""

    def __init__(self):
        self.on = False
        self.line = bytearray()
        self.cr = False
        self.ctrl_c = 0
        self.ready = False               # Enter or Ctrl-D seen: ends after a pause
        self.why = None

    def start(self):
        if not self.on:
            self.on = True
            self.line = bytearray()
            self.cr = False
            self.ctrl_c = 0
            self.ready = False

    def drop(self):
        self.on = False
        self.ready = False

    def feed(self, c):
        """True when the session must end now (Ctrl-C)."""
        if not self.on:
            return False
        if self.ready and c != 10:       # Enter, then more at once: a paste, or noise
            self.drop()
            return False
        cr = self.cr
        ctrl = self.ctrl_c
        self.cr = False
        self.ctrl_c = 0                  # Ctrl-C/Ctrl-D count only twice in a row
        if 32 <= c < 127:
            if len(self.line) >= _TYPED_MAX:
                self.drop()
            else:
                self.line.append(c)
            return False
        if c == 8 or c == 127:
            if self.line:
                self.line.pop()
            return False
        if c == 13 or c == 10:
            if len(self.line) >= _TYPED_MIN:
                self.ready = True
                self.why = "console input"
            self.cr = True
            return False
        if c == 3 or c == 4:
            if (cr and c == 3) or ctrl:
                self.line = bytearray()  # the line is dropped, as at the REPL
                self.why = "Ctrl-C" if c == 3 else "Ctrl-D"
                return True
            self.ctrl_c = 1
            return False
        self.drop()
        return False


def serve(ep, node, idle_ms=2000):
    """Run the protocol on the serial console until the host says BYE, a person asks for
    the console (Enter on a typed line, Ctrl-C or Ctrl-D twice, CR Ctrl-C: see _Console),
    or the line has been silent and no valid host frame came for idle_ms. The control loops keep
    running meanwhile. Called by the host from the REPL (node.serve()). Returns (why it
    ended, the line typed if it was ended by Enter).

    This loop (main thread) only reads the console: each chunk between two 00 bytes goes
    to the node's service (soft context), which decodes it, owns the session and writes
    every answer. A chunk longer than a frame is dropped (counted as a bad frame); a chunk
    of serfec.CHUNK bytes is a block of a frame sent with error correction (serfec), and
    the port then answers in blocks too. The session outlives serve(): the next serve()
    takes it over (_adopt), so a host that enters again goes on where it was."""
    import sys
    import select
    import micropython

    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    global _last
    port = SerialPort(out)
    con = _Console()
    node.soft_call(_adopt, ep, port, _last)
    _last = port
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    one = bytearray(1)
    buf = bytearray(P.MAX_FRAME + 2)     # the chunk since the last 00 (COBS adds one byte)
    n = 0
    skip = True                          # drop this chunk up to the next 00 (too long) ...
    lead = True                          # ... or what came before the first 00: never a
                                         # frame (the other copies of node.serve() the
                                         # host typed), not counted
    last = time.ticks_ms()               # the last input byte
    readies = 0
    ready_at = last
    asm = None                           # serfec.Assembler, once a block came
    after0 = False                       # the last byte was a 00
    why = "?"
    micropython.kbd_intr(-1)             # Ctrl-C is data here: _Console handles it
    out.write(_READY)
    try:
        while True:
            now = time.ticks_ms()
            if not poll.poll(0):
                quiet = time.ticks_diff(now, last)
                if con.ready and quiet >= _QUIET_MS:
                    why = con.why
                    break
                if port.session_ended and quiet >= _QUIET_MS:
                    why = "host said bye"  # and what it sent after (the BYE's copies) is read
                    break
                if quiet > idle_ms and time.ticks_diff(now, port.heard) > idle_ms:
                    why = "no host for %d ms" % idle_ms
                    break
                if readies < _READY_N and time.ticks_diff(now, ready_at) >= _READY_MS:
                    readies += 1
                    ready_at = now
                    out.write(_READY)
                time.sleep_ms(1)         # the loops run meanwhile (ESP32: other tasks too)
                continue
            inp.readinto(one)
            c = one[0]
            gap = time.ticks_diff(now, last) >= _QUIET_MS
            last = now
            if c == 0:
                con.drop()
                # typing may start right after a frame too (a host that just vanished),
                # not after a block (a frame comes as many, back to back)
                after0 = n >= 9 and not skip and not port.fec
                if skip:
                    if not lead:
                        port.dropped += 1
                    lead = False
                elif n == _BLOCK:        # never a frame: a block of one (serfec)
                    if asm is None:
                        from .serfec import Assembler
                        asm = Assembler()
                    f = asm.block(buf, n)
                    if f is not None:
                        if not port.fec:
                            port.use_fec()
                        _hand(node, port, f, True)
                        readies = _READY_N
                elif n:
                    readies = _READY_N   # the host is here: no more ready marks
                    _hand(node, port, bytes(memoryview(buf)[:n]), False)
                n = 0
                skip = False
                continue
            if n < len(buf):
                buf[n] = c
                n += 1
            else:
                skip = True
            if gap or after0:
                con.start()
            after0 = False
            if con.feed(c):
                why = con.why
                break
    finally:
        micropython.kbd_intr(3)
        _close(node, port)
        out.write(_END)
    line = bytes(con.line) if why == "console input" else b""
    if line:
        out.write(line + b"\r\n")        # what was typed, as the REPL would have echoed it
    return why, line.decode()


_last = None                # main: the last serve()'s port, whose sessions wait for the next


def _adopt(ep, port, old):
    # soft context: the new port, and the sessions the last serve() left
    ep.add_port(port)
    if old is not None:
        for s in ep.sessions:
            if s.port is old:
                s.port = port


def _hand(node, port, f, plain):
    # One frame to the service (it takes one at a time).
    while port.inbox is not None:
        time.sleep_ms(1)
    port.plain = plain
    port.inbox = f
    node.wake_service()


def _close(node, port):
    # Ask the service to end the session and drop the port; wait until it has.
    if port.closed:
        return
    port.closing = True
    node.wake_service()
    while not port.closed:
        time.sleep_ms(1)
