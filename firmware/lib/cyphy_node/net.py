# The node on the network: Wi-Fi kept up and the UDP port of the protocol, from the node's
# service (soft context, docs/firmware.md "Who owns what"). Never blocks: the board's Wi-Fi
# keeper (boards/esp32/wifi.py) connects, notices a drop and reconnects with back-off by
# itself; the UDP port opens once the first connection is up and stays open across drops
# (sends fail quietly while the link is down, as a lost datagram would). Followers
# (comms.follow) start with the UDP port.
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_POLL_MS = const(100)   # how often the keeper is asked (it costs a few WLAN calls)


class Net:
    def __init__(self, ep, board, keeper, port_no, follow=(), peer_keys=None):
        self.ep = ep
        self.board = board
        self.keeper = keeper
        self.port_no = port_no
        self.follow = follow
        self.peer_keys = peer_keys or {}
        self.udp = None              # the comms.UdpPort, once connected
        self.error = None            # why the UDP port could not open (text)
        self.polled = None           # "timer": the port polls on its own timer; "pass"
        self._next = time.ticks_ms()

    def poll(self, now):
        if time.ticks_diff(now, self._next) < 0:
            return
        self._next = time.ticks_add(now, _POLL_MS)
        if self.keeper.poll(now) and self.udp is None and self.error is None:
            self._open()

    def _open(self):
        from .udp import UdpPort
        from . import proto

        try:
            self.udp = UdpPort(self.board.udp(self.port_no), self.port_no)
        except (OSError, ValueError) as e:
            self.error = str(e)      # e.g. the port is taken: say so in info, do not retry
            return
        self.ep.add_port(self.udp)
        self.polled = "timer" if self.udp.watch(self.ep.node, self.board) else "pass"
        if self.follow:
            from .peer import Follower
            for spec in self.follow:
                k = self.peer_keys.get(spec.peer)
                self.ep.followers.append(
                    Follower(self.ep, self.udp, spec, proto.key_from_hex(k) if k else None))

    def info(self):
        d = self.keeper.info()
        d["udp_port"] = self.port_no if self.udp is not None else None
        d["udp_polled"] = self.polled
        if self.error:
            d["udp_error"] = self.error
        return d
