"""Authentication, replay protection and reliability of the protocol, against a node
running the real firmware over its serial console. Faults are injected into the real link
(frames dropped, recorded and replayed), never simulated by a fake node."""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from protonode import KEY_HEX, boot  # noqa: E402

from cyphy.client import ProtocolError, Session  # noqa: E402
from cyphy.links import SerialLink  # noqa: E402
from cyphy import codec as P  # noqa: E402

KEY = P.key_from_hex(KEY_HEX)


class Tap:
    """A real link with a hand on it: records what passes, drops what `drop_rx` says."""

    def __init__(self, link, drop_rx=None):
        self.link = link
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self.dropped: list[bytes] = []
        self.drop_rx = drop_rx

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)
        self.link.send(frame)

    def recv(self, timeout: float) -> bytes | None:
        f = self.link.recv(timeout)
        if f is not None:
            if self.drop_rx is not None and self.drop_rx(f):
                self.dropped.append(f)
                return None
            self.received.append(f)
        return f

    def close(self) -> None:
        self.link.close()

    def describe(self) -> str:
        return self.link.describe()


@pytest.fixture
def node(sim_nodes):
    return boot(sim_nodes)


def counters(s: Session) -> dict:
    return s.read("info")["counters"]


def test_lost_acks_are_retried_and_applied_once(node):
    lost = {"n": 0}

    def drop_first_two_acks(f: bytes) -> bool:
        if P.parse(f).type == P.ACK and lost["n"] < 2:
            lost["n"] += 1
            return True
        return False

    tap = Tap(SerialLink(node), drop_first_two_acks)
    with Session(tap, KEY) as s:
        s.open()
        s.set("oven", "setpoint", 42.0)     # its first two ACKs are lost
        c = counters(s)
        assert s.stats.retries >= 2
        assert c["applied"] == 1 and c["duplicate"] >= 2   # the READ itself is not counted yet
        sets = [f for f in tap.sent if P.parse(f).type == P.COMMAND]
        assert len(sets) >= 3 and len(set(sets)) == 1      # the same frame, resent
        assert s.read("oven.setpoint") == 42.0


def test_telemetry_gaps_are_counted(node):
    seen = {"n": 0}

    def drop_every_fourth_telemetry(f: bytes) -> bool:
        if P.parse(f).type == P.TELEMETRY:
            seen["n"] += 1
            return seen["n"] % 4 == 0
        return False

    tap = Tap(SerialLink(node), drop_every_fourth_telemetry)
    with Session(tap, KEY) as s:
        s.open()
        s.subscribe(20)
        for _ in range(30):
            next(s.samples())
        assert s.stats.lost == len(tap.dropped) > 5


def test_replays_and_forgeries_are_rejected_and_counted(node):
    tap = Tap(SerialLink(node))
    with Session(tap, KEY) as s:
        s.open()
        s.set("oven", "setpoint", 50.0)
        old = [f for f in tap.sent if P.parse(f).type == P.COMMAND][-1]
        s.open()                          # a new session: a new EPOCH
        s.set("oven", "setpoint", 55.0)
        tap.link.send(old)                # a recorded command from the last session
        forged = bytearray(P.build(P.HOST | P.LONG, P.COMMAND, 1, s._next_seq(),
                                   P.cmd_set(0, 0, 99.0), key=P.Key(b"x" * 32), epoch=s._epoch))
        tap.link.send(bytes(forged))      # the wrong key
        stale_seq = s._last_seq - 100_000
        for _ in range(17):               # the node's window of host SEQs (16) moves past it
            s._send(P.HEARTBEAT, b"")
        time.sleep(0.3)
        q: queue.Queue = queue.Queue()
        s._waiting[stale_seq] = q
        s._send(P.COMMAND, P.cmd_set(0, 0, 60.0), stale_seq)  # a SEQ below the last one
        with pytest.raises(queue.Empty):  # dropped unanswered: no state, no amplifier
            q.get(timeout=1.0)
        assert s.read("oven.setpoint") == 55.0
        c = counters(s)
        assert c["bad_tag"] == 2 and c["stale"] == 1
        time.sleep(1.2)                   # reported in the node's HEARTBEAT too
        assert s.stats.node["bad_tag"] == 2 and s.stats.node["stale"] == 1

        # the host's side: a replayed or altered node frame is not taken
        s.subscribe(20)
        next(s.samples())
        rx = [f for f in tap.received if P.parse(f).type == P.TELEMETRY]
        before = (s.stats.replayed, s.stats.bad_tag)
        s._on_frame(rx[0])
        bad = bytearray(rx[-1])
        bad[7] ^= 1
        s._on_frame(bytes(bad))
        assert (s.stats.replayed, s.stats.bad_tag) == (before[0] + 1, before[1] + 1)


def test_wrong_key_and_no_key_are_clear_errors(node):
    with pytest.raises(ProtocolError, match="does not verify with this key"):
        with Session(SerialLink(node), P.Key(b"y" * 32)) as s:
            s.open()
    with pytest.raises(ProtocolError, match="no key for it was found"):
        with Session(SerialLink(node), None) as s:
            s.open()


def test_the_key_never_appears(node, sim_nodes):
    tap = Tap(SerialLink(node))
    with Session(tap, KEY) as s:
        s.open()
        s.subscribe(20)
        next(s.samples())
        info = s.read("info")
        assert "key" not in str(info).lower()
        console = bytes(tap.link.console)
    raw = bytes.fromhex(KEY_HEX)
    home = Path(node).parents[2]
    logs = b"".join(p.read_bytes() for p in (home / "sim").rglob("*.log"))
    for blob in [console, logs, *tap.received, *tap.sent]:
        assert KEY_HEX.encode() not in blob and raw not in blob
    assert repr(KEY) == "<Key (secret)>"
