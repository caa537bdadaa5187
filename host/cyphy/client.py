"""The host's end of the cyphy protocol: a session with one node over a link.

The codec is cyphy.codec (the node's own cyphy_node.proto and the host's part); this module
adds what only a host does: sessions (HELLO with a fresh nonce), requests retried until
acknowledged, replay and gap accounting for the node's frames, and a reader thread that
sorts frames into replies, telemetry and events. docs/protocol.md has the rules this follows.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from cyphy_node import hostside

from . import codec as P

from .hub import Hub, Timer
from .links import Link

log = logging.getLogger("cyphy.client")

# The host's heartbeat (docs/protocol.md, "Sessions"). A node's comms watchdog
# (comms_timeout_ms, in its HELLO) trips when no fresh authenticated frame arrives for that
# long, so a host sends HEARTBEATS_PER_TIMEOUT heartbeats per timeout: then one or two lost
# datagrams (or a heartbeat delayed by a busy host) still leave a fresh one inside the
# timeout, with a quarter of it to spare for the node's pass and the host's scheduling.
# Never more often than every HEARTBEAT_MIN_S (20 frames/s: a small share of a 115200 line
# or of the node's per-pass UDP budget), never less often than every HEARTBEAT_S (the node
# ends a quiet session after 5 s). So a comms timeout shorter than MIN_COMMS_TIMEOUT_MS
# cannot be kept alive by our tools: `cyphy provision` and `cyphy check` warn about it.
HEARTBEAT_S = 1.0
MIN_RTO_S = 0.1    # the shortest wait before a request is sent again
HEARTBEAT_MIN_S = 0.05
HEARTBEATS_PER_TIMEOUT = 4
MIN_COMMS_TIMEOUT_MS = round(HEARTBEATS_PER_TIMEOUT * HEARTBEAT_MIN_S * 1000)  # 200 ms
SEQ_EPOCH = 1_420_070_400 * 100_000  # 2015-01-01T00:00:00Z in 10 us units


def heartbeat_period(comms_timeout_ms: int | None) -> float:
    """Seconds between the host's heartbeats for a node with this comms timeout (0 or
    None: the node has none, or is too old to say)."""
    if not comms_timeout_ms:
        return HEARTBEAT_S
    return min(HEARTBEAT_S, max(HEARTBEAT_MIN_S, comms_timeout_ms / 1000 / HEARTBEATS_PER_TIMEOUT))


def comms_timeout_warning(comms_timeout_ms: object) -> str | None:
    """One line if a config's comms_timeout_ms is too short for our tools' heartbeat, else None."""
    if isinstance(comms_timeout_ms, int) and 0 < comms_timeout_ms < MIN_COMMS_TIMEOUT_MS:
        return (f"comms_timeout_ms {comms_timeout_ms} is shorter than {MIN_COMMS_TIMEOUT_MS} ms: "
                f"cyphy's tools send a heartbeat at most every {HEARTBEAT_MIN_S * 1000:.0f} ms and a "
                f"timeout needs {HEARTBEATS_PER_TIMEOUT} of them to survive a lost datagram, so the "
                f"node would go to fail-safe while a host is connected; use "
                f"{MIN_COMMS_TIMEOUT_MS} or more (or 0: no comms watchdog)")
    return None


class ProtocolError(Exception):
    """The node could not be reached or did not answer as the protocol says."""


FLOAT32_MAX = 3.4028234663852886e38   # a SET carries its value as a float32


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
    comms_timeout_ms: int | None = None  # the node's comms watchdog (0: none; None: not said)
    signals: list[str] = field(default_factory=list)  # telemetry's values after the loops

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
    duplicate_answers: int = 0  # the node's cached answer again, for a request we resent
    reopened: int = 0           # sessions opened again by themselves (no answer for a while)
    node: dict[str, int] = field(default_factory=dict)  # the node's counters (HEARTBEAT)


class Session:
    """A protocol session with one node. Use as a context manager, or call close()."""

    def __init__(self, link: Link, key: P.Key | None = None, node: int = P.NODE_ANY,
                 timeout: float = 2.0,
                 key_for: Callable[[str], Sequence[P.Key] | P.Key | None] | None = None,
                 unprovisioned: bool = False,
                 on_key: Callable[[str, P.Key], None] | None = None,
                 hub: Hub | None = None) -> None:
        """key: the node's key, given (a key file, $CYPHY_KEY...). Else key_for(name) gives
        the keys this host holds for the name in the node's HELLO (the key store: during a
        key change, the old and the new one); the one the HELLO's tag verifies with is used,
        and on_key(name, key) is told which (the store confirms a key change with it).

        An unauthenticated node (no key: plain CRC frames) is refused whenever this host
        holds a key for its name, from either source: anyone on the link can send such
        frames. unprovisioned=True accepts it anyway (a node not provisioned yet)."""
        self.link = link
        self.side = hostside.HostSide()   # key, EPOCH, the node's sequence: cyphy_node.hostside
        self.side.key = key
        self._given_key = key
        self.key_for = key_for
        self.unprovisioned = unprovisioned
        self.on_key = on_key
        self.node = node
        self.timeout = timeout
        self.stats = LinkStats()
        self.hello: Hello | None = None
        self._last_seq = 0
        self.heartbeats = True            # False: no HEARTBEATs (a host that went quiet, for tests)
        self._answers: deque = deque(maxlen=16)  # the node's last answers, as received
        self._srtt: float | None = None   # smoothed round trip of requests (s)
        self._rttvar = 0.0
        self._rto = 0.0                   # 0: no sample yet (wait timeout/3)
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue] = {}
        self._hello_wait: dict[bytes, queue.Queue] = {}
        self.telemetry: queue.Queue = queue.Queue(maxsize=100_000)
        self.events: deque = deque(maxlen=1000)
        self.node_stats: dict[str, Any] | None = None
        self.period_ms = 0
        # on_telemetry(samples): a TELEMETRY frame's samples, oldest first, in the hub's
        # thread; else (None) each sample goes to the telemetry queue
        self.on_telemetry: Callable[[list[dict]], None] | None = None
        self.last_heard = 0.0             # monotonic time of the node's last authentic frame
        self._closed = threading.Event()
        # One thread reads every session's link and sends their heartbeats (cyphy.hub)
        self._hub = hub or Hub.shared()
        self._beat_due: float | None = None
        self._beat_timer: Timer | None = None
        self._beat_sending = False
        self._watch = self._hub.watch(link, self._on_input)

    @property
    def key(self) -> P.Key | None:
        """The key of this session (the one the node's HELLO verified with)."""
        return self.side.key

    @property
    def _epoch(self) -> bytes:
        return self.side.epoch

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
        if self._beat_timer is not None:
            self._beat_timer.cancel()
        self._watch.close()
        self.link.close()

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
        for attempt in range(attempts):
            nonce = os.urandom(P.NONCE_LEN)
            q: queue.Queue = queue.Queue()
            self._hello_wait[nonce] = q
            frame = P.build(P.HOST | P.LONG, P.HELLO_REQ, self.node, self._next_seq(),
                            P.hello_req(nonce, P.HELLO_REQ_PAD))
            self.link.send(frame)
            sent = time.monotonic()
            try:
                h = q.get(timeout=self.timeout / attempts * 2)
            except queue.Empty:
                continue
            finally:
                self._hello_wait.pop(nonce, None)
            if isinstance(h, Exception):
                raise h
            if attempt == 0:  # the round trip seeds the resend timer (a full frame each way)
                self._rtt_sample(time.monotonic() - sent)
            self.hello = h
            self._hub.call_later(0, self._heartbeat)  # it follows this node's comms timeout
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
        if self.hello is None:
            frame = P.build(P.HOST | P.LONG, ftype, self.node, seq, payload, key=self.key,
                            epoch=self._epoch)
        else:
            frame = self.side.frame(ftype, seq, payload)
        self.link.send(frame)
        return seq

    def request(self, ftype: int, payload: bytes, retries: int = 6, timeout: float | None = None) -> bytes:
        """Send a request until the node ACKs it (the same frame each time, so the node
        applies it once); returns the ACK's result. CommandRejected on NACK.

        The first resend comes after the link's retransmission timeout (RTO: the smoothed
        round trip plus four deviations, as RFC 6298 computes it, at least MIN_RTO_S),
        each next one after twice the previous wait, at most timeout/3; the request gives
        up after retries x timeout/3 in all. A lost frame therefore costs about one round
        trip, not a third of the timeout."""
        if self.hello is None:
            self.open()
        per_try = (timeout or self.timeout) / 3
        for stale in range(3):
            seq = self._next_seq()
            q: queue.Queue = queue.Queue()
            self._waiting[seq] = q
            try:
                start = time.monotonic()
                deadline = start + retries * per_try
                wait = min(per_try, self._rto) if self._rto else per_try
                attempt = 0
                reopened = False
                while True:
                    self._send(ftype, payload, seq)
                    sent = time.monotonic()
                    if attempt:
                        self.stats.retries += 1
                    try:
                        kind, body = q.get(timeout=max(0.0, min(wait, deadline - sent)))
                    except queue.Empty:
                        attempt += 1
                        now = time.monotonic()
                        if now >= deadline:
                            raise ProtocolError(f"no answer from the node on {self.link.describe()} "
                                                f"after {attempt} tries") from None
                        wait = min(per_try, wait * 2)
                        if not reopened and now - start >= (deadline - start) / 2:
                            reopened = self._reopen_quietly()   # half the patience gone
                        continue
                    if attempt == 0:
                        self._rtt_sample(time.monotonic() - sent)  # Karn: only unambiguous ones
                    break
                if kind == P.ACK:
                    return body["result"]
                if body["reason"] == P.R_STALE and stale < 2:
                    continue  # another host's request overtook ours: again, fresh SEQ
                raise CommandRejected(body["reason"], body["text"])
            finally:
                self._waiting.pop(seq, None)
        raise ProtocolError("the node kept answering 'stale sequence number'")

    def _reopen_quietly(self) -> bool:
        """The session may be gone (the node reset, the session expired during a break on
        the line): say HELLO again and go on with the same request. The node carries an
        older session's answers over to the new one of the same host, so a request that
        was applied is answered, not applied again. True once tried."""
        self.stats.reopened += 1
        try:
            self.open(attempts=2)
        except ProtocolError:
            pass
        return True

    def _rtt_sample(self, r: float) -> None:
        # RFC 6298, 2.2 and 2.3 (alpha 1/8, beta 1/4), with our own floor: these links are
        # a LAN or a serial line, and a resend is answered from the node's cache.
        if self._srtt is None:
            self._srtt, self._rttvar = r, r / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - r)
            self._srtt = 0.875 * self._srtt + 0.125 * r
        self._rto = max(MIN_RTO_S, self._srtt + 4 * self._rttvar)

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
        self.set_many([(loop, key, value)])

    def set_many(self, assignments: Sequence[tuple[str, str, float | str]],
                 save: bool = False) -> None:
        """[(loop, key, value), ...] in one SET: the node applies all of them between two
        control passes, or none (CommandRejected names the one refused). save: the node
        also persists them (setpoints and gains: in force after a reboot, over the
        config's)."""
        if not 1 <= len(assignments) <= P.MAX_SETS:
            raise CommandRejected(P.R_OUT_OF_RANGE, f"{len(assignments)} assignments: a node "
                                  f"takes 1 to {P.MAX_SETS} at once (nothing was applied)")
        sets = []
        for loop, key, value in assignments:
            try:
                sets.append(self._assignment(loop, key, value))
            except CommandRejected as e:
                more = " (nothing was applied)" if len(assignments) > 1 else ""
                raise CommandRejected(e.reason, f"{loop}.{key} = {value}: {e.text}{more}") from None
        self.command(P.cmd_set_many(sets, save))

    def set_param(self, name: str, value: float) -> None:
        """A block's parameter, "block.param" (protocol 1.2's SET_PARAM)."""
        if not (isinstance(value, (int, float)) and math.isfinite(value)
                and abs(value) <= FLOAT32_MAX):
            raise CommandRejected(P.R_OUT_OF_RANGE, f"{name} = {value}: not a finite number")
        self.command(P.cmd_set_param(name, float(value)))

    def tune_start(self, loop: str, amplitude: float = 0.0, hysteresis: float = 0.0,
                   rule: str = "auto", timeout_s: float = 0, apply: bool = True) -> None:
        """Start a relay autotune of loop, owned by this session (docs/protocol.md, TUNE)."""
        if rule not in P.TUNE_RULES:
            raise CommandRejected(P.R_OUT_OF_RANGE, f"no rule {rule!r}; rules: " + ", ".join(P.TUNE_RULES))
        for what, v in (("amplitude", amplitude), ("hysteresis", hysteresis)):
            if not (math.isfinite(v) and 0 <= v <= FLOAT32_MAX):
                raise CommandRejected(P.R_OUT_OF_RANGE, f"{what} must be a finite number >= 0")
        if not 0 <= timeout_s <= 0xFFFF:
            raise CommandRejected(P.R_OUT_OF_RANGE, "timeout must be 0..65535 s")
        self.command(P.cmd_tune_start(self.loop_index(loop), float(amplitude), float(hysteresis),
                                      P.TUNE_RULES.index(rule), int(timeout_s), apply))

    def tune_abort(self, loop: str) -> None:
        self.command(P.cmd_tune(P.TUNE_ABORT, self.loop_index(loop)))

    def tune_forget(self, loop: str) -> None:
        self.command(P.cmd_tune(P.TUNE_FORGET, self.loop_index(loop)))

    def _assignment(self, loop: str, key: str, value: float | str) -> tuple[int, int, float]:
        if key not in P.KEYS:
            raise CommandRejected(P.R_UNKNOWN_TARGET, f"no key {key!r}; keys: " + ", ".join(P.KEYS))
        if key == "mode":
            if value not in ("auto", "manual"):
                raise CommandRejected(P.R_OUT_OF_RANGE, 'mode must be "auto" or "manual"')
            value = 1.0 if value == "auto" else 0.0
        elif isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise CommandRejected(P.R_OUT_OF_RANGE, f"{key} must be a finite number")
        return self.loop_index(loop), P.KEYS.index(key), float(value)

    def read(self, path: str) -> Any:
        """A parameter's value ("loop.key", a loop name, "state", "stats", "faults", "info")."""
        import json

        def bad(why: str) -> ProtocolError:
            return ProtocolError(f"the node's READ answer for {path!r} is malformed: {why}")

        text = bytearray()
        total: int | None = None
        while True:
            r = self.request(P.READ, P.read_req(path, len(text)))
            if len(r) < 2:
                raise bad(f"too short ({len(r)} bytes, no total length)")
            t = P.get_u16(r, 0)
            if total is None:
                total = t
            elif t != total:
                raise bad(f"its total changed between pieces ({total}, then {t} bytes)")
            text += r[2:]
            if len(text) > total:
                raise bad(f"{len(text)} bytes of text, longer than the {total} it announced")
            if len(text) == total:
                break
            if len(r) == 2:
                raise bad(f"truncated: {len(text)} of {total} bytes, then an empty piece")
        try:
            return json.loads(bytes(text).decode("utf-8"))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise bad(f"not valid JSON ({e})") from None

    def subscribe(self, period_ms: int, batch: int = 1, stats_s: int = 1) -> int:
        r = self.command(P.cmd_subscribe(period_ms, batch, stats_s))
        if len(r) < 2:
            raise ProtocolError(f"the node's answer to SUBSCRIBE is malformed: {len(r)} bytes, "
                                f"no telemetry period")
        self.period_ms = P.get_u16(r, 0)
        return self.period_ms

    def sync_time(self) -> int:
        """Tell the node the host's time; returns the node's ticks_ms at that moment."""
        r = self.request(P.TIME, P.time_req(time.time_ns() // 1_000_000))
        if len(r) < 4:
            raise ProtocolError(f"the node's answer to TIME is malformed: {len(r)} bytes, no ticks_ms")
        return P.get_u32(r, 0)

    def samples(self, timeout: float = 5.0) -> Iterator[dict]:
        """Telemetry samples as they come: {"t_ms", "loops": {name: {setpoint, ...}}}."""
        while True:
            try:
                yield self.telemetry.get(timeout=timeout)
            except queue.Empty:
                raise ProtocolError(f"no telemetry for {timeout} s") from None

    # ---- receiving (the hub's thread) ----

    def _on_input(self, data: bytes) -> None:
        if self._closed.is_set():
            return
        try:
            self._on_frame(data)
        except Exception:  # noqa: BLE001 - P.ProtoError, or anything a bad frame causes:
            self.stats.malformed += 1  # the reader must outlive any frame

    def _on_frame(self, data: bytes) -> None:
        f = P.parse(data)
        if f.from_host:
            return  # our own or another host's frame (a shared bus, a UDP broadcast)
        if f.type == P.HELLO:
            self._on_hello(f)
            return
        if self.hello is None:
            return
        gap = self.side.accept(f)
        if gap == hostside.NOT_OURS:
            return
        if gap == hostside.BAD_TAG:
            self.stats.bad_tag += 1
            return
        if gap == hostside.REPLAYED:
            if data in self._answers:
                self.stats.duplicate_answers += 1  # we resent a request: expected
            else:
                self.stats.replayed += 1
            return
        if f.type in (P.ACK, P.NACK):
            self._answers.append(bytes(data))
        self.last_heard = time.monotonic()
        self.stats.lost += gap   # -1: a late frame was not lost after all
        self.stats.frames += 1
        body = P.parse_payload(f.type, f.payload, len(self.hello.loops),
                               len(self.hello.signals)) if f.type in P.TYPE_NAMES else None
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
        name = body["name"]
        stored = self._given_key is None and self.key_for is not None
        if self._given_key is not None:
            held = [self._given_key]
        elif self.key_for is not None:
            found = self.key_for(name)
            held = [] if found is None else [found] if isinstance(found, P.Key) else list(found)
        else:
            held = []
        key, why = hostside.check_hello(f, body, held, self.unprovisioned)
        if why is not None:
            q.put(ProtocolError(why))
            return
        self.side.start(f, body, key)
        if key is not None and stored and self.on_key is not None:
            try:
                self.on_key(name, key)
            except Exception:  # noqa: BLE001 - bookkeeping; the session works either way
                pass
        q.put(Hello(f.node, name, body["board"], body["firmware"], body["uid"],
                    body["loops"], body["caps"], True, body.get("comms_timeout_ms"),
                    body.get("signals") or []))

    def _on_telemetry(self, body: dict) -> None:
        assert self.hello is not None
        names = self.hello.loops
        step = self.period_ms
        samples = []
        for i, s in enumerate(body["samples"]):
            loops = {}
            for name, (sp, y, u, st) in zip(names, s):
                loops[name] = {"setpoint": sp / 1000, "measurement": y / 1000, "output": u / 1000,
                               "status": st}
            sample = {"t_ms": (body["t_ms"] + i * step) & 0x3FFFFFFF, "loops": loops}
            if self.hello.signals:      # blocks and device channels, by name
                sample["signals"] = {n: v / 1000 for n, v in zip(self.hello.signals,
                                                                  body["signals"][i])}
            samples.append(sample)
        listener = self.on_telemetry
        if listener is not None:
            try:
                listener(samples)
            except Exception:  # noqa: BLE001 - the listener's bug is not a bad frame
                log.exception("in on_telemetry of the session on %s", self.link.describe())
            return
        for sample in samples:
            try:
                self.telemetry.put_nowait(sample)
            except queue.Full:
                pass

    def _heartbeat(self) -> None:
        """A HEARTBEAT every heartbeat_period(the node's comms timeout) while a session is
        open: one timer in the hub, moved on each time (no burst after a stall)."""
        if self._beat_timer is not None:
            self._beat_timer.cancel()
            self._beat_timer = None
        if self._closed.is_set():
            return
        h = self.hello
        if h is None or not self.heartbeats:
            self._beat_due = None
            self._beat_timer = self._hub.call_later(0.5, self._heartbeat)
            return
        period = heartbeat_period(h.comms_timeout_ms)
        now = time.monotonic()
        due = self._beat_due
        if due is None or due > now + period:
            due = now + period
        if now >= due:
            if self.link_sends_block:
                if not self._beat_sending:   # one at a time: a serial link may be entering
                    self._beat_sending = True
                    self._hub.submit(self._send_heartbeat)
            else:
                self._send_heartbeat()
            due = due + period if due + period > now else now + period
        self._beat_due = due
        self._beat_timer = self._hub.call_later(due - now, self._heartbeat)

    @property
    def link_sends_block(self) -> bool:
        return getattr(self.link, "sends_block", True)

    def _send_heartbeat(self) -> None:
        try:
            if self.hello is not None and not self._closed.is_set():
                self._send(P.HEARTBEAT, b"")
        except Exception:  # noqa: BLE001 - OSError, LinkError: the next one tries again
            pass
        finally:
            self._beat_sending = False


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
