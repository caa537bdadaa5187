# The protocol over UDP (Wi-Fi on ESP32, loopback on the sim): one socket, every host's
# session on it, and the node's announcements. Owned by the node's service (comms.py).
import time

from . import proto as P

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_ANNOUNCE_MS = const(10000)
_BUDGET = const(16)              # datagrams read per service pass
_POLL_US = const(2000)           # the socket's own poll: lwIP keeps ~6 datagrams, so at
                                 # 1200 datagrams/s it must be read every 2-4 ms


class UdpPort:
    """Sessions over UDP: board.udp(port) (Wi-Fi on ESP32, loopback on the sim). The node
    also announces itself (a HELLO with a zero nonce) to the subnet's broadcast address
    at start and every _ANNOUNCE_MS, for hosts that listen rather than ask."""

    udp = True                           # comms.Endpoint: a UDP port (the CAP_UDP capability)

    def __init__(self, dgram, port_no=P.UDP_PORT):
        self.dgram = dgram
        self.port_no = port_no
        self._buf = bytearray(P.MAX_FRAME + 2)
        self._mv = memoryview(self._buf)
        self._next_announce = time.ticks_ms()
        self.heard = 0
        self.polled = time.ticks_ms()    # when the socket was last found empty
        self.arrived = self.polled       # the frames being read came after this
        self.backlog = False             # the last poll stopped with datagrams waiting
        self._node = None
        self._timer = None               # board.periodic: the socket's own poll
        self._on_timer_cb = self._on_timer

    def watch(self, node, board):
        """Look at the socket every _POLL_US on a timer of its own, not only once per
        control pass: the stack keeps only a few datagrams, and a flood would push a
        host's out. When one waits, the node's service runs at once and reads it (the
        service owns the sessions; this callback only looks). False when no timer is free
        (then the service reads after every pass only)."""
        self._node = node
        try:
            self._timer = board.periodic(_POLL_US, self._on_timer_cb)
        except ValueError:
            return False
        return True

    def _on_timer(self, _h):
        if self.dgram.ready():
            self._node.more_service()
        elif not self.backlog:
            self.polled = time.ticks_ms()  # empty now: what comes next came after this

    def poll(self, ep):
        # At most _BUDGET datagrams per call: a flood costs bounded work per service pass;
        # the service comes back at once while there is a backlog (backlog), so an
        # established host's frames get through a flood within a few service passes.
        # A datagram read now came after the last time the socket was found empty: that
        # is its arrival time for the comms timeout (never later than the truth).
        self.arrived = self.polled
        n = 0
        while n < _BUDGET:
            r = self.dgram.recv_into(self._buf)
            if r is None:
                break
            k, addr = r
            ep.receive(self, addr, bytes(self._mv[:k]))
            n += 1
        now = time.ticks_ms()
        self.backlog = n >= _BUDGET
        if not self.backlog:
            self.polled = now
        if time.ticks_diff(now, self._next_announce) >= 0:
            self._next_announce = time.ticks_add(now, _ANNOUNCE_MS)
            self.dgram.broadcast(ep.announcement(), self.port_no)

    def close(self):
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.dgram.close()

    def send(self, frame, addr):
        self.dgram.sendto(frame, addr)

    def ended(self, s):
        pass
