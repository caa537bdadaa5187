"""One cyphy node as a Sparkplug B Device of `cyphy gateway` (cyphy.gateway): its
protocol session, its metrics (the one place for their names: docs/fleet.md, "Metrics of a
cyphy node"), the checks of a DCMD written to it, and its jobs.

Nothing here has a thread of its own. The node's telemetry arrives in the hub's thread
(cyphy.hub) and becomes DDATA there; what waits for the node (opening the session, a DCMD's
command, the periodic report) runs as a job in the gateway's pool, one job of a device at a
time and in order. The Edge Node side (MQTT, births, seq) is cyphy.gateway.Gateway's.
"""

from __future__ import annotations

import functools
import logging
import math
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import sparkplug as sp
from .client import FLOAT32_MAX
from .sparkplug import DataType as T

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("cyphy.gateway")

__all__ = ["Device", "Command", "WRITABLE_KEYS", "LOOP_METRICS", "STAT_FIELDS", "LINK_FIELDS",
           "SAMPLE_T_MS", "SIGNALS", "BLOCKS", "BLOCK_PARAMS", "CMD_LAST", "CMD_OK", "TUNE_WORDS"]

LOST_AFTER_S = 3.0          # no telemetry for this long (or the node's comms timeout): lost
RETRY_MAX_S = 2.0           # a lost node is looked for again at least this often

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
SIGNALS = "Signals"              # Signals/<name>: a block's or device channel's value
BLOCKS = "Blocks"                # Blocks/<block>/<param>: a block's parameter, writable
# The parameters of each block type a node changes while it runs (protocol 1.2 SET_PARAM;
# docs/config.md, "Blocks and tasks"): the firmware's graph.py SETTABLE, which a READ of a
# block does not tell apart from its other parameters (tests/host/test_gateway_params.py
# holds the two to the same names).
BLOCK_PARAMS: dict[str, tuple[str, ...]] = {
    "feedforward": ("gain", "bias"), "ratio": ("ratio", "bias"), "limit": ("min", "max"),
    "rate_limit": ("up_per_s", "down_per_s"),
}
CMD_LAST = "Command/last"
CMD_OK = "Command/ok"


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _float32(v: float) -> float:
    """v as the node gets it: SET_PARAM carries a float32."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _names(v: Any) -> str:
    """alarms/faults as one String metric: names joined by ',' ('' = none)."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return "" if v is None else str(v)


@dataclass
class Command:
    """A DCMD for a worker: the loops' assignments (one SET), or one block parameter
    (metric, "block.param", value: one SET_PARAM), or why it cannot be applied."""
    sets: list[tuple[str, str, float | str]] = field(default_factory=list)
    param: tuple[str, str, float] | None = None
    error: str | None = None


class Device:
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
        self.params: dict[str, str] = {}      # Blocks/<block>/<param> metric -> "block.param"
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
        for n in h.signals:             # blocks and device channels (protocol 1.2)
            types[f"{SIGNALS}/{n}"] = T.Double
            values[f"{SIGNALS}/{n}"] = None
        params = self._block_params(node, h.signals)
        for metric in params:
            types[metric] = T.Double
        values.update(self._param_values(node, params))
        types[CMD_LAST], types[CMD_OK] = T.String, T.Boolean
        values[CMD_LAST], values[CMD_OK] = self.last_command
        self.lost_after = max(LOST_AFTER_S if not h.comms_timeout_ms else h.comms_timeout_ms / 1000,
                              3 * self.gw.period_ms / 1000)
        self.name, self.loops, self.params = name, loops, params
        self._loop_names = {lp: tuple(f"{lp}/{k}" for k in (
            "setpoint", "measurement", "output", "mode", "alarms", "faults", "tuning", "tune"))
            for lp in loops}
        self._tuning = {lp: bool(values.get(f"{lp}/tuning")) for lp in loops}
        self._stats_seen = None
        self.gw._device_born(self, types, values)
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

    @staticmethod
    def _block_params(node: Any, signals: list[str]) -> dict[str, str]:
        """{Blocks/<block>/<param>: "block.param"}: the writable parameters of the node's
        blocks, from a READ of each signal (a block answers with its type; a device
        channel, or a block's output port "block.port", has none to write)."""
        from .client import CommandRejected

        out: dict[str, str] = {}
        for n in signals:
            if "." in n:
                continue
            try:
                st = node.get(n)
            except CommandRejected:
                continue            # a signal the node does not READ by name
            kind = st.get("type") if isinstance(st, dict) else None
            for key in BLOCK_PARAMS.get(kind, ()) if isinstance(kind, str) else ():
                out[f"{BLOCKS}/{n}/{key}"] = f"{n}.{key}"
        return out

    @staticmethod
    def _param_values(node: Any, params: dict[str, str]) -> dict[str, Any]:
        """The block parameters' current values (one READ per block)."""
        out: dict[str, Any] = {}
        states: dict[str, Any] = {}
        for metric, path in params.items():
            block, _, key = path.partition(".")
            if block not in states:
                states[block] = node.get(block)
            v = states[block].get(key) if isinstance(states[block], dict) else None
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            out[metric] = float(v) if ok else None
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
            for n, v in sample.get("signals", {}).items():
                changed[f"{SIGNALS}/{n}"] = v
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
            changed.update(self._param_values(self.node, self.params))
        except Exception as e:  # noqa: BLE001 - the lost check decides whether it is gone
            log.warning("%s (%s): reading the gains and block parameters: %s", self.name,
                        self.url, " ".join(str(e).split()))
        changed.update(self._link_values())
        self.gw._device_data(self, changed, True)

    def _lose(self) -> None:
        if self.node is None:
            return
        self.gw._device_lost(self)
        self._close()
        self._later(0.5, lambda: self._submit(self._connect))

    def _apply(self, cmd: Command) -> None:
        from .client import CommandRejected, ProtocolError
        from .links import LinkError

        what = ", ".join(f"{loop}/{key}={_text(v)}" for loop, key, v in cmd.sets)
        if cmd.param is not None:
            what = f"{cmd.param[0]}={_text(cmd.param[2])}"
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
                if cmd.param is not None:     # one SET_PARAM: the node sets one at a time
                    session.set_param(cmd.param[1], cmd.param[2])
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
                if cmd.param is not None:
                    update[cmd.param[0]] = _float32(cmd.param[2])
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

    def _parse_command(self, payload: bytes) -> Command:
        aliases = self.gw._aliases_of(self)
        by_alias = {a: n for n, a in aliases.items()}
        known: dict[str | int, T] = dict(self.types)
        known.update({aliases[n]: t for n, t in self.types.items() if n in aliases})
        try:
            p = sp.decode(payload, datatypes=known)
        except sp.SparkplugError as e:
            return Command(error=f"malformed payload: {e}")
        if not p.metrics:
            return Command(error="DCMD without metrics: nothing to write")
        writable = [f"{lp}/{k}" for lp in self.loops for k in WRITABLE_KEYS] + list(self.params)
        sets: list[tuple[str, str, float | str]] = []
        for m in p.metrics:
            name = m.name if m.name is not None else by_alias.get(m.alias) if m.alias is not None else None
            if name is None:
                label = f"alias {m.alias}" if m.alias is not None else "a metric without name or alias"
                return Command(error=f"{label}: no such metric of {self.name}; nothing was applied")
            param = self.params.get(name)
            loop, _, key = name.rpartition("/")
            if param is not None:
                if len(p.metrics) > 1:
                    return Command(error=f"{name}: a block's parameter is written alone, one per "
                                         f"DCMD (the node sets one at a time, never with other "
                                         f"metrics); nothing was applied")
                accepted = _NUMBERS
            elif loop in self.loops and key in WRITABLE_KEYS:
                accepted = WRITABLE_KEYS[key]
            else:
                return Command(error=f"{name}: not a writable metric of {self.name} (writable: "
                                      f"{', '.join(writable)}); nothing was applied")
            if not self.gw.allows(name):
                return Command(error=f"{name}: not allowed by this gateway (--allow "
                                      f"{' '.join(self.gw.allow)}); nothing was applied")
            if m.is_null or m.value is None:
                return Command(error=f"{name}: a null value; nothing was applied")
            dt = m.datatype
            if dt is None or dt not in accepted or isinstance(m.value, bool):
                want = self.types.get(name, T.Double).name
                got = dt.name if dt is not None else type(m.value).__name__
                return Command(error=f"{name}: wrong datatype {got}, expected {want}; "
                                      f"nothing was applied")
            v = m.value
            if param is not None:
                if not isinstance(v, (int, float)) or not (math.isfinite(v)
                                                           and abs(v) <= FLOAT32_MAX):
                    return Command(error=f"{name}={_text(v)}: out of range: not a finite "
                                          f"float32 number; nothing was applied")
                return Command(param=(name, param, float(v)))   # the DCMD's only metric
            if key == "tune":
                if v not in TUNE_WORDS:
                    return Command(error=f"{name}={v!r}: tune is \"start\" or \"abort\"; "
                                          f"nothing was applied")
            elif key == "mode":
                if v not in ("auto", "manual"):
                    return Command(error=f"{name}={v!r}: mode is \"auto\" or \"manual\"; "
                                          f"nothing was applied")
            elif not isinstance(v, (int, float)) or not math.isfinite(v):
                return Command(error=f"{name}={_text(v)}: out of range: not a finite number; "
                                      f"nothing was applied")
            sets.append((loop, key, v if key in ("mode", "tune") else float(v)))
        return Command(sets=sets)


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
