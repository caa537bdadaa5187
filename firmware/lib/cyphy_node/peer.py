# Following another node over UDP: a loop's setpoint tracks a value of a loop on another
# node (config comms.follow; docs/config.md). The node plays the host's part of the
# protocol towards its peer with the same codec: HELLO_REQ, a SUBSCRIBE, HEARTBEATs, and
# it checks the peer's telemetry as every host does (hostside.py: the HELLO's key, then
# tag, EPOCH and sequence of each frame). If the peer goes quiet, the setpoint keeps its
# last value and the follower says HELLO again every second.
# Runs in Endpoint.service(), outside the ticks.
import time

from . import hostside
from . import proto as P

_QUIET_MS = 3000      # no valid frame from the peer for this long: start over
_RETRY_MS = 1000
_HEARTBEAT_MS = 1000
_VALUES = ("setpoint", "measurement", "output")


class Follower:
    def __init__(self, ep, port, spec, key):
        self.ep = ep
        self.port = port                 # the UdpPort the node's comms use
        self.addr = (spec.peer, spec.port)
        self.loop = ep.node.loop(spec.loop)
        self.peer_loop = spec.peer_loop
        self.value = _VALUES.index(spec.value)
        self.gain = spec.gain
        self.offset = spec.offset
        self.period_ms = spec.period_ms
        self.key = key
        self.side = hostside.HostSide()  # the session with the peer (None: not open)
        self.open = False
        self.nonce = None
        self.index = -1                  # the peer loop's index in its telemetry
        self.nloops = 0
        self.nsig = 0
        self.seq = 0                     # our (host) SEQ within the session
        self.heard = time.ticks_ms()
        self.next_try = self.heard
        self.next_hb = self.heard
        self.updates = 0                 # setpoints applied
        self.rejected = 0                # frames or values refused

    def service(self, now):
        if not self.open or time.ticks_diff(now, self.heard) > _QUIET_MS:
            if time.ticks_diff(now, self.next_try) >= 0:
                self._hello(now)
        elif time.ticks_diff(now, self.next_hb) >= 0:
            self.next_hb = time.ticks_add(now, _HEARTBEAT_MS)
            self._send(P.HEARTBEAT, b"")

    def _hello(self, now):
        import os
        self.open = False
        self.side.end()
        self.next_try = time.ticks_add(now, _RETRY_MS)
        self.nonce = os.urandom(P.NONCE_LEN)
        self.seq += 1
        self.port.send(P.build(P.HOST | P.LONG, P.HELLO_REQ, P.NODE_ANY, self.seq,
                               P.hello_req(self.nonce, P.HELLO_REQ_PAD)), self.addr)

    def _send(self, ftype, payload):
        self.seq += 1
        self.port.send(self.side.frame(ftype, self.seq, payload), self.addr)

    def receive(self, f):
        try:
            if f.type == P.HELLO:
                self._on_hello(f)
            elif self.open and self._fresh(f) and f.type == P.TELEMETRY:
                self._on_telemetry(f)
        except (P.ProtoError, ValueError):
            self.rejected += 1

    def _on_hello(self, f):
        h = P.parse_hello(f.payload)
        if h["nonce"] != self.nonce:
            return                       # an announce, or an answer to someone else
        # the key given in the config, or none: an unauthenticated peer only without a key
        key, why = hostside.check_hello(f, h, [self.key] if self.key else [])
        if why is not None or self.peer_loop not in h["loops"]:
            self.rejected += 1
            return
        self.side.start(f, h, key)
        self.open = True
        self.index = h["loops"].index(self.peer_loop)
        self.nloops = len(h["loops"])
        self.nsig = len(h.get("signals") or ())
        self.heard = time.ticks_ms()
        self.seq = 1
        self._send(P.COMMAND, P.cmd_subscribe(self.period_ms, 1, 0))

    def _fresh(self, f):
        # tag, EPOCH and sequence as every host checks them; a late frame (gap -1) is not
        # taken: the setpoint follows the newest value only
        gap = self.side.accept(f)
        if not isinstance(gap, int) or gap < 0:
            self.rejected += 1
            return False
        self.heard = time.ticks_ms()
        return True

    def _on_telemetry(self, f):
        t = P.parse_telemetry(f.payload, self.nloops, self.nsig)
        v = t["samples"][-1][self.index][self.value] / 1000
        self.loop.setpoint = self.gain * v + self.offset   # ValueError: outside the range
        self.updates += 1
