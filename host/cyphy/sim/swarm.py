"""A swarm: N synthetic cyphy nodes in one process, for scale tests (docs/fleet.md, "The
swarm: synthetic nodes for scale tests").

Each node speaks the real protocol over UDP from an address of its own: the firmware's own
endpoint (`cyphy_node.comms.Endpoint`, with `cyphy_node.requests` and `cyphy_node.proto`)
answers HELLO_REQ, keeps sessions, sequence numbers, the replay window and the reply cache,
subscriptions, heartbeats, STATS and the session timeout, exactly as on a chip. What is
synthetic is the node under it: one PID-like loop, `oven`, on a first-order plant (the
values move: the plant drifts and its sensor is noisy), at `rate_hz`.

    with Swarm(500, key=raw_key) as swarm:          # or key=None: unprovisioned nodes
        urls = swarm.urls                           # ["udp://127.252.0.1", ...]
        ...
        swarm.nodes[0].sets_applied                 # per-node counters

    python -m cyphy.sim.swarm --nodes 500 --key-file KEY [--port 5477] [--base-ip IP]

One thread runs every node: a selector over the nodes' sockets (one per node, bound to the
node's own loopback address, 127.0.0.0/8 being all local on Linux) and the nodes' control
passes, spread evenly over the loop period.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.util
import ipaddress
import json
import os
import random
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence

from cyphy_node import fixed
from cyphy_node import proto as P

__all__ = ["Swarm", "SwarmNode", "SwarmError", "main"]

AUTO_NETS = ("127.252.", "127.253.", "127.254.")  # sim nodes use 127.2. .. 127.251. (nodes.py)
MIN_FDS_SPARE = 64
MAX_NODES = 50_000               # one socket each; a free /16-sized block of addresses
REALTIME_NICE = -10              # as a sim node's (cyphy.sim.supervisor.realtime_priority)


class SwarmError(Exception):
    """A swarm that cannot start as asked; the message says what to do."""


# ---------------------------------------------------------------- the firmware's endpoint

class _Ticks:
    """MicroPython's time.ticks_ms/ticks_add/ticks_diff as on an ESP32 (ticks_ms wraps at
    2**30), for the firmware modules this swarm runs on CPython."""

    PERIOD = 1 << 30
    HALF = PERIOD // 2

    @staticmethod
    def ticks_ms() -> int:
        return (time.monotonic_ns() // 1_000_000) & (_Ticks.PERIOD - 1)

    @staticmethod
    def ticks_add(t: int, d: int) -> int:
        return (t + d) & (_Ticks.PERIOD - 1)

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        return ((a - b + _Ticks.HALF) & (_Ticks.PERIOD - 1)) - _Ticks.HALF


def _private(name: str, **names: Any) -> ModuleType:
    """A private copy of cyphy_node.<name> whose globals `names` replace (its `time`: the
    firmware calls time.ticks_ms, which CPython's time module lacks). Not put in
    sys.modules: nothing else in the process sees a changed module."""
    spec = importlib.util.find_spec(f"cyphy_node.{name}")
    if spec is None or spec.loader is None:
        raise ImportError(f"cyphy_node.{name} not found")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.__dict__.update(names)
    return mod


_requests = _private("requests", time=_Ticks)


class _Requests:
    """cyphy_node.requests for a synthetic node: the same SET, SUBSCRIBE, TIME and READ;
    what a synthetic node has no part for (a config file, a reset, a relay autotune) is
    refused as "not possible now", nothing applied."""

    NOT_HERE = {P.CMD_CONFIG: "a config patch", P.CMD_REBOOT: "a reboot",
                P.CMD_TUNE: "an autotune"}

    @staticmethod
    def apply(ep: Any, s: Any, ftype: int, body: dict) -> tuple[int, bytes]:
        if ftype == P.COMMAND and body["cmd"] in _Requests.NOT_HERE:
            raise P.ProtoError(f"{_Requests.NOT_HERE[body['cmd']]} is not possible on a "
                               f"synthetic swarm node", P.R_STATE)
        return _requests.apply(ep, s, ftype, body)


_comms = _private("comms", time=_Ticks, R=_Requests)


class _FastKey(P.Key):
    """proto.Key with the same tags, from SHA-256 states of the two pads hashed once
    (CPython's hashlib copies a state; 0.86 us a tag instead of 1.2): the firmware's Key
    hashes both pads again for every frame (MicroPython's sha256 cannot be copied)."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self._inner = hashlib.sha256(self._ipad)
        self._outer = hashlib.sha256(self._opad)

    def tag(self, epoch: bytes, roc: int, body: bytes) -> bytes:
        h = self._inner.copy()
        h.update(epoch)
        h.update(_ROC0 if roc == 0 else bytes((roc & 0xFF, (roc >> 8) & 0xFF)))
        h.update(body)
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()[:P.TAG_LEN]


_ROC0 = bytes(2)


# ---------------------------------------------------------------- the synthetic node

F_COMMS = 4                      # a loop fault bit (cyphy_node.node.F_COMMS)
_SAMPLE = struct.Struct("<iiii")
_HEADER = struct.Struct("<BBBH")           # VF TYPE NODE SEQ: a node's short header
_VF_AUTH = (P.VERSION << 5) | P.AUTH


class _Channel:
    """What the endpoint and a SET read of a channel: name, units and range (milli-units)."""

    def __init__(self, name: str, units: str, lo: float, hi: float, failsafe: float = 0.0) -> None:
        self.name = name
        self.units = units
        self.lo = self.vmin = round(lo * 1000)
        self.hi = self.vmax = round(hi * 1000)
        self.failsafe = round(failsafe * 1000)


class _Pid:
    """The gains and setpoint (milli-units, as the firmware's PID keeps it)."""

    def __init__(self, kp: float, ki: float, kd: float, setpoint: float) -> None:
        self.kp, self.ki, self.kd = kp, ki, kd
        self.setpoint = round(setpoint * 1000)

    def get_tunings(self) -> tuple[float, float, float]:
        return (self.kp, self.ki, self.kd)


class _Loop:
    """The loop `oven` of host/cyphy/hil/defaults.py's THERMAL_CONFIG (temp 10..149 degC,
    heater 0..100 %, alarms low 12 / high 90), on a first-order plant: gain 1.2 degC per %,
    time constant 30 s, ambient 20 degC drifting +-2 degC, sensor noise +-0.05 degC."""

    SRC_KEYS = ("setpoint", "kp", "ki", "kd")
    SOURCES = ("config", "tune", "saved", "runtime")
    AMBIENT, GAIN, TAU_S = 20.0, 1.2, 30.0
    LOW, HIGH, HYST = 12.0, 90.0, 1.0

    def __init__(self, rate_hz: float, setpoint: float, rng: random.Random) -> None:
        self.name = "oven"
        self.rate_hz = rate_hz
        self.period_us = round(1_000_000 / rate_hz)
        self.inp = _Channel("temp", "degC", 10, 149)
        self.act = _Channel("heater", "%", 0, 100, failsafe=0)
        self.pid: _Pid | None = _Pid(4.9, 0.034, 0.0, setpoint)
        self.onoff = None
        self.src = bytearray(4)
        self.rng = rng
        self.temp = self.AMBIENT + rng.uniform(-1, 1)   # the plant's state, degC
        self.phase = rng.uniform(0, 6.283)
        self.integral = 0.0
        self.last_y = self.temp
        self.y = round(self.temp * 1000)   # milli-units, as the firmware keeps them
        self.u = 0
        self.alarms = 0
        self.fault = 0
        self.auto = True
        self.manual_out = 0
        self.tuner = None
        self.tune_owner = None
        self.ticks = 0

    def step(self, dt: float, t: float) -> None:
        self.ticks += 1
        amb = self.AMBIENT + 2.0 * ((t / 60.0 + self.phase) % 2.0 - 1.0)  # a slow sawtooth
        temp = self.temp + (amb + self.GAIN * self.u / 1000 - self.temp) * dt / self.TAU_S
        self.temp = temp
        y = temp + self.rng.random() * 0.1 - 0.05       # the sensor's noise
        self.y = round(y * 1000)
        a = self.alarms
        if a:
            a = (1 if a & 1 and y < self.LOW + self.HYST else 0) | \
                (2 if a & 2 and y > self.HIGH - self.HYST else 0)
        if y < self.LOW:
            a |= 1
        elif y > self.HIGH:
            a |= 2
        self.alarms = a
        if self.fault:
            out = self.act.failsafe / 1000
        elif self.auto:
            pid = self.pid
            assert pid is not None
            e = pid.setpoint / 1000 - y
            i = self.integral + pid.ki * e * dt
            self.integral = i = 0.0 if i < 0.0 else 100.0 if i > 100.0 else i
            out = pid.kp * e + i + pid.kd * (self.last_y - y) / dt
            out = 0.0 if out < 0.0 else 100.0 if out > 100.0 else out
        else:
            out = self.manual_out / 1000
        self.last_y = y
        self.u = round(out * 1000)

    # ---- what the firmware's ControlLoop offers the endpoint and the requests ----

    @property
    def mode(self) -> str:
        return "failsafe" if self.fault else ("auto" if self.auto else "manual")

    def prepare(self, key: str, value: Any, gains: dict) -> tuple[Any, tuple]:
        # cyphy_node.node.ControlLoop.prepare: checked now, applied later, cannot fail then
        if key in ("setpoint", "output"):
            sp = key == "setpoint"
            ch = self.inp if sp else self.act
            lo, hi = (ch.vmin, ch.vmax) if sp else (ch.lo, ch.hi)
            try:
                m = fixed.to_fixed(value, lo, hi)
            except ValueError:
                raise ValueError('%s is outside %s..%s %s, the %s of channel "%s" in the config'
                                 % (value, lo / 1000, hi / 1000, ch.units,
                                    "valid range" if sp else "range", ch.name)) from None
            return (self._apply_setpoint if sp else self._apply_output), (m,)
        if key == "mode":
            if value not in ("auto", "manual"):
                raise ValueError('mode must be "auto" or "manual"')
            return self._apply_mode, (value,)
        if key in ("kp", "ki", "kd"):
            assert self.pid is not None
            g = gains.get(self) or list(self.pid.get_tunings())
            g[("kp", "ki", "kd").index(key)] = float(value)
            if min(g) < 0.0:
                raise ValueError('gains must be >= 0 (for reverse action: "direction": '
                                 '"reverse" in the loop\'s controller config)')
            gains[self] = g
            return self._apply_gains, tuple(g)
        raise KeyError(self.name + "." + key)

    def _apply_setpoint(self, m: int) -> None:
        assert self.pid is not None
        self.pid.setpoint = m

    def _apply_output(self, m: int) -> None:
        self.auto = False
        self.manual_out = m

    def _apply_mode(self, m: str) -> None:
        if self.auto and m == "manual":
            self.manual_out = self.u          # to manual: held where it is (bumpless)
        elif not self.auto and m == "auto":
            self.integral = self.u / 1000     # and back
        self.auto = m == "auto"

    def _apply_gains(self, kp: float, ki: float, kd: float) -> None:
        assert self.pid is not None
        self.pid.kp, self.pid.ki, self.pid.kd = kp, ki, kd

    def state(self) -> dict[str, Any]:
        assert self.pid is not None
        d: dict[str, Any] = {
            "setpoint": self.pid.setpoint / 1000, "measurement": self.y / 1000,
            "output": self.u / 1000, "mode": self.mode,
            "alarms": [n for b, n in ((1, "low"), (2, "high")) if self.alarms & b],
            "faults": ["comms"] if self.fault & F_COMMS else [],
            "ticks": self.ticks, "working_setpoint": self.pid.setpoint / 1000}
        d["kp"], d["ki"], d["kd"] = self.pid.get_tunings()
        d["sources"] = {k: self.SOURCES[self.src[i]] for i, k in enumerate(self.SRC_KEYS)}
        return d


class _Board:
    name = "swarm"
    mcu = "synthetic"

    def __init__(self, uid: bytes) -> None:
        self._uid = uid

    def unique_id(self) -> bytes:
        return self._uid


class _Log:
    """The fault log's part the endpoint and TIME use (nothing is written: no flash)."""

    def __init__(self) -> None:
        self.listener = None
        self.clock: tuple[int, int] | None = None

    def clock_set(self, host_ms: int, ticks: int) -> None:
        self.clock = (host_ms, ticks)

    def records(self) -> list:
        return []


class _Node:
    """What comms.Endpoint and cyphy_node.requests use of cyphy_node.node.Node."""

    def __init__(self, rate_hz: float, setpoint: float, uid: bytes, comms_timeout_ms: int,
                 rng: random.Random) -> None:
        self.loops = [_Loop(rate_hz, setpoint, rng)]
        self.board = _Board(uid)
        self.log = _Log()
        self.comms_timeout_ms = comms_timeout_ms
        self.comms_errors = 0
        self.comms_last_error: BaseException | None = None
        self._tuning = 0
        self._touched = _Ticks.ticks_ms()
        self._comms_lost = False
        self.sets_applied = 0        # SET / SET_SAVE requests applied
        self.skipped = 0             # passes the swarm's thread was too late to run
        self.jitter = _Timing()      # the swarm's, shared by its nodes (Swarm sets them)
        self.compute = _Timing()

    def signals(self) -> list:
        """No blocks or device channels: telemetry carries the loop only (protocol 1.1)."""
        return []

    def touch(self, t: int | None = None) -> None:
        if t is None:
            t = _Ticks.ticks_ms()
        if _Ticks.ticks_diff(t, self._touched) > 0:
            self._touched = t

    def comms_check(self, now_ms: int) -> None:
        # cyphy_node.node.Node._comms: outputs to fail-safe after comms_timeout_ms of silence
        t = self.comms_timeout_ms
        if not t:
            return
        lost = _Ticks.ticks_diff(now_ms, self._touched) >= t
        if lost != self._comms_lost:
            self._comms_lost = lost
            for lp in self.loops:
                lp.fault = (lp.fault | F_COMMS) if lost else (lp.fault & ~F_COMMS)

    def running(self) -> bool:
        return True

    def more_service(self) -> None:
        pass

    def loop(self, name: str) -> _Loop:
        for lp in self.loops:
            if lp.name == name:
                return lp
        raise KeyError(name)

    def set_many(self, items: Iterable[tuple[str, Any]], save: bool = False) -> None:
        # cyphy_node.node.Node._set_many: every assignment checked, then all applied
        items = list(items)
        plan = []
        gains: dict = {}
        marks = []
        for path, value in items:
            name, _, key = path.partition(".")
            try:
                lp = self.loop(name)
                plan.append(lp.prepare(key, value, gains))
                if save and key not in lp.SRC_KEYS:
                    raise ValueError("%s is not persisted: --save keeps setpoints and gains" % key)
            except ValueError as e:
                raise ValueError("%s = %s refused%s: %s" % (
                    path, value, ", nothing was applied" if len(items) > 1 else "", e)) from None
            if key in lp.SRC_KEYS:
                marks.append((lp, key))
        for fn, args in plan:
            fn(*args)
        for lp, key in marks:
            lp.src[lp.SRC_KEYS.index(key)] = 2 if save else 3
        self.sets_applied += 1

    def get(self, path: str) -> Any:
        if "." not in path:
            return self.loop(path).state()
        name, attr = path.split(".", 1)
        return self.loop(name).state()[attr]

    def state(self) -> dict[str, Any]:
        return {lp.name: lp.state() for lp in self.loops}

    def stats(self) -> dict[str, Any]:
        d = {}
        for lp in self.loops:
            st: dict[str, Any] = {"name": lp.name, "rate_hz": lp.rate_hz,
                                  "period_us": lp.period_us, "ticks": lp.ticks,
                                  "overruns": 0, "skipped": self.skipped}
            st.update(self.jitter.stats("jitter"))
            st.update(self.compute.stats("compute"))
            d[lp.name] = st
        return d

    def faults(self) -> list:
        return []

    def clear(self) -> None:
        pass


class _Timing:
    """min/max/mean/last and a p99 (the upper end of its power-of-two bucket) of a time
    measured in us: how late a slot of passes started (jitter), or a pass's share of its
    slot's time (compute). One for the swarm, measured once per slot: every node reports
    the swarm's."""

    def __init__(self) -> None:
        self.n = 0
        self.sum = 0
        self.min = 0
        self.max = 0
        self.last = 0
        self.buckets = [0] * 32

    def add(self, us: int) -> None:
        if self.n == 0 or us < self.min:
            self.min = us
        if us > self.max:
            self.max = us
        self.n += 1
        self.sum += us
        self.last = us
        self.buckets[min(31, us.bit_length())] += 1

    def stats(self, prefix: str) -> dict[str, int | None]:
        n = self.n
        p99 = None
        if n:
            need = n - n // 100
            seen = 0
            for i, c in enumerate(self.buckets):
                seen += c
                if seen >= need:
                    p99 = min(self.max, (1 << i) - 1) if i else 0
                    break
        d = {f"{prefix}_min_us": self.min if n else None, f"{prefix}_max_us": self.max if n else None,
             f"{prefix}_mean_us": (2 * self.sum + n) // (2 * n) if n else None,
             f"{prefix}_last_us": self.last if n else None}
        if prefix == "jitter":
            d["jitter_p99_us"] = p99
        return d


class _Port:
    """The node's UDP port, as cyphy_node.udp.UdpPort is to the endpoint: the swarm's thread
    reads the socket and hands each datagram to Endpoint.receive."""

    udp = True
    backlog = False

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.arrived: int | None = None
        self.heard = 0
        self.sent = 0
        self.send_errors = 0

    def send(self, frame: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(frame, addr)
            self.sent += 1
        except OSError:
            self.send_errors += 1

    def poll(self, ep: Any) -> None:
        pass

    def ended(self, s: Any) -> None:
        pass


class _Endpoint(_comms.Endpoint):  # type: ignore[misc, name-defined]
    """The firmware's endpoint. Two of its byte-by-byte writers are replaced by struct
    (the same bytes, a fraction of the time on CPython; tests/fleet/test_swarm.py compares
    them): the sample writer, and the sealing of an authenticated frame."""

    def _put_all(self, o: int) -> None:
        for lp in self.loops:
            _SAMPLE.pack_into(self._fill, o, lp.pid.setpoint, lp.y, lp.u, P.loop_status(lp))
            o += 16

    def _seal(self, s: Any, ftype: int, payload: bytes) -> bytes:
        key = self.key
        if key is None:
            return super()._seal(s, ftype, payload)
        m = len(payload)
        if P.HDR_SHORT + m + P.TAG_LEN > P.MAX_FRAME:
            raise P.ProtoError("a %d-byte payload does not fit a frame" % m, P.R_INTERNAL)
        body = _HEADER.pack(_VF_AUTH, ftype, self.node_id, s.seq) + payload
        frame = body + key.tag(s.epoch, s.roc, body)
        s.seq += 1                   # as comms.Endpoint._seal
        if s.seq > 0xFFFF:
            s.seq = 0
            s.roc += 1
            if s.roc > 0xFFFF:
                s.roc = 0
                s.epoch = _comms._urandom(4)
        return frame


class SwarmNode:
    """One synthetic node: its address and URL, and counters."""

    def __init__(self, index: int, name: str, node_id: int, addr: tuple[str, int],
                 sock: socket.socket, key: P.Key | None, rate_hz: float,
                 comms_timeout_ms: int, seed: int) -> None:
        self.index = index
        self.name = name
        self.node_id = node_id
        self.addr = addr
        rng = random.Random(seed)
        uid = b"\x02\xc9" + ipaddress.IPv4Address(addr[0]).packed     # 6 bytes, as a MAC
        self.node = _Node(rate_hz, 40.0 + rng.randrange(41), uid, comms_timeout_ms, rng)
        self.port = _Port(sock)
        self.endpoint = _Endpoint(self.node, key, node_id, name, "swarm-" + _firmware_version())
        self.endpoint.caps &= ~(P.CAP_SERIAL | P.CAP_AUTOTUNE | P.CAP_CONFIG)
        self.endpoint.add_port(self.port)

    @property
    def url(self) -> str:
        ip, port = self.addr
        return f"udp://{ip}" + ("" if port == P.UDP_PORT else f":{port}")

    @property
    def frames_sent(self) -> int:
        return self.port.sent

    @property
    def sets_applied(self) -> int:
        """SET and SET_SAVE requests applied (each once, whatever the resends)."""
        return self.node.sets_applied

    @property
    def counters(self) -> dict[str, int]:
        """The node's protocol counters (HEARTBEAT's): bad_frame, bad_tag, stale, ..."""
        return self.endpoint.counters_dict()

    @property
    def sessions(self) -> int:
        return len(self.endpoint.sessions)

    def state(self) -> dict[str, Any]:
        return self.node.state()


def _firmware_version() -> str:
    import cyphy_node

    return getattr(cyphy_node, "VERSION", "?")


# ---------------------------------------------------------------- the swarm

def _addresses(base: str, n: int) -> list[str]:
    """n loopback addresses from base on, skipping x.x.x.0 and x.x.x.255."""
    try:
        a = int(ipaddress.IPv4Address(base))
    except ValueError:
        raise SwarmError(f"base IP {base!r} is not an IPv4 address") from None
    out = []
    while len(out) < n:
        ip = ipaddress.IPv4Address(a)
        if not ip.is_loopback:
            raise SwarmError(f"{n} addresses from {base} leave 127.0.0.0/8: give a lower "
                             f"--base-ip")
        if a & 0xFF not in (0, 255):
            out.append(str(ip))
        a += 1
    return out


def _ensure_fds(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + MIN_FDS_SPARE + 256
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise SwarmError(f"{n} nodes need {want} file descriptors (one socket each); this "
                         f"process may open {hard} (ulimit -Hn): raise it, or run fewer nodes "
                         f"per swarm")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Swarm:
    """N synthetic cyphy nodes in one thread (see the module's doc).

    key: the nodes' key (bytes, 16 to 64; every node has the same one), or None for
    unprovisioned nodes (CRC frames). rate_hz: the loop rate (and so the fastest telemetry
    a node grants). port: the UDP port of every node; each node has its own loopback IP,
    from base_ip on (None: a free block of 127.252.0.0/14, outside the sim nodes'
    addresses). names: the nodes' names (default PREFIX-0001...); node ids run 1..254 and
    wrap. comms_timeout_ms: each node's comms watchdog (0: none; in its HELLO). realtime:
    run the swarm's thread at nice -10 where allowed, as sim nodes run (.realtime says
    whether it does). seed: the plants' random numbers."""

    def __init__(self, n: int, key: bytes | None = None, rate_hz: float = 10.0,
                 port: int = P.UDP_PORT, base_ip: str | None = None,
                 names: Sequence[str] | None = None, name_prefix: str = "swarm",
                 comms_timeout_ms: int = 0, seed: int = 0, realtime: bool = True) -> None:
        if not isinstance(n, int) or not 1 <= n <= MAX_NODES:
            raise SwarmError(f"a swarm has 1 to {MAX_NODES} nodes (got {n!r})")
        if not 0.1 <= rate_hz <= 1000:
            raise SwarmError(f"rate_hz {rate_hz} is outside 0.1..1000")
        if not 1 <= port <= 65535:
            raise SwarmError(f"port {port} is outside 1..65535")
        if names is not None and len(names) != n:
            raise SwarmError(f"{len(names)} names for {n} nodes")
        if not 0 <= comms_timeout_ms <= 0xFFFFFFFF:
            raise SwarmError(f"comms_timeout_ms {comms_timeout_ms} is outside 0..2**32-1")
        try:
            self.key = None if key is None else _FastKey(bytes(key))
        except (ValueError, TypeError) as e:
            raise SwarmError(f"key: {e}") from None
        self.n = n
        self.rate_hz = rate_hz
        self.port = port
        self.base_ip = base_ip
        width = max(4, len(str(n)))
        self.names = list(names) if names is not None else \
            [f"{name_prefix}-{i + 1:0{width}d}" for i in range(n)]
        for nm in self.names:
            if not nm or len(nm.encode()) > 255:
                raise SwarmError(f"node name {nm!r}: 1 to 255 bytes")
        self.comms_timeout_ms = comms_timeout_ms
        self.seed = seed
        self.realtime = realtime     # the thread at nice REALTIME_NICE (False: not allowed here)
        self.nodes: list[SwarmNode] = []
        self.skipped = 0             # node passes dropped because the thread fell a period behind
        self._cpu_at_end: float | None = None
        self.started_at = 0.0
        self._sel: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.jitter = _Timing()      # per slot of passes: how late it started (us)
        self.compute = _Timing()     # per pass: its share of its slot's time (us)

    # ---- lifecycle ----

    def __enter__(self) -> "Swarm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Swarm":
        if self._thread is not None:
            return self
        if self.nodes:
            raise SwarmError("a swarm starts once: make a new Swarm")
        _ensure_fds(self.n)
        socks, ips = self._bind()
        self._sel = selectors.DefaultSelector()
        for i, (s, ip) in enumerate(zip(socks, ips)):
            node = SwarmNode(i, self.names[i], i % 254 + 1, (ip, self.port), s, self.key,
                             self.rate_hz, self.comms_timeout_ms, self.seed * 1_000_003 + i)
            node.node.jitter = self.jitter
            node.node.compute = self.compute
            self.nodes.append(node)
            self._sel.register(s, selectors.EVENT_READ, node)
        self._stop.clear()
        self._cpu_at_end = None
        self._thread = threading.Thread(target=self._run, name=f"swarm of {self.n}", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self.error is not None:
            self.stop()
            raise SwarmError(f"the swarm's thread failed: {self.error!r}")
        return self

    def stop(self) -> None:
        t = self._thread
        if t is None:
            return
        self._stop.set()
        t.join(timeout=5)
        self._thread = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        for node in self.nodes:
            node.port.sock.close()

    def _bind(self) -> tuple[list[socket.socket], list[str]]:
        tries = 1 if self.base_ip else 20
        rnd = random.Random()
        last: OSError | None = None
        for _ in range(tries):
            base = self.base_ip or \
                f"{rnd.choice(AUTO_NETS)}{rnd.randrange(0, max(1, 255 - self.n // 254))}.1"
            ips = _addresses(base, self.n)
            socks: list[socket.socket] = []
            try:
                for ip in ips:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.setblocking(False)
                    s.bind((ip, self.port))
                self.base_ip = base
                return socks, ips
            except OSError as e:
                for s in socks:
                    s.close()
                last = e
                if e.errno != errno.EADDRINUSE:
                    break
        where = f"from {self.base_ip}" if self.base_ip else "in any free block of 127.252.0.0/14"
        raise SwarmError(f"cannot bind {self.n} nodes' UDP port {self.port} {where}: "
                         f"{last.strerror if last else '?'}") from None

    # ---- the thread ----

    def _run(self) -> None:
        if self.realtime:
            # Above ordinary host work, as a sim node: the nodes stand for chips with CPUs of
            # their own, and a busy host that keeps this thread off the CPU for a period
            # shows as skipped passes (lost samples) no fleet would have. Linux: the nice
            # value of this thread only. Allowed for root or with CAP_SYS_NICE.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), REALTIME_NICE)
            except (OSError, AttributeError):
                self.realtime = False
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - kept for the owner to see
            self.error = e
            self._ready.set()
            raise

    def _loop(self) -> None:
        # Node i's pass is due at t0 + c * period + slot(i) * period / nslots, c = 0, 1, ...
        # (integer us: a node's passes, and so its samples' t_ms, are exactly a period
        # apart, as on a chip whose timer drives the pass).
        assert self._sel is not None
        sel = self._sel
        period_us = round(1_000_000 / self.rate_hz)
        nslots = max(1, min(self.n, period_us // 2000))   # a slot every ~2 ms
        slots: list[list[SwarmNode]] = [[] for _ in range(nslots)]
        for node in self.nodes:
            slots[node.index % nslots].append(node)
        dt = period_us / 1e6
        mask = _Ticks.PERIOD - 1
        t0_us = time.monotonic_ns() // 1000
        self.started_at = t0_us / 1e6
        k = 0                        # the next slot's number since t0
        ticks_ms = _Ticks.ticks_ms
        self._ready.set()
        while not self._stop.is_set():
            c, slot = divmod(k, nslots)
            due_us = t0_us + c * period_us + slot * period_us // nslots
            now_us = time.monotonic_ns() // 1000
            events = sel.select((due_us - now_us) / 1e6 if due_us > now_us else 0)
            if events:
                now_ms = ticks_ms()
                for key, _ in events:
                    self._receive(key.data, now_ms)
            now_us = time.monotonic_ns() // 1000
            if now_us < due_us:
                continue
            if now_us - due_us > period_us:   # a whole period behind: skip the missed passes
                behind = (now_us - due_us) * nslots // period_us
                self._skip(slots, k, behind)
                k += behind
                continue
            due_ms = (due_us // 1000) & mask
            nodes = slots[slot]
            self.jitter.add(now_us - due_us)
            c0 = time.perf_counter_ns()
            t = due_us / 1e6
            for node in nodes:
                self._pass(node, due_ms, dt, t)
            if nodes:
                self.compute.add((time.perf_counter_ns() - c0) // 1000 // len(nodes))
            k += 1
        self._cpu_at_end = time.thread_time()

    def _skip(self, slots: list[list[SwarmNode]], k: int, behind: int) -> None:
        full, rest = divmod(behind, len(slots))
        for i, nodes in enumerate(slots):
            extra = 1 if (i - k) % len(slots) < rest else 0
            for node in nodes:
                node.node.skipped += full + extra
                self.skipped += full + extra

    def _receive(self, node: SwarmNode, now_ms: int) -> None:
        sock = node.port.sock
        ep = node.endpoint
        port = node.port
        for _ in range(16):          # as the firmware's service: at most 16 per pass
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            port.arrived = now_ms
            ep.receive(port, addr, data)

    @staticmethod
    def _pass(node: SwarmNode, now_ms: int, dt: float, t: float) -> None:
        n = node.node
        n.comms_check(now_ms)
        for lp in n.loops:
            lp.step(dt, t)
        ep = node.endpoint
        if not ep.sessions:
            return                   # no host: nothing to sample or send (the loop runs on)
        try:
            ep.sample(now_ms)
            ep.service(now_ms)
        except Exception as e:  # noqa: BLE001 - as the node's service: counted, the node runs on
            n.comms_errors += 1
            n.comms_last_error = e

    # ---- what it did ----

    @property
    def cpu_s(self) -> float:
        """CPU time (s) the swarm's thread has used (read from any thread)."""
        if self._cpu_at_end is not None:
            return self._cpu_at_end
        t = self._thread
        if t is None or t.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, AttributeError):
            return 0.0

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def totals(self) -> dict[str, Any]:
        """Frames sent, SETs applied, sessions, send errors, passes skipped and the thread's
        CPU time, over every node."""
        return {"nodes": self.n, "frames_sent": sum(nd.frames_sent for nd in self.nodes),
                "sets_applied": sum(nd.sets_applied for nd in self.nodes),
                "sessions": sum(nd.sessions for nd in self.nodes),
                "send_errors": sum(nd.port.send_errors for nd in self.nodes),
                "comms_errors": sum(nd.node.comms_errors for nd in self.nodes),
                "skipped": self.skipped, "cpu_s": round(self.cpu_s, 3), "realtime": self.realtime,
                "late_us": {k[7:-3]: v for k, v in self.jitter.stats("jitter").items()},
                "seconds": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0}


# ---------------------------------------------------------------- the command

def _read_key(args: argparse.Namespace) -> bytes | None:
    if args.no_key:
        return None
    path = args.key_file or os.environ.get("CYPHY_KEY_FILE")
    if args.write_key:
        if not args.key_file:
            raise SwarmError("--write-key needs --key-file (where to write the key)")
        raw = os.urandom(32)
        fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(raw.hex() + "\n")
        return raw
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise SwarmError(f"key file {path}: {e.strerror}") from None
        where = f"key file {path}"
    elif os.environ.get("CYPHY_KEY"):
        text, where = os.environ["CYPHY_KEY"], "$CYPHY_KEY"
    else:
        raise SwarmError("no key: give --key-file F (hex, as cyphy --key-file reads it; "
                         "--write-key makes one), $CYPHY_KEY(_FILE), or --no-key for "
                         "unprovisioned nodes")
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise SwarmError(f"{where}: a key is written as hex digits (32 to 128 of them)") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cyphy.sim.swarm",
        description="N synthetic cyphy nodes on UDP (one loopback address each) until SIGTERM "
                    "or Ctrl-C; prints one JSON line with their URLs when ready, and one with "
                    "totals when stopped.")
    ap.add_argument("--nodes", type=int, required=True, help="how many nodes")
    ap.add_argument("--key-file", help="the nodes' key (hex; the same for every node)")
    ap.add_argument("--write-key", action="store_true",
                    help="write a fresh random key to --key-file first (mode 0600)")
    ap.add_argument("--no-key", action="store_true", help="unprovisioned nodes (CRC frames)")
    ap.add_argument("--port", type=int, default=P.UDP_PORT, help="UDP port of every node (5477)")
    ap.add_argument("--base-ip", help="the first node's address (default: a free block of "
                                      "127.252.0.0/14)")
    ap.add_argument("--rate-hz", type=float, default=10.0, help="loop rate (10)")
    ap.add_argument("--name-prefix", default="swarm", help="names PREFIX-0001... (swarm)")
    ap.add_argument("--comms-timeout-ms", type=int, default=0,
                    help="each node's comms watchdog (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="the plants' random seed")
    args = ap.parse_args(argv)
    stop = threading.Event()
    why: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        why.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        key = _read_key(args)
        swarm = Swarm(args.nodes, key=key, rate_hz=args.rate_hz, port=args.port,
                      base_ip=args.base_ip, name_prefix=args.name_prefix,
                      comms_timeout_ms=args.comms_timeout_ms, seed=args.seed).start()
    except SwarmError as e:
        print(f"cyphy swarm: {e}", file=sys.stderr)
        return 2
    try:
        print(json.dumps({"ready": True, "nodes": swarm.n, "pid": os.getpid(),
                          "first": swarm.nodes[0].url, "last": swarm.nodes[-1].url,
                          "names": [swarm.names[0], swarm.names[-1]], "urls": swarm.urls}),
              flush=True)
        while not stop.wait(0.5):
            if swarm.error is not None:
                print(f"cyphy swarm: the swarm's thread failed: {swarm.error!r}", file=sys.stderr)
                return 1
    finally:
        swarm.stop()
    t = swarm.totals()
    t["stopped_by"] = why[0] if why else None
    print(json.dumps(t), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
