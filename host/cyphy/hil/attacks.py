"""Attacks and line faults against a node, for the tests (tests/sim/test_protocol_attacks.py,
short counts) and `make bench`'s attack section (long counts): forged and replayed frames,
floods, commands through a lossy link, the fail-safe after the host goes quiet.

Everything here is a real peer on a real link: UDP sockets, the node's serial console. The
node is judged by its own state (its `applied` counter, parameters read back, the time its
output went to fail-safe), never by what a fake would say.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cyphy import codec as P
from cyphy.client import ProtocolError, Session


class Quiet:
    """A link whose close() keeps the socket open: the host "leaves" (no BYE, no
    heartbeats) while the caller goes on sending recorded frames from the same address."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)
        self.link.send(frame)

    def recv(self, timeout: float) -> bytes | None:
        return self.link.recv(timeout)

    def close(self) -> None:
        pass

    def shut(self) -> None:
        self.link.close()

    def describe(self) -> str:
        return self.link.describe()


def leave(s: Session) -> None:
    """The host goes away without BYE (its heartbeats stop)."""
    s.hello = None
    s.close()


def applied(s: Session) -> int:
    """The node's count of applied requests (the READ that asks is not in it yet)."""
    return int(s.read("info")["counters"]["applied"])


def read_cost(s: Session) -> int:
    """Requests a READ of info takes (it comes in pieces): what applied() itself adds."""
    a = applied(s)
    return applied(s) - a


@dataclass
class Tally:
    sent: int = 0          # frames the attacker sent
    changed: int = 0       # of them, how many changed the node's state (applied requests)


def forgeries(s: Session, n: int, seed: int = 1) -> Tally:
    """n forged COMMANDs in s's session: a wrong key, a flipped bit, a foreign EPOCH, no
    tag. Tally.changed: requests the node applied beyond the caller's own reads."""
    rng = random.Random(seed)
    cost = read_cost(s)
    a0 = applied(s)
    t = Tally()
    wrong = P.Key(bytes(rng.getrandbits(8) for _ in range(32)))
    nid = s.hello.node_id if s.hello else P.NODE_ANY
    for i in range(n):
        kind = i % 4
        payload = P.cmd_set(0, P.KEYS.index("setpoint"), 1.0 + i % 7)
        if kind == 0:
            f = P.build(P.HOST | P.LONG, P.COMMAND, nid, s._next_seq(), payload, key=wrong,
                        epoch=s._epoch)
        elif kind == 1:
            b = bytearray(P.build(P.HOST | P.LONG, P.COMMAND, nid, s._next_seq(), payload,
                                  key=s.key, epoch=s._epoch))
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            f = bytes(b)
        elif kind == 2:
            f = P.build(P.HOST | P.LONG, P.COMMAND, nid, s._next_seq(), payload, key=s.key,
                        epoch=os.urandom(4))
        else:
            f = P.build(P.HOST | P.LONG, P.COMMAND, nid, s._next_seq(), payload)
        s.link.send(f)
        t.sent += 1
    time.sleep(0.3)
    t.changed = applied(s) - a0 - cost
    return t


def replays(s: Session, recorded: list[bytes], n: int) -> Tally:
    """Send n frames picked from `recorded` (frames this session sent earlier) again.
    Tally.changed: requests the node applied because of them."""
    cost = read_cost(s)
    a0 = applied(s)
    t = Tally()
    for i in range(n):
        s.link.send(recorded[i % len(recorded)])
        t.sent += 1
        if i % 50 == 49:
            time.sleep(0.02)
    time.sleep(0.3)
    t.changed = applied(s) - a0 - cost
    return t


@dataclass
class OnceResult:
    commands: int = 0      # sent
    acked: int = 0         # acknowledged
    failed: int = 0        # reported failed to the caller (ProtocolError)
    applied: int = 0       # applied by the node (its counter)
    reopened: int = 0      # sessions the host had to open again

    @property
    def violations(self) -> int:
        """Applications not matched by an acknowledgement: a command applied twice, or
        reported failed although applied."""
        return abs(self.applied - self.acked)


def exactly_once(s: Session, n: int, loop: str, lo: float = 30.0) -> OnceResult:
    """n SET commands through s's (faulty) link, each retried by the client until
    acknowledged or given up; the node's `applied` counter says how many took effect.
    Reads happen only before and after (a clean measurement needs the counter only)."""
    r = OnceResult()
    cost = read_cost(s)
    a0 = _retrying(s, applied, r)
    for i in range(n):
        r.commands += 1
        try:
            s.set(loop, "setpoint", lo + (i % 50) / 10)
            r.acked += 1
        except ProtocolError:
            r.failed += 1
            _reopen(s, r)
    r.applied = _retrying(s, applied, r) - a0 - cost
    return r


def _retrying(s: Session, fn: Callable[[Session], Any], r: OnceResult) -> Any:
    for _ in range(20):
        try:
            return fn(s)
        except ProtocolError:
            _reopen(s, r)
    raise ProtocolError("the node could not be read through this link 20 times running")


def _reopen(s: Session, r: OnceResult) -> None:
    for _ in range(10):
        try:
            s.open()
            r.reopened += 1
            return
        except ProtocolError:
            time.sleep(0.2)


class UdpFaults:
    """A UDP relay between a host and a node that drops and corrupts datagrams (each
    direction, seeded): the host talks to (relay.ip, relay.port) instead of the node."""

    def __init__(self, node_ip: str, node_port: int, drop: float, corrupt: float,
                 seed: int = 1) -> None:
        self.node = (node_ip, node_port)
        self.drop, self.corrupt = drop, corrupt
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.ip, self.port = self.front.getsockname()
        self.host: tuple[str, int] | None = None
        self.dropped = self.corrupted = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _fault(self, d: bytes) -> bytes | None:
        if self.rng.random() < self.drop:
            self.dropped += 1
            return None
        if self.rng.random() < self.corrupt:
            b = bytearray(d)
            b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
            self.corrupted += 1
            return bytes(b)
        return d

    def _run(self) -> None:
        import select
        while not self._stop.is_set():
            rd, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for sk in rd:
                d, addr = sk.recvfrom(2048)
                if sk is self.front:
                    self.host = addr
                    d2, to, via = self._fault(d), self.node, self.back
                else:
                    if addr != self.node or self.host is None:
                        continue
                    d2, to, via = self._fault(d), self.host, self.front
                if d2 is not None:
                    via.sendto(d2, to)

    def close(self) -> None:
        self._stop.set()
        self._th.join(timeout=2)
        self.front.close()
        self.back.close()


@dataclass
class Flood:
    """Junk datagrams and padded HELLO_REQs from several other sockets, at given rates,
    in a thread; what the node sent back is counted (it must never be more)."""

    ip: str
    port: int
    junk_per_s: float = 1000
    hello_per_s: float = 200
    sent: dict[str, int] = field(default_factory=lambda: {"junk": 0, "hello": 0,
                                                          "bytes_out": 0, "bytes_in": 0})

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Flood":
        self._th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._th.join(timeout=5)

    def _run(self) -> None:
        junk = os.urandom(120)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        for k in socks:
            k.setblocking(False)
        rate = self.junk_per_s + self.hello_per_s
        every_hello = max(1, round(rate / self.hello_per_s)) if self.hello_per_s else 0
        t0 = time.monotonic()
        i = 0
        try:
            while not self._stop.is_set():
                i += 1
                k = socks[i % len(socks)]
                if every_hello and i % every_hello == 0:
                    f = P.build(P.HOST | P.LONG, P.HELLO_REQ, P.NODE_ANY, time.time_ns() // 10_000,
                                P.hello_req(os.urandom(P.NONCE_LEN), P.HELLO_REQ_PAD))
                    self.sent["hello"] += 1
                else:
                    f = junk
                    self.sent["junk"] += 1
                try:
                    k.sendto(f, (self.ip, self.port))
                    self.sent["bytes_out"] += len(f)
                except BlockingIOError:
                    pass
                for kk in socks:
                    try:
                        while True:
                            self.sent["bytes_in"] += len(kk.recv(2048))
                    except BlockingIOError:
                        pass
                ahead = i / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            for k in socks:
                k.close()


def read_latencies(s: Session, path: str, seconds: float, gap: float = 0.05) -> list[float]:
    """Read `path` again and again for `seconds`; each read's latency in ms (sorted)."""
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        s.read(path)
        lat.append((time.monotonic() - t) * 1000)
        time.sleep(gap)
    return sorted(lat)


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


# Installed on the node through its console (the REPL, never the protocol): notes the
# ticks_ms at which the loop's PWM is first written 0 after SAFE[0] is reset.
FAILSAFE_SPY = (
    "import time\n"
    "lp = node.loop({loop!r})\n"
    "pwm = lp.act.hw._pwm\n"
    "SAFE = [0]\n"
    "_duty = pwm.duty_u16\n"
    "def _spy(v=None):\n"
    "    if v == 0 and SAFE[0] == 0:\n"
    "        SAFE[0] = time.ticks_ms() or 1\n"
    "    return _duty() if v is None else _duty(v)\n"
    "pwm.duty_u16 = _spy\n")


@dataclass
class FailsafeTrial:
    """One trial's figures, in ms on the node's clock. The last frame's true arrival is
    known to within spread_ms (the TIME request's round trip, which ties the node's clock
    to the host's, plus the send itself): late_ms is the fail-safe's delay after the true
    expiry at most, late_min_ms at least. dated_late_ms > 0 would mean the node dated the
    last frame later than it can have come (its timeout would run late)."""

    late_ms: int
    late_min_ms: int
    spread_ms: int
    dated_late_ms: int


def failsafe_trial(make_link: Callable[[], Any], key: P.Key, repl: Callable[[str], str],
                   loop: str, timeout_ms: int, phase_s: float) -> FailsafeTrial:
    """One trial. repl(code) runs code at the node's REPL and returns its output; it is
    called only while no session holds the link (a serial console is free then), and
    FAILSAFE_SPY must have been installed with it. A session sets the loop's setpoint high
    (output on); its last request is TIME, whose answer says the node's clock; then the
    host goes quiet (no BYE, no heartbeat) and the spy says when the output went safe."""
    repl("SAFE[0] = 0")
    link = Quiet(make_link())
    try:
        s = Session(link, key)
        s.open()
        s.set(loop, "setpoint", 120.0)
        time.sleep(phase_s)
        s.heartbeats = False             # the host goes quiet after the next request
        h0 = time.monotonic()
        t_node = s.sync_time()           # the node's ticks_ms while it answered
        h1 = time.monotonic()
        s.hello = None
        last = link.sent[-1]
        s.close()
    finally:
        link.shut()                      # (a serial link gives the console back)
    if P.parse(last).type != P.TIME:
        raise RuntimeError("a heartbeat went out after the TIME request: trial void")
    time.sleep(timeout_ms / 1000 + 0.3)
    safe, touched = map(int, _wait_repl(repl, "print(SAFE[0], node._touched)").split())
    _wait_repl(repl, "node.touch()")
    # The node answered TIME at host time in [h0, h1]; the request left at h0 or later and
    # came before t_node: its arrival on the node's clock is in [t_node - (h1 - h0), t_node].
    spread = int((h1 - h0) * 1000) + 1
    earliest, latest = t_node - spread, t_node
    if not safe:
        return FailsafeTrial(10**9, 10**9, spread, touched - latest)
    return FailsafeTrial(late_ms=safe - (earliest + timeout_ms),
                         late_min_ms=safe - (latest + timeout_ms),
                         spread_ms=spread, dated_late_ms=touched - latest)


def _wait_repl(repl: Callable[[str], str], code: str, seconds: float = 10.0) -> str:
    # A serial console is the REPL's again once serve() has noticed the host left.
    end = time.monotonic() + seconds
    while True:
        try:
            return repl(code)
        except Exception:  # noqa: BLE001 - busy console: again, until the deadline
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
