"""A Sparkplug B 3.0 Edge Node that serves cyphy nodes as Sparkplug Devices (issue 16).

    gw = Gateway("mqtt://127.0.0.1:1883", "plant", "gw1", ["sim://oven", "udp://10.0.0.7"])
    gw.start()          # returns at once; connects, births, serves until stop()
    ...
    gw.stop()           # DDEATH per device, NDEATH, DISCONNECT

The gateway is one paho-mqtt client (its own network thread), the process's hub (one
thread that reads every node's link and runs the timers: cyphy.hub) and a small pool for
what waits on a node. Each node has one protocol session (cyphy.api.connect: HELLO,
heartbeats, retried requests); its telemetry becomes DDATA in the hub's thread as it
arrives, and opening it (DBIRTH), a DCMD (one authenticated SET) and the periodic report
run as jobs in the pool, one at a time per node. No thread per node: a gateway serves
hundreds of nodes at the same cost per frame as one. Section numbers in comments are those of the Sparkplug 3.0.0
specification; docs/fleet.md ("Gateway", "Metrics of a cyphy node") describes what a host
application sees.

Threads and order: every publish that carries a `seq`, and every change of what has been
born, happens under one lock (`Gateway._lock`), so that seq is strictly increasing on the
wire (6.4.5, 4.2), an NBIRTH precedes its DBIRTHs, and no DDATA of a device goes out
before its DBIRTH in the current MQTT session (tck-id-operational-behavior-device-ddata).
paho's publish() only queues the packet, so nothing slow is done under the lock.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt

from . import mqtt as mqtt_url
from . import sparkplug as sp
from .hub import Hub
from .mqtt import BrokerUrl
from .sparkplug import DataType as T, Metric, Payload

log = logging.getLogger("cyphy.gateway")

__all__ = ["Gateway", "GatewayError", "parse_broker_url", "check_node_url", "WRITABLE_KEYS"]

LOST_AFTER_S = 3.0          # no telemetry for this long (or the node's comms timeout): lost
RETRY_MAX_S = 2.0           # a lost node is looked for again at least this often
REPORT_S = 10.0             # every metric again in a DDATA this often (and gains re-read)
MAX_BATCH = 16              # samples per telemetry frame, at most (docs/protocol.md, SUBSCRIBE)
DISCOVER_EVERY_S = 30.0     # --discover: look for new nodes this often
POOL_WORKERS = 16           # jobs that wait for nodes (open, DCMD, reports) at once

# The keys a DCMD may write (LOOP/KEY), and the Sparkplug datatypes each accepts. The node
# has the last word on ranges (channel limits, gains >= 0): its NACK reason is reported.
_NUMBERS = frozenset({T.Int8, T.Int16, T.Int32, T.Int64, T.UInt8, T.UInt16, T.UInt32,
                      T.UInt64, T.Float, T.Double})
WRITABLE_KEYS: dict[str, frozenset[T]] = {
    "setpoint": _NUMBERS, "kp": _NUMBERS, "ki": _NUMBERS, "kd": _NUMBERS,
    "output": _NUMBERS,                      # manual output (the node refuses it in auto)
    "mode": frozenset({T.String, T.Text}),   # "auto" or "manual"
    "tune": frozenset({T.String, T.Text}),   # "start" (relay autotune, rule auto) or "abort"
}
TUNE_WORDS = ("start", "abort")

# Per loop: telemetry values (DDATA on change), gains (read at birth, every REPORT_S and
# after a DCMD), and the STATS frame's fields (once a second while subscribed).
LOOP_METRICS: list[tuple[str, T]] = [
    ("setpoint", T.Double), ("measurement", T.Double), ("output", T.Double),
    ("mode", T.String), ("alarms", T.String), ("faults", T.String), ("tuning", T.Boolean),
    ("kp", T.Double), ("ki", T.Double), ("kd", T.Double), ("tune", T.String),
]
STAT_FIELDS = ("ticks", "overruns", "skipped", "jitter_p99_us", "jitter_max_us",
               "compute_mean_us", "compute_max_us")
LINK_FIELDS = ("frames", "lost", "bad_tag", "replayed", "retries", "reopened")
SAMPLE_T_MS = "Telemetry/t_ms"   # the node's clock of the sample a DDATA carries
CMD_LAST = "Command/last"
CMD_OK = "Command/ok"


class GatewayError(ValueError):
    """A gateway argument that cannot work (a malformed URL or id): one line saying why."""


def parse_broker_url(url: str) -> BrokerUrl:
    """The broker of --broker, mqtt[s]://[USER@]HOST[:PORT] (cyphy.mqtt: the one parser of
    broker URLs; credentials and TLS settings come from the environment)."""
    try:
        return mqtt_url.parse_broker_url(url, "--broker")
    except mqtt_url.MqttError as e:
        raise GatewayError(str(e)) from None


def check_allow_pattern(pat: str) -> None:
    """GatewayError unless pat can match a writable metric: LOOP/KEY, fnmatch wildcards."""
    loop, sep, key = pat.rpartition("/")
    if pat == "*":
        return
    keys = [k for k in WRITABLE_KEYS if fnmatch.fnmatchcase(k, key)]
    if not sep or not loop or not keys:
        raise GatewayError(f"--allow {pat}: give LOOP/KEY with KEY one of "
                           f"{', '.join(WRITABLE_KEYS)} (wildcards * ? [..] allowed), "
                           f"e.g. '*/setpoint' or 'oven/mode'")


def check_node_url(url: str) -> None:
    """GatewayError if url cannot be a node URL (cyphy.links.check_link_url: unknown scheme,
    no host or name). A node that is not there yet is no error: the gateway waits for it."""
    from .links import LinkError, check_link_url, node_opener

    try:
        check_link_url(url)
    except LinkError as e:
        raise GatewayError(str(e)) from None
    if node_opener(url) is not None:
        raise GatewayError(f"{url}: a node behind a gateway already; give the gateway its "
                           f"node's own URL (serial://, udp://, sim://)")


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _names(v: Any) -> str:
    """alarms/faults as one String metric: names joined by ',' ('' = none)."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return "" if v is None else str(v)


@dataclass
class _Command:
    """A DCMD for a worker: the assignments, or why it cannot be applied."""
    sets: list[tuple[str, str, float | str]] = field(default_factory=list)
    error: str | None = None


class _Device:
    """One cyphy node as a Sparkplug Device: its session, metrics and jobs.

    Nothing here has a thread of its own. The node's telemetry arrives in the hub's thread
    (cyphy.hub: one thread reads every session) and becomes DDATA there; what waits for the
    node (opening the session, a DCMD's SET, the periodic read of the gains) runs as a job
    in the gateway's pool, one job of a device at a time and in order, so that a device's
    commands are applied in the order they came and never beside a reconnect."""

    def __init__(self, gw: "Gateway", url: str) -> None:
        self.gw = gw
        self.url = url
        self.name: str | None = None          # the device_id: the node's name (HELLO)
        self.node: Any = None                 # cyphy.api.Node while a session is open
        self.loops: list[str] = []
        self.types: dict[str, T] = {}         # metric name -> datatype (this birth)
        self.values: dict[str, Any] = {}      # metric name -> current value
        self.sent: dict[str, Any] = {}        # what a host has (since the last birth)
        self.born = False                     # DBIRTH sent in this MQTT session
        self.last_command = ("", True)
        self.lost_after = LOST_AFTER_S
        self.samples = 0                      # telemetry samples turned into DDATA
        self._jobs: deque[Callable[[], None]] = deque()
        self._busy = False                    # a job of this device runs
        self._jobs_lock = threading.Lock()
        self._gen = 0                         # +1 at each _close(): older timers do nothing
        self._retry_wait = 0.5
        self._said: str | None = None
        self._last_sample = 0.0
        self.idle = threading.Event()         # no job queued or running
        self.idle.set()

    def start(self) -> None:
        self._submit(self._connect)

    # ---- jobs (the gateway's pool), one at a time per device ----

    def _submit(self, job: Callable[[], None]) -> None:
        with self._jobs_lock:
            if self.gw._stopping.is_set():
                return
            self._jobs.append(job)
            self.idle.clear()
            if self._busy:
                return
            self._busy = True
        self.gw._pool.submit(self._run_jobs)

    def _run_jobs(self) -> None:
        while True:
            with self._jobs_lock:
                if not self._jobs or self.gw._stopping.is_set():
                    self._jobs.clear()
                    self._busy = False
                    self.idle.set()
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:  # noqa: BLE001 - a device's trouble never stops the gateway
                log.exception("%s (%s): in a job", self.name, self.url)

    def _connect(self) -> None:
        if self.node is not None or self.gw._stopping.is_set():
            return
        try:
            self._open()
        except Exception as e:  # noqa: BLE001 - ProtocolError, LinkError, OSError...: retry
            why = " ".join(str(e).split()) or type(e).__name__
            if why != self._said:
                where = "" if why.startswith(self.url) else f"{self.url}: "
                log.warning("%s%s; trying again every %g s at most", where, why, RETRY_MAX_S)
                self._said = why
            self._close()
            wait, self._retry_wait = self._retry_wait, min(RETRY_MAX_S, self._retry_wait * 2)
            self._later(wait, lambda: self._submit(self._connect))
            return
        self._retry_wait, self._said = 0.5, None

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        """fn() in the hub's thread after delay, unless the session it was meant for has
        been closed meanwhile (each _close() starts a new generation)."""
        gen = self._gen

        def fire() -> None:
            if self._gen == gen and not self.gw._stopping.is_set():
                fn()

        self.gw.hub.call_later(delay, fire)

    def _open(self) -> None:
        from .api import connect

        node = connect(self.url, key_file=self.gw.key_file, timeout=self.gw.node_timeout)
        self.node = node
        name = node.name
        try:
            sp.validate_id(name, "device_id")
        except sp.SparkplugError as e:
            raise RuntimeError(f"the node's name cannot be a Sparkplug device_id ({e})") from None
        other = self.gw._device_named(name)
        if other is not None and other is not self:
            raise RuntimeError(f"node {name!r} is already served through {other.url}")
        loops = list(node.loops)
        values: dict[str, Any] = {}
        types: dict[str, T] = {}
        for loop in loops:
            st = node.get(loop)
            for key, dt in LOOP_METRICS:
                types[f"{loop}/{key}"] = dt
            values.update(self._loop_values(loop, st))
            for f in STAT_FIELDS:
                types[f"{loop}/stats/{f}"] = T.UInt32
        stats = node.get("stats")
        for loop in loops:
            s = stats.get(loop) if isinstance(stats, dict) else None
            for f in STAT_FIELDS:
                values[f"{loop}/stats/{f}"] = _u32((s or {}).get(f))
        h = node.hello
        for k, v in (("firmware", h.firmware), ("board", h.board), ("url", self.url),
                     ("loops", ",".join(loops))):
            types[f"Node Info/{k}"] = T.String
            values[f"Node Info/{k}"] = v
        for f in LINK_FIELDS:
            types[f"Link/{f}"] = T.UInt64
        values.update(self._link_values())
        types[SAMPLE_T_MS] = T.UInt32
        values[SAMPLE_T_MS] = None
        types[CMD_LAST], types[CMD_OK] = T.String, T.Boolean
        values[CMD_LAST], values[CMD_OK] = self.last_command
        self.lost_after = max(LOST_AFTER_S if not h.comms_timeout_ms else h.comms_timeout_ms / 1000,
                              3 * self.gw.period_ms / 1000)
        self.name, self.loops = name, loops
        self._loop_names = {lp: tuple(f"{lp}/{k}" for k in (
            "setpoint", "measurement", "output", "mode", "alarms", "faults", "tuning", "tune"))
            for lp in loops}
        self._tuning = {lp: bool(values.get(f"{lp}/tuning")) for lp in loops}
        self._stats_seen = None
        self.gw._device_born(self, types, values)
        self._last_sample = time.monotonic()
        node.session.on_telemetry = self._on_samples  # from now on, in the hub's thread
        node.session.subscribe(self.gw.period_ms, self.gw.batch, 1)
        self._last_sample = time.monotonic()
        self._later(self.lost_after / 4, self._check_lost)
        self._later(self.gw.report_s, self._report_due)

    def _loop_values(self, loop: str, st: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("setpoint", "measurement", "output", "kp", "ki", "kd"):
            v = st.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{loop}/{key}"] = float(v)
        if "mode" in st:
            out[f"{loop}/mode"] = str(st["mode"])
        out[f"{loop}/alarms"] = _names(st.get("alarms"))
        out[f"{loop}/faults"] = _names(st.get("faults"))
        out[f"{loop}/tuning"] = bool(st.get("tuning", False))
        out[f"{loop}/tune"] = "running" if out[f"{loop}/tuning"] else "idle"
        return out

    def _link_values(self) -> dict[str, Any]:
        s = self.node.session.stats
        return {f"Link/{f}": max(0, int(getattr(s, f))) for f in LINK_FIELDS}

    # ---- the hub's thread ----

    def _on_samples(self, samples: list[dict]) -> None:
        """A telemetry frame: one DDATA with what changed. With --batch N a frame has N
        samples: the older ones go in as historical values (is_historical, 6.4.6) with the
        time they were taken, the newest as the current value."""
        node = self.node
        if node is None:
            return
        now = time.monotonic()
        self._last_sample = now
        history: list[tuple[int, dict[str, Any]]] = []
        t_last = samples[-1]["t_ms"]
        now_ms = sp.now_ms()
        for k, sample in enumerate(samples):
            changed: dict[str, Any] = {SAMPLE_T_MS: sample["t_ms"]}
            for loop, v in sample["loops"].items():
                names = self._loop_names[loop]
                changed[names[0]] = v["setpoint"]
                changed[names[1]] = v["measurement"]
                changed[names[2]] = v["output"]
                st = _status_values(v["status"])
                for n, x in zip(names[3:], st):
                    changed[n] = x
                if st[3] != self._tuning.get(loop):
                    self._tuning[loop] = st[3]
                    if not st[3]:          # a tune ended: its result, and the gains it left
                        self._submit(lambda lp=loop: self._tune_ended(lp))
            if k < len(samples) - 1:
                age = (t_last - sample["t_ms"]) & 0x3FFFFFFF
                history.append((now_ms - age, changed))
            else:
                stats = node.session.node_stats
                if stats is not None and stats is not self._stats_seen:
                    self._stats_seen = stats
                    for loop, st_ in stats.items():
                        for f in STAT_FIELDS:
                            changed[f"{loop}/stats/{f}"] = _u32(st_.get(f))
                self.samples += len(samples)
                self.gw._device_data(self, changed, False, history=history)

    def _check_lost(self) -> None:
        if self.node is None:
            return
        quiet = time.monotonic() - self._last_sample
        if quiet > self.lost_after:
            log.warning("%s (%s): no telemetry for %.1f s: lost", self.name, self.url, quiet)
            self._submit(self._lose)
            return
        self._later(min(self.lost_after / 4, self.lost_after - quiet + 0.01), self._check_lost)

    def _report_due(self) -> None:
        if self.node is None:
            return
        self._submit(self._report)
        self._later(self.gw.report_s, self._report_due)

    # ---- jobs ----

    def _report(self) -> None:
        """Every metric again (gains are not in telemetry: another host may set them)."""
        if self.node is None:
            return
        changed: dict[str, Any] = {}
        try:
            for loop in self.loops:
                changed.update({k: v for k, v in self._loop_values(loop, self.node.get(loop)).items()
                                if k.rsplit("/", 1)[1] in ("kp", "ki", "kd")})
        except Exception as e:  # noqa: BLE001 - the lost check decides whether it is gone
            log.warning("%s (%s): reading the gains: %s", self.name, self.url, " ".join(str(e).split()))
        changed.update(self._link_values())
        self.gw._device_data(self, changed, True)

    def _lose(self) -> None:
        if self.node is None:
            return
        self.gw._device_lost(self)
        self._close()
        self._later(0.5, lambda: self._submit(self._connect))

    def _apply(self, cmd: _Command) -> None:
        from .client import CommandRejected, ProtocolError
        from .links import LinkError

        what = ", ".join(f"{loop}/{key}={_text(v)}" for loop, key, v in cmd.sets)
        update: dict[str, Any] = {}
        if cmd.error is not None:
            result, ok = cmd.error, False
        elif self.node is None:
            result, ok = f"{what}: not applied, the node is offline", False
        else:
            sets = [a for a in cmd.sets if a[1] != "tune"]
            tunes = [a for a in cmd.sets if a[1] == "tune"]
            session = self.node.session
            try:
                if sets:
                    session.set_many(sets)
                for loop, _, word in tunes:   # the tune is the gateway session's: if the
                    if word == "start":       # gateway goes away, the node ends it
                        session.tune_start(loop)
                    else:
                        session.tune_abort(loop)
            except CommandRejected as e:
                result, ok = f"{what}: {e}", False
            except (ProtocolError, LinkError, OSError) as e:
                result, ok = f"{what}: not applied, the node did not answer ({e})", False
            else:
                result, ok = f"{what} ok", True
                for loop, key, v in sets:
                    update[f"{loop}/{key}"] = v if key == "mode" else float(v)
        result = " ".join(result.split())
        (log.info if ok else log.warning)("%s: DCMD %s", self.name, result)
        self.last_command = (result, ok)
        update[CMD_LAST], update[CMD_OK] = result, ok
        self.gw._device_data(self, update, False, always=(CMD_LAST, CMD_OK))

    def _tune_ended(self, loop: str) -> None:
        """A relay autotune of loop ended: its result in Command/last (applied or why not),
        and the gains it left read back."""
        if self.node is None:
            return
        try:
            r = self.node.session.read(f"{loop}.tune")
        except Exception as e:  # noqa: BLE001 - ProtocolError, CommandRejected...
            r = {"reason": f"its result could not be read ({' '.join(str(e).split())})"}
        r = r if isinstance(r, dict) else {}
        if r.get("applied"):
            text = (f"{loop}/tune done: rule {r.get('rule')}, kp {_text(r.get('kp'))} "
                    f"ki {_text(r.get('ki'))} kd {_text(r.get('kd'))} applied")
        else:
            text = f"{loop}/tune ended, nothing applied: {r.get('reason') or 'no result'}"
        ok = bool(r.get("applied"))
        (log.info if ok else log.warning)("%s: %s", self.name, text)
        self.last_command = (text, ok)
        self._report()
        self.gw._device_data(self, {CMD_LAST: text, CMD_OK: ok}, False, always=(CMD_LAST, CMD_OK))

    def _close(self) -> None:
        self._gen += 1
        node, self.node = self.node, None
        if node is not None:
            node.session.on_telemetry = None
            try:
                node.close()
            except Exception:  # noqa: BLE001 - a node that is gone
                pass

    # ---- called by the gateway (MQTT thread) ----

    def command(self, payload: bytes) -> None:
        """A DCMD's payload: checked here, applied by a job (one SET, exactly once)."""
        cmd = self._parse_command(payload)
        self._submit(lambda: self._apply(cmd))

    def _parse_command(self, payload: bytes) -> _Command:
        aliases = self.gw._aliases_of(self)
        by_alias = {a: n for n, a in aliases.items()}
        known: dict[str | int, T] = dict(self.types)
        known.update({aliases[n]: t for n, t in self.types.items() if n in aliases})
        try:
            p = sp.decode(payload, datatypes=known)
        except sp.SparkplugError as e:
            return _Command(error=f"malformed payload: {e}")
        if not p.metrics:
            return _Command(error="DCMD without metrics: nothing to write")
        writable = [f"{lp}/{k}" for lp in self.loops for k in WRITABLE_KEYS]
        sets: list[tuple[str, str, float | str]] = []
        for m in p.metrics:
            name = m.name if m.name is not None else by_alias.get(m.alias) if m.alias is not None else None
            if name is None:
                label = f"alias {m.alias}" if m.alias is not None else "a metric without name or alias"
                return _Command(error=f"{label}: no such metric of {self.name}; nothing was applied")
            loop, _, key = name.rpartition("/")
            if loop not in self.loops or key not in WRITABLE_KEYS:
                return _Command(error=f"{name}: not a writable metric of {self.name} (writable: "
                                      f"{', '.join(writable)}); nothing was applied")
            if not self.gw.allows(name):
                return _Command(error=f"{name}: not allowed by this gateway (--allow "
                                      f"{' '.join(self.gw.allow)}); nothing was applied")
            if m.is_null or m.value is None:
                return _Command(error=f"{name}: a null value; nothing was applied")
            dt = m.datatype
            if dt is None or dt not in WRITABLE_KEYS[key] or isinstance(m.value, bool):
                want = self.types.get(name, T.Double).name
                got = dt.name if dt is not None else type(m.value).__name__
                return _Command(error=f"{name}: wrong datatype {got}, expected {want}; "
                                      f"nothing was applied")
            v = m.value
            if key == "tune":
                if v not in TUNE_WORDS:
                    return _Command(error=f"{name}={v!r}: tune is \"start\" or \"abort\"; "
                                          f"nothing was applied")
            elif key == "mode":
                if v not in ("auto", "manual"):
                    return _Command(error=f"{name}={v!r}: mode is \"auto\" or \"manual\"; "
                                          f"nothing was applied")
            elif not isinstance(v, (int, float)) or not math.isfinite(v):
                return _Command(error=f"{name}={_text(v)}: out of range: not a finite number; "
                                      f"nothing was applied")
            sets.append((loop, key, v if key in ("mode", "tune") else float(v)))
        return _Command(sets=sets)


@functools.lru_cache(maxsize=256)
def _status_values(status: int) -> tuple[str, str, str, bool, str]:
    """A telemetry status word as the metrics' values: mode, alarms, faults, tuning, tune."""
    from .client import status_names

    st = status_names(status)
    return (st["mode"], _names(st["alarms"]), _names(st["faults"]), st["tuning"],
            "running" if st["tuning"] else "idle")


def _u32(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    return max(0, min(0xFFFFFFFF, int(v)))


class Gateway:
    """A Sparkplug B Edge Node (group, edge) on the broker at broker_url (mqtt://HOST[:PORT])
    serving the cyphy nodes at node_urls as its Devices. start() returns at once; stop()
    publishes DDEATHs and the NDEATH and disconnects."""

    def __init__(self, broker_url: str, group: str, edge: str, node_urls: Sequence[str] = (),
                 *, period_ms: int = 100, batch: int = 1, key_file: str | None = None,
                 report_s: float = REPORT_S, node_timeout: float = 2.0,
                 keepalive: int = 10, reconnect_max_s: float = 30.0,
                 client_id: str | None = None, primary_host: str | None = None,
                 allow: Sequence[str] | None = None, discover_port: int | None = None,
                 discover_every_s: float = DISCOVER_EVERY_S) -> None:
        self.broker = parse_broker_url(broker_url)
        self.broker_url = str(self.broker)     # never a password: there is none in it
        for what, v in (("--group", group), ("--edge", edge)):
            try:
                sp.validate_id(v, what)
            except sp.SparkplugError as e:
                raise GatewayError(f"{e} (Sparkplug ids are non-empty, without + / #)") from None
        if not 1 <= period_ms <= 60000:
            raise GatewayError(f"--period-ms {period_ms}: give 1 to 60000 ms")
        if not 1 <= batch <= MAX_BATCH:
            raise GatewayError(f"--batch {batch}: give 1 to {MAX_BATCH} samples per frame")
        for url in node_urls:
            check_node_url(url)
        if len(set(node_urls)) != len(node_urls):
            raise GatewayError("a node URL is given twice")
        self.group, self.edge = group, edge
        if primary_host is not None:
            try:
                sp.validate_id(primary_host, "--primary-host")
            except sp.SparkplugError as e:
                raise GatewayError(f"{e} (a Sparkplug host_id: non-empty, without + / #)") from None
        self.primary_host = primary_host
        self.allow = tuple(allow) if allow else ("*",)
        for pat in self.allow:
            check_allow_pattern(pat)
        if discover_port is not None and not 1 <= discover_port <= 65535:
            raise GatewayError(f"--discover {discover_port}: a UDP port is 1 to 65535")
        self.discover_port = discover_port
        self.discover_every_s = discover_every_s
        self.node_command = ("", True)             # the last command the Edge Node refused
        self.host_state: sp.State | None = None    # the primary host's last STATE
        self.period_ms = period_ms
        self.batch = batch
        self.key_file = key_file
        self.report_s = report_s
        self.node_timeout = node_timeout
        self.keepalive = keepalive
        self.reconnect_max_s = reconnect_max_s
        self.hub = Hub.shared()                # reads every node's link, runs the timers
        self._pool = ThreadPoolExecutor(POOL_WORKERS, thread_name_prefix="gateway job")
        self.devices = [_Device(self, u) for u in node_urls]
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._seq = sp.SeqCounter()
        self.bdseq = sp.next_bdseq(None)       # 5.4: 0 on the first CONNECT
        self.online = False                    # connected and NBIRTH sent
        self.connects = 0
        self._aliases: dict[str, dict[str, int]] = {}   # device_id -> metric name -> alias
        self._next_alias = 1
        self._said_unreachable = False
        try:   # 3.0: Edge Nodes use clean sessions
            self.client = mqtt_url.make_client(self.broker, client_id or f"cyphy-gateway-{group}-{edge}",
                                               clean_session=True)
        except mqtt_url.MqttError as e:
            raise GatewayError(str(e)) from None
        self.client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(reconnect_max_s)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.suppress_exceptions = True   # a bug in a callback: a log line, not a dead client
        self.client.enable_logger(logging.getLogger("cyphy.gateway.mqtt"))
        self._set_will()

    # ---- lifecycle ----

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def allows(self, metric: str) -> bool:
        """Whether a DCMD may write metric (LOOP/KEY): the --allow patterns (fnmatch)."""
        return any(fnmatch.fnmatchcase(metric, pat) for pat in self.allow)

    def _discover(self) -> None:
        """A job: the nodes that answer a broadcast on the --discover port and whose HELLO
        verifies with a key this host holds become devices (an unknown node on the LAN
        does not: the gateway writes only to nodes it can authenticate)."""
        from .discovery import discover_udp

        try:
            found = discover_udp(1.0, self.discover_port or 0, self._given_key())
        except OSError as e:
            log.warning("discovery on UDP port %s: %s", self.discover_port, e)
            found = []
        with self._lock:
            known = {d.url for d in self.devices} | {d.name for d in self.devices if d.name}
        for f in found:
            if f.url in known or f.name in known:
                continue
            if not f.verified:
                log.warning("discovered %s at %s: its HELLO does not verify with a key this host "
                            "holds (cyphy provision, --key-file): not served", f.name, f.url)
                known.add(f.name)
                continue
            d = _Device(self, f.url)
            with self._lock:
                self.devices.append(d)
            log.info("discovered %s at %s: served", f.name, f.url)
            d.start()
        if not self._stopping.is_set():
            self.hub.call_later(self.discover_every_s, lambda: self._pool.submit(self._discover))

    def _given_key(self) -> Any:
        from .api import resolve_key

        try:
            return resolve_key(None, self.key_file)
        except Exception:  # noqa: BLE001 - no key given: the key store's are tried per name
            return None

    def start(self) -> "Gateway":
        log.info("%s/%s: broker %s, %d node(s): %s", self.group, self.edge,
                 self.broker_url, len(self.devices), " ".join(d.url for d in self.devices) or "-")
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()    # connects, and reconnects with backoff (1 s doubling)
        for d in self.devices:
            d.start()
        if self.discover_port is not None:
            self._pool.submit(self._discover)
        return self

    def stop(self, timeout: float = 5.0, reason: str = "") -> None:
        """DDEATH for every born device, the NDEATH (QoS 1, the will's bdSeq), DISCONNECT
        (which discards the will: the explicit NDEATH stands for it), then close the
        nodes' sessions (BYE). One log line says so (with the reason, e.g. "SIGINT")."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        info = None
        with self._lock:
            if self.online:
                for d in self.devices:
                    if d.born:
                        self._publish("DDEATH", d.name, [])
                        d.born = False
                # tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath:
                # an Edge Node that disconnects on purpose publishes its NDEATH first.
                info = self.client.publish(self._topic("NDEATH"), self._ndeath(), qos=1)
                self.online = False
        if info is not None:
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        end = time.monotonic() + timeout
        for d in self.devices:          # a job that runs (a SET) ends first; then BYE
            d.idle.wait(max(0.0, end - time.monotonic()))
            d._close()
        self._pool.shutdown(wait=False)
        log.info("%s/%s: stopped%s: %s", self.group, self.edge,
                 f" by {reason}" if reason else "",
                 "DDEATHs and NDEATH published" if info is not None
                 else "the broker was not connected: its will (NDEATH) stands")

    # ---- MQTT (paho's thread) ----

    def _topic(self, kind: str, device: str | None = None) -> str:
        return sp.topic(kind, self.group, self.edge, device)

    def _ndeath(self) -> bytes:
        # 6.4.25 / 5.4: the NDEATH carries the bdSeq of its CONNECT, no seq.
        return sp.encode(Payload(timestamp=sp.now_ms(), metrics=[sp.bdseq_metric(self.bdseq)]))

    def _set_will(self) -> None:
        # 5.4, tck-id-payloads-ndeath-will-message-qos/-retain: the NDEATH is the MQTT
        # will, QoS 1, not retained, with the bdSeq this CONNECT's NBIRTH will carry.
        self.client.will_set(self._topic("NDEATH"), self._ndeath(), qos=1, retain=False)

    def _on_connect(self, client: mqtt.Client, _u: object, _flags: dict, rc: int) -> None:
        if rc != 0:
            log.warning("broker %s refused the connection: %s", self.broker_url,
                        mqtt.connack_string(rc))
            return
        self._said_unreachable = False
        self.connects += 1
        # 5.x (Edge Node session establishment): subscribe to NCMD and DCMD before the
        # NBIRTH. QoS 0: commands are published at QoS 0 (tck-id-topics-ncmd-mqtt,
        # -dcmd-mqtt), and a redelivered QoS 1 duplicate must not be applied twice.
        topics = [(self._topic("NCMD"), 0), (f"{sp.NAMESPACE}/{self.group}/DCMD/{self.edge}/+", 0)]
        if self.primary_host is not None:
            # 5.x: an Edge Node configured with a Primary Host Application subscribes to
            # its STATE (QoS 1; the host publishes it retained) and publishes its NBIRTH
            # only once that host is online
            topics.append((sp.state_topic(self.primary_host), 1))
        client.subscribe(topics)
        with self._lock:
            if self.primary_host is not None and not (self.host_state and self.host_state.online):
                log.info("broker %s: connected; waiting for the primary host %s to be online "
                         "(its STATE) before the NBIRTH", self.broker_url, self.primary_host)
                return
            self._birth_all()
        log.info("broker %s: connected, NBIRTH (bdSeq %d), %d DBIRTH(s)", self.broker_url,
                 self.bdseq, sum(d.born for d in self.devices))

    def _on_state(self, payload: bytes) -> None:
        """The primary host's STATE (4.2.3): online -> NBIRTH (if not born); offline while
        born -> end this MQTT session (NDEATH, DISCONNECT) and connect again, to wait for
        it there. A STATE older than the last one (its timestamp) is stale: ignored."""
        try:
            st = sp.decode_state(payload)
        except sp.SparkplugError as e:
            log.warning("STATE of %s: malformed (%s): ignored", self.primary_host, e)
            return
        with self._lock:
            last = self.host_state
            if last is not None and st.timestamp < last.timestamp:
                log.warning("STATE of %s: older than the last one (timestamp %d < %d): ignored",
                            self.primary_host, st.timestamp, last.timestamp)
                return
            self.host_state = st
            if st.online and not self.online and not self._stopping.is_set():
                self._birth_all()
                log.info("primary host %s online: NBIRTH (bdSeq %d), %d DBIRTH(s)",
                         self.primary_host, self.bdseq, sum(d.born for d in self.devices))
                return
            if st.online or not self.online:
                return
            for d in self.devices:
                if d.born:
                    self._publish("DDEATH", d.name, [])
                    d.born = False
            self.client.publish(self._topic("NDEATH"), self._ndeath(), qos=1)
            self.online = False
        log.warning("primary host %s offline: NDEATH, disconnecting; connecting again to wait "
                    "for it", self.primary_host)
        self.client.disconnect()
        self.hub.call_later(1.0, self._reconnect)

    def _reconnect(self) -> None:
        if self._stopping.is_set():
            return
        self.client.loop_stop()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, rc: int) -> None:
        with self._lock:
            self.online = False
            for d in self.devices:
                d.born = False
            if self._stopping.is_set():
                return
            # 5.4: the next CONNECT has a new bdSeq, in its will and its NBIRTH.
            self.bdseq = sp.next_bdseq(self.bdseq)
            self._set_will()
        log.warning("broker %s: connection lost (%s); reconnecting with backoff (1 s doubling "
                    "up to %g s)", self.broker_url, mqtt.error_string(rc), self.reconnect_max_s)

    def _on_connect_fail(self, _c: mqtt.Client, _u: object) -> None:
        if not self._said_unreachable:
            log.warning("broker %s: cannot connect; trying again with backoff (1 s doubling up "
                        "to %g s)", self.broker_url, self.reconnect_max_s)
            self._said_unreachable = True

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            t = sp.parse_topic(msg.topic)
        except sp.SparkplugError:
            return  # not Sparkplug (amqtt replays others' retained messages: docs/brokers.md)
        if t.message_type is sp.MessageType.STATE:
            if self.primary_host is not None and t.host_id == self.primary_host:
                self._on_state(msg.payload)
            return
        if t.group_id != self.group or t.edge_node_id != self.edge or \
                t.message_type not in (sp.MessageType.NCMD, sp.MessageType.DCMD):
            return
        if msg.retain:
            # Commands are never retained (tck-id-topics-ncmd-mqtt); an old retained one
            # replayed at our CONNECT must not act again.
            log.warning("%s: a retained command: ignored (commands are never retained)", msg.topic)
            return
        try:
            if t.message_type == sp.MessageType.NCMD:
                self._on_ncmd(msg.payload)
            else:
                self._on_dcmd(t.device_id or "", msg.payload)
        except Exception as e:  # noqa: BLE001 - a command never stops the gateway
            log.error("%s: %s: %s (ignored)", msg.topic, type(e).__name__, " ".join(str(e).split()))

    def _on_ncmd(self, payload: bytes) -> None:
        try:
            p = sp.decode(payload, datatypes={sp.NODE_CONTROL_REBIRTH: T.Boolean})
        except sp.SparkplugError as e:
            self._refuse(f"NCMD: malformed payload ({e}); nothing was done")
            return
        for m in p.metrics:
            if m.name == sp.NODE_CONTROL_REBIRTH:
                if m.value is True:
                    # 5.17 (tck-id-operational-behavior-edge-node-birth-sequence-...):
                    # NBIRTH again (same bdSeq), then every DBIRTH.
                    with self._lock:
                        if self.online:
                            self._birth_all()
                    log.info("NCMD %s: rebirth published (bdSeq %d)", sp.NODE_CONTROL_REBIRTH, self.bdseq)
                else:
                    self._refuse(f"NCMD {sp.NODE_CONTROL_REBIRTH} = {m.value!r}: only true asks "
                                 f"for a rebirth; nothing was done")
            else:
                self._refuse(f"NCMD metric {m.name if m.name is not None else f'alias {m.alias}'!r}"
                             f": not supported here (only {sp.NODE_CONTROL_REBIRTH}); nothing was done")

    def _on_dcmd(self, device_id: str, payload: bytes) -> None:
        d = self._device_named(device_id)
        if d is None or d.node is None:
            with self._lock:
                names = sorted(x.name for x in self.devices if x.name and x.node is not None)
            self._refuse(f"DCMD for {device_id}: no such device online on {self.group}/"
                         f"{self.edge} (online: {', '.join(names) or 'none'}); nothing was applied")
            return
        d.command(payload)

    def _refuse(self, text: str) -> None:
        """A command the Edge Node itself refuses: a log line, and NDATA Command/last and
        Command/ok = false (the NACK a host application sees; the metrics are in the NBIRTH)."""
        log.warning("%s", text)
        with self._lock:
            self.node_command = (text, False)
            if self.online and not self._stopping.is_set():
                ts = sp.now_ms()
                self._publish("NDATA", None, [Metric(CMD_LAST, T.String, text, timestamp=ts),
                                              Metric(CMD_OK, T.Boolean, False, timestamp=ts)])

    # ---- births and data (any thread; under the lock) ----

    def _publish(self, kind: str, device: str | None, metrics: list[Metric],
                 seq: int | None = None) -> None:
        p = Payload(timestamp=sp.now_ms(), metrics=metrics,
                    seq=self._seq.next() if seq is None else seq)
        # 6.4.6: births carry datatypes; DATA and DEATH messages need not.
        data = sp.encode(p, include_datatypes=kind.endswith("BIRTH"))
        self.client.publish(self._topic(kind, device), data, qos=0, retain=False)

    def _birth_all(self) -> None:
        # NBIRTH: seq 0 (6.4.5), bdSeq of this CONNECT (5.4), Node Control/Rebirth false.
        ts = sp.now_ms()
        self._publish("NBIRTH", None, [sp.bdseq_metric(self.bdseq, ts),
                                       sp.rebirth_metric(False, ts),
                                       Metric(CMD_LAST, T.String, self.node_command[0], timestamp=ts),
                                       Metric(CMD_OK, T.Boolean, self.node_command[1], timestamp=ts)],
                      seq=self._seq.reset())
        self.online = True
        for d in self.devices:
            d.born = False
            if d.node is not None and d.name is not None and d.types:
                self._dbirth(d)

    def _dbirth(self, d: _Device) -> None:
        assert d.name is not None
        aliases = self._aliases_for(d.name, d.types)
        ts = sp.now_ms()
        metrics = [Metric(n, t, d.values.get(n), alias=aliases[n], timestamp=ts,
                          is_null=d.values.get(n) is None)
                   for n, t in d.types.items()]
        self._publish("DBIRTH", d.name, metrics)
        d.born = True
        d.sent = dict(d.values)

    def _aliases_for(self, device: str, types: dict[str, T]) -> dict[str, int]:
        # 6.4.6 / tck-id-payloads-alias-uniqueness: an alias is unique across the Edge
        # Node's metrics, its devices' included. Kept per device name across births.
        own = self._aliases.setdefault(device, {})
        for n in types:
            if n not in own:
                own[n] = self._next_alias
                self._next_alias += 1
        return own

    def _aliases_of(self, d: _Device) -> dict[str, int]:
        with self._lock:
            return dict(self._aliases.get(d.name or "", {}))

    def _device_named(self, name: str) -> _Device | None:
        with self._lock:
            for d in self.devices:
                if d.name == name:
                    return d
        return None

    def _device_born(self, d: _Device, types: dict[str, T], values: dict[str, Any]) -> None:
        with self._lock:
            d.types, d.values = types, values
            if self.online and not self._stopping.is_set():
                self._dbirth(d)
        log.info("%s (%s): DBIRTH, loops %s", d.node.name, d.url, ", ".join(d.node.loops))

    def _device_data(self, d: _Device, values: dict[str, Any], full: bool,
                     always: tuple[str, ...] = (),
                     history: Sequence[tuple[int, dict[str, Any]]] = ()) -> None:
        """DDATA with the metrics whose value changed since the host last got them (all
        of them if full), by alias only (6.4.6: DATA messages may drop names). history:
        older samples (time in ms since the epoch, values), sent first, each with what
        changed since the one before it, flagged is_historical."""
        with self._lock:
            if not (self.online and d.born) or self._stopping.is_set():
                d.values.update({k: v for k, v in values.items() if k in d.types})
                return
            types = d.types
            aliases = self._aliases[d.name or ""]
            sent = d.sent
            metrics: list[Metric] = []
            for ts, old in history:
                for n, v in old.items():
                    if n in types and v is not None and sent.get(n) != v:
                        metrics.append(Metric(None, types[n], v, alias=aliases[n], timestamp=ts,
                                              is_historical=True))
                        sent[n] = v
            d.values.update({k: v for k, v in values.items() if k in types})
            names = types if full else [k for k in values if k in types and
                                        (k in always or sent.get(k) != values[k])]
            ts = sp.now_ms()
            metrics += [Metric(None, types[n], d.values[n], alias=aliases[n], timestamp=ts)
                        for n in names if d.values.get(n) is not None]
            for n in names:
                sent[n] = d.values.get(n)
            if metrics:
                self._publish("DDATA", d.name, metrics)

    def _device_lost(self, d: _Device) -> None:
        with self._lock:
            if d.born and self.online and not self._stopping.is_set():
                # tck-id-operational-behavior-device-ddeath: the device is gone.
                self._publish("DDEATH", d.name, [])
                log.warning("%s (%s): DDEATH", d.name, d.url)
            d.born = False
            d.types = {}
