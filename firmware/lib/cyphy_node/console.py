# The protocol on the serial console (docs/protocol.md, "Serial"): serve() reads the
# console in the main thread (the REPL calls it through node.serve()), hands each whole frame
# to the node's service over SerialPort's one-slot inbox, and gives the console back to a
# person who types.
import time

from . import proto as P


class SerialPort:
    """The session on the serial console, while serve() runs (docs/protocol.md, "Serial").

    Two owners, one field each: serve() (main thread) puts a received frame, still COBS-
    encoded, in `inbox` when it is empty and sets `closing`; the service (soft context)
    takes the inbox, answers on the console, and sets `heard`, `session_ended` and
    `closed`. Nothing else is shared."""

    def __init__(self, out):
        self.out = out
        self.inbox = None                # main -> service: one frame (bytes), None: taken
        self.closing = False             # main: end the session, stop writing
        self.closed = False              # service: done, the port is gone
        self.session_ended = False       # service: the host said BYE (or went idle)
        self.heard = time.ticks_ms()     # service: the last authentic frame here
        self._buf = bytearray(2 * P.MAX_FRAME + 4)

    def poll(self, ep):
        if self.closing:
            if not self.closed:
                s = ep._session(self, None)
                if s is not None:
                    ep.end(s)
                if self in ep.ports:
                    ep.ports.remove(self)
                self.closed = True
            return
        f = self.inbox
        if f is None:
            return
        self.inbox = None
        try:
            data = P.cobs_decode(f)
        except P.ProtoError:
            ep.counters[P.C_BAD_FRAME] += 1
            return
        ep.receive(self, None, data)

    def send(self, frame, addr):
        if self.closing:
            return                       # a person is typing: nothing more on the console
        b = self._buf
        b[0] = 0
        o = P.cobs_encode(frame, len(frame), b, 1)
        b[o] = 0
        self.out.write(memoryview(b)[:o + 1])

    def ended(self, s):
        self.session_ended = True


class _Console:
    """What a person (or a tool) types while serve() runs: the line so far, echoed as the
    REPL would. Enter ends the session and the line then runs at the prompt; any other
    control character (Ctrl-C, Ctrl-A...) just ends the session."""

    def __init__(self, out):
        self.out = out
        self.line = bytearray()

    def feed(self, c):
        """True when the session must end."""
        if c in (8, 127):
            if self.line:
                self.line.pop()
                self.out.write(b"\x08 \x08")
            return False
        if c >= 32:
            self.line.append(c)
            self.out.write(bytes((c,)))
            return False
        if c not in (10, 13):
            self.line = bytearray()      # Ctrl-C & co: the line is dropped, as at the REPL
        return True


def serve(ep, node, idle_ms=3000):
    """Run the protocol on the serial console until the host says BYE, a person types
    (any byte outside a frame), or no valid host frame came for idle_ms. The control
    loops keep running meanwhile. Called by the host from the REPL (node.serve()).
    Returns (why it ended, the line typed if it was ended by Enter).

    This loop (main thread) only reads the console: each whole frame goes to the node's
    service (soft context), which owns the session and writes every answer."""
    import sys
    import select
    import micropython

    inp = sys.stdin.buffer
    port = SerialPort(sys.stdout.buffer)
    con = _Console(sys.stdout.buffer)
    node.soft_call(ep.add_port, port)
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    one = bytearray(1)
    chunk = bytearray()
    in_frame = False
    opened = time.ticks_ms()
    micropython.kbd_intr(-1)             # Ctrl-C is data here: _Console handles it
    try:
        while True:
            now = time.ticks_ms()
            if not poll.poll(0):
                if in_frame and time.ticks_diff(now, opened) > 100:
                    in_frame = False     # a torn frame: what follows is console input
                    chunk = bytearray()
                if con.line:
                    time.sleep_ms(1)
                    continue
                if port.session_ended:
                    why = "host said bye"
                    break
                if time.ticks_diff(now, port.heard) > idle_ms:
                    why = "no host for %d ms" % idle_ms
                    break
                time.sleep_ms(1)         # the loops run meanwhile (ESP32: other tasks too)
                continue
            inp.readinto(one)
            c = one[0]
            if con.line:                 # a person is typing a line: no frames any more
                if con.feed(c):
                    why = "console input"
                    break
            elif c == 0:
                if in_frame and chunk:   # the 00 that closes a frame
                    in_frame = False
                    while port.inbox is not None:
                        time.sleep_ms(1)  # the service takes one frame at a time
                    port.inbox = bytes(chunk)
                    node.wake_service()
                    chunk = bytearray()
                else:                    # the 00 that opens one
                    in_frame = True
                    opened = now
            elif in_frame:
                chunk.append(c)
                if len(chunk) > P.MAX_FRAME + 2:
                    in_frame = False
                    chunk = bytearray()
            else:
                _close(node, port)       # the session ends before anything is echoed
                if con.feed(c):
                    why = "console input"
                    break
    finally:
        micropython.kbd_intr(3)
        _close(node, port)
    return why, bytes(con.line).decode()


def _close(node, port):
    # Ask the service to end the session and drop the port; wait until it has.
    if port.closed:
        return
    port.closing = True
    node.wake_service()
    while not port.closed:
        time.sleep_ms(1)
