"""The host's end of the cyphy protocol: a session with one node over a link.

The codec is cyphy.codec (the node's own cyphy_node.proto and the host's part); this module
adds what only a host does: sessions (HELLO with a fresh nonce), requests retried until
acknowledged, replay and gap accounting for the node's frames, and a reader thread that
sorts frames into replies, telemetry and events. docs/protocol.md has the rules this follows.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import codec as P

from .links import Link

HEARTBEAT_S = 1.0
SEQ_EPOCH = 1_420_070_400 * 100_000  # 2015-01-01T00:00:00Z in 10 us units
WINDOW = 64  # node frames accepted out of order within this many sequence numbers


class ProtocolError(Exception):
    """The node could not be reached or did not answer as the protocol says."""


class CommandRejected(ProtocolError):
    """The node answered NACK: .reason (a codec.R_* code) and .text say why."""

    def __init__(self, reason: int, text: str) -> None:
        self.reason = reason
        self.text = text
        super().__init__(f"rejected by the node: {P.REASONS.get(reason, reason)}"
                         + (f": {text}" if text else ""))


@dataclass
class Hello:
    node_id: int
    name: str
    board: str
    firmware: str
    uid: bytes
    loops: list[str]
    caps: int
    verified: bool  # the tag checked out with our key (or the node has no key and we none)

    @property
    def authenticated(self) -> bool:
        return bool(self.caps & P.CAP_AUTH)


@dataclass
class LinkStats:
    frames: int = 0
    lost: int = 0            # gaps in the node's sequence numbers
    bad_tag: int = 0
    replayed: int = 0
    malformed: int = 0
    retries: int = 0
    node: dict[str, int] = field(default_factory=dict)  # the node's counters (HEARTBEAT)


class _NodeSeq:
    """The node's 32-bit sequence (EPOCH-scoped) from its 16-bit SEQ: the receiver keeps
    the rollover count, like SRTP, and a sliding window against replays."""

    def __init__(self, start: int) -> None:
        self.hi = start
        self.seen = 1  # bit i: hi - i was accepted

    def extend(self, seq16: int) -> int:
        ext = (self.hi & ~0xFFFF) | seq16
        if ext - self.hi > 0x8000:
            ext -= 0x10000
        elif self.hi - ext > 0x8000:
            ext += 0x10000
        return ext

    def accept(self, ext: int) -> int | None:
        """Gap before ext (>= 0), or None for a replay or a frame older than the window."""
        if ext > self.hi:
            gap = ext - self.hi - 1
            shift = ext - self.hi
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.hi = ext
            return gap
        back = self.hi - ext
        if back >= WINDOW or self.seen & (1 << back):
            return None
        self.seen |= 1 << back
        return -1  # a late frame fills an earlier gap


class Session:
    """A protocol session with one node. Use as a context manager, or call close()."""

    def __init__(self, link: Link, key: P.Key | None = None, node: int = P.NODE_ANY,
                 timeout: float = 2.0, key_for: Callable[[str], P.Key | None] | None = None) -> None:
        self.link = link
        self.key = key
        self.key_for = key_for  # finds a key by the node's name (from its HELLO) when key is None
        self.node = node
        self.timeout = timeout
        self.stats = LinkStats()
        self.hello: Hello | None = None
        self._epoch = b"\0\0\0\0"
        self._rx: _NodeSeq | None = None
        self._last_seq = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue] = {}
        self._hello_wait: dict[bytes, queue.Queue] = {}
        self.telemetry: queue.Queue = queue.Queue(maxsize=100_000)
        self.events: deque = deque(maxlen=1000)
        self.node_stats: dict[str, Any] | None = None
        self.period_ms = 0
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self._beater = threading.Thread(target=self._heartbeat_loop, daemon=True)
        self._beater.start()

    # ---- lifecycle ----

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        if self.hello is not None:
            try:
                self._send(P.BYE, b"")
            except OSError:
                pass
        self._closed.set()
        self.link.close()
        self._reader.join(timeout=2)

    def close_session(self) -> None:
        """End the session (BYE) but keep the link, e.g. to use the REPL on it."""
        if self.hello is not None:
            self._send(P.BYE, b"")
            self.hello = None
            time.sleep(0.1)

    def reopen(self) -> Hello:
        """A new session on the same link (after close_session())."""
        enter = getattr(self.link, "enter", None)
        if enter is not None:
            enter()
        return self.open()

    def open(self, attempts: int = 5) -> Hello:
        """HELLO with a fresh nonce: the node's answer proves it holds the key and starts a
        new EPOCH, so frames recorded in any earlier session are worthless."""
        for _ in range(attempts):
            nonce = os.urandom(P.NONCE_LEN)
            q: queue.Queue = queue.Queue()
            self._hello_wait[nonce] = q
            frame = P.build(P.HOST | P.LONG, P.HELLO_REQ, self.node, self._next_seq(),
                            P.hello_req(nonce, P.HELLO_REQ_PAD))
            self.link.send(frame)
            try:
                h = q.get(timeout=self.timeout / attempts * 2)
            except queue.Empty:
                continue
            finally:
                self._hello_wait.pop(nonce, None)
            if isinstance(h, Exception):
                raise h
            self.hello = h
            return h
        said = getattr(self.link, "console", b"")
        said = f"; it said: {bytes(said[-300:]).decode(errors='replace')!r}" if said else ""
        raise ProtocolError(f"no HELLO from the node on {self.link.describe()} "
                            f"(is the cyphy firmware running there?){said}")

    # ---- requests ----

    def _next_seq(self) -> int:
        # Host SEQ: the host's clock in 10 us units since 2015-01-01 (48 bits last until
        # 2104), strictly increasing, so that several host processes on one machine stay
        # in order without sharing state.
        with self._lock:
            s = max(time.time_ns() // 10_000 - SEQ_EPOCH, self._last_seq + 1)
            self._last_seq = s
            return s

    def _send(self, ftype: int, payload: bytes, seq: int | None = None) -> int:
        seq = self._next_seq() if seq is None else seq
        nid = self.hello.node_id if self.hello else self.node
        frame = P.build(P.HOST | P.LONG, ftype, nid, seq, payload, key=self.key,
                        epoch=self._epoch)
        self.link.send(frame)
        return seq

    def request(self, ftype: int, payload: bytes, retries: int = 6, timeout: float | None = None) -> bytes:
        """Send a request until the node ACKs it (the same frame each time, so the node
        applies it once); returns the ACK's result. CommandRejected on NACK."""
        if self.hello is None:
            self.open()
        per_try = (timeout or self.timeout) / 3
        for stale in range(3):
            seq = self._next_seq()
            q: queue.Queue = queue.Queue()
            self._waiting[seq] = q
            try:
                for attempt in range(retries):
                    self._send(ftype, payload, seq)
                    if attempt:
                        self.stats.retries += 1
                    try:
                        kind, body = q.get(timeout=per_try)
                    except queue.Empty:
                        continue
                    if kind == P.ACK:
                        return body["result"]
                    if body["reason"] == P.R_STALE and stale < 2:
                        break  # another host's request overtook ours: again, fresh SEQ
                    raise CommandRejected(body["reason"], body["text"])
                else:
                    raise ProtocolError(f"no answer from the node on {self.link.describe()} "
                                        f"after {retries} tries")
            finally:
                self._waiting.pop(seq, None)
        raise ProtocolError("the node kept answering 'stale sequence number'")

    def command(self, payload: bytes, **kw: Any) -> bytes:
        return self.request(P.COMMAND, payload, **kw)

    def loop_index(self, loop: str) -> int:
        if self.hello is None:
            self.open()
        assert self.hello is not None
        try:
            return self.hello.loops.index(loop)
        except ValueError:
            raise CommandRejected(P.R_UNKNOWN_TARGET, f"no loop {loop!r}; the node has "
                                  + ", ".join(self.hello.loops)) from None

    def set(self, loop: str, key: str, value: float | str) -> None:
        if key not in P.KEYS:
            raise CommandRejected(P.R_UNKNOWN_TARGET, f"no key {key!r}; keys: " + ", ".join(P.KEYS))
        if key == "mode":
            if value not in ("auto", "manual"):
                raise CommandRejected(P.R_OUT_OF_RANGE, 'mode must be "auto" or "manual"')
            value = 1.0 if value == "auto" else 0.0
        self.command(P.cmd_set(self.loop_index(loop), P.KEYS.index(key), float(value)))

    def read(self, path: str) -> Any:
        """A parameter's value ("loop.key", a loop name, "state", "stats", "faults", "info")."""
        import json
        text = b""
        while True:
            r = self.request(P.READ, P.read_req(path, len(text)))
            total = P.get_u16(r, 0)
            text += r[2:]
            if len(text) >= total or len(r) <= 2:
                return json.loads(text)

    def subscribe(self, period_ms: int, batch: int = 1, stats_s: int = 1) -> int:
        r = self.command(P.cmd_subscribe(period_ms, batch, stats_s))
        self.period_ms = P.get_u16(r, 0)
        return self.period_ms

    def sync_time(self) -> int:
        """Tell the node the host's time; returns the node's ticks_ms at that moment."""
        return P.get_u32(self.request(P.TIME, P.time_req(time.time_ns() // 1_000_000)), 0)

    def samples(self, timeout: float = 5.0) -> Iterator[dict]:
        """Telemetry samples as they come: {"t_ms", "loops": {name: {setpoint, ...}}}."""
        while True:
            try:
                yield self.telemetry.get(timeout=timeout)
            except queue.Empty:
                raise ProtocolError(f"no telemetry for {timeout} s") from None

    # ---- receiving (reader thread) ----

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.link.recv(0.2)
            except Exception:  # noqa: BLE001 - the link failed or was closed under us
                if self._closed.is_set():
                    return
                time.sleep(0.05)
                continue
            if data is None:
                continue
            try:
                self._on_frame(data)
            except P.ProtoError:
                self.stats.malformed += 1

    def _on_frame(self, data: bytes) -> None:
        f = P.parse(data)
        if f.from_host:
            return  # our own or another host's frame (a shared bus, a UDP broadcast)
        if f.type == P.HELLO:
            self._on_hello(f)
            return
        if self.hello is None or f.node != self.hello.node_id or self._rx is None:
            return
        ext = self._rx.extend(f.seq)
        ok = f.check(self.key, self._epoch, ext >> 16) if self.key else (not f.auth and f.check())
        if not ok:
            self.stats.bad_tag += 1
            return
        gap = self._rx.accept(ext)
        if gap is None:
            self.stats.replayed += 1
            return
        self.stats.lost += gap
        self.stats.frames += 1
        body = P.parse_payload(f.type, f.payload, len(self.hello.loops)) \
            if f.type in P.TYPE_NAMES else None
        if f.type in (P.ACK, P.NACK):
            q = self._waiting.get(body["ref"])
            if q is not None:
                q.put((f.type, body))
        elif f.type == P.TELEMETRY:
            self._on_telemetry(body)
        elif f.type == P.HEARTBEAT:
            self.stats.node = {k: body.get(k, 0) for k in P.COUNTERS}
        elif f.type == P.STATS:
            self.node_stats = {n: s for n, s in zip(self.hello.loops, body["loops"])}
        elif f.type == P.EVENT:
            self.events.append(body)

    def _on_hello(self, f: P.Frame) -> None:
        body = P.parse_payload(P.HELLO, f.payload)
        q = self._hello_wait.get(body["nonce"])
        if q is None:
            return  # not an answer to our HELLO_REQ (an announce, a replay): ignored
        if f.auth and self.key is None and self.key_for is not None:
            self.key = self.key_for(body["name"])
        if f.auth and self.key is None:
            q.put(ProtocolError(f"node {body['name']!r} authenticates its frames and no key "
                                f"for it was found: give it with --key-file or CYPHY_KEY, or "
                                f"provision the node from this machine (cyphy provision)"))
            return
        if not f.auth and self.key is not None:
            q.put(ProtocolError("the node has no key (its frames are unauthenticated): "
                                "provision it, or connect without a key"))
            return
        ok = f.check(self.key, body["epoch"], body["roc"]) if f.auth else f.check()
        if not ok:
            q.put(ProtocolError("the node's HELLO does not verify with this key: "
                                "wrong key for this node?"))
            return
        self._epoch = body["epoch"]
        self._rx = _NodeSeq((body["roc"] << 16) | f.seq)
        q.put(Hello(f.node, body["name"], body["board"], body["firmware"], body["uid"],
                    body["loops"], body["caps"], True))

    def _on_telemetry(self, body: dict) -> None:
        assert self.hello is not None
        names = self.hello.loops
        step = self.period_ms
        for i, s in enumerate(body["samples"]):
            loops = {}
            for name, (sp, y, u, st) in zip(names, s):
                loops[name] = {"setpoint": sp / 1000, "measurement": y / 1000, "output": u / 1000,
                               "status": st}
            sample = {"t_ms": (body["t_ms"] + i * step) & 0x3FFFFFFF, "loops": loops}
            try:
                self.telemetry.put_nowait(sample)
            except queue.Full:
                pass

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(HEARTBEAT_S):
            if self.hello is not None:
                try:
                    self._send(P.HEARTBEAT, b"")
                except OSError:
                    pass


def status_names(status: int) -> dict[str, Any]:
    """A telemetry status word as names: mode, alarms, faults."""
    faults = status >> P.ST_FAULT_SHIFT & 0x1F
    return {
        "mode": "failsafe" if faults else ("auto" if status & P.ST_AUTO else "manual"),
        "alarms": [n for b, n in ((P.ST_ALARM_LOW, "low"), (P.ST_ALARM_HIGH, "high")) if status & b],
        "faults": [n for b, n in ((1, "sensor"), (2, "exception"), (4, "comms"), (8, "stopped"),
                                  (16, "peer")) if faults & b],
        "tuning": bool(status & P.ST_TUNING),
    }
