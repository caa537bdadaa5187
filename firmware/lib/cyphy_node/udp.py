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

    def send(self, frame, addr):
        self.dgram.sendto(frame, addr)

    def ended(self, s):
        pass
