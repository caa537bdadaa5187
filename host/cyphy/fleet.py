"""The host side of a fleet: a Sparkplug B 3.0 *host application* that reads and writes a
cyphy node through its `cyphy gateway` and an MQTT broker (issue 16, item 2).

    with cyphy.connect("mqtt://broker.plant/plant/gw1/oven-1") as node:   # an MqttNode
        node.get("oven")                    # the loop's values, from the gateway's metrics
        node.set("oven.setpoint", 60)       # a DCMD; Command/last, Command/ok: ACK or NACK
        node.set_param("mix.ratio", 1.5)    # a block's parameter: a DCMD of Blocks/mix/ratio
        for sample in node.telemetry():     # one sample per DDATA with loop values
            ...

    discover("mqtt://broker.plant")         # the devices on the broker, from their births

An mqtt:// URL is not a frame link: the gateway holds the node's protocol session and key
(keys never leave the gateway's host); this module speaks only Sparkplug B (cyphy.sparkplug)
to the broker (cyphy.mqtt). Births are not retained, so a host that joins late asks the
edge node for them: an NCMD `Node Control/Rebirth` (5.17), answered with an NBIRTH and a
DBIRTH for *every* device of that gateway, which every host on the group receives too.
Each MqttNode and each `discover` does this once (and again after an unknown alias).
Section numbers are those of the Sparkplug 3.0.0 specification; docs/fleet.md, "Host tools
over the broker", describes the behaviour.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from typing import Any, Iterator

import paho.mqtt.client as paho

from . import codec as P
from . import mqtt
from . import sparkplug as sp
from .client import CommandRejected, LinkStats, ProtocolError
from .gateway_device import (BLOCKS, CMD_LAST, CMD_OK, LINK_FIELDS, SIGNALS,  # the metrics' names
                             STAT_FIELDS)
from .mqtt import MqttError
from .sparkplug import DataType as T, Metric, Payload

log = logging.getLogger("cyphy.fleet")

__all__ = ["MqttNode", "discover", "MqttError"]

# the gateway's metrics (cyphy.gateway, docs/fleet.md "Metrics of a cyphy node")
LOOP_KEYS = ("setpoint", "measurement", "output", "mode", "alarms", "faults", "tuning",
             "kp", "ki", "kd")
NUMERIC_WRITES = frozenset({"setpoint", "kp", "ki", "kd", "output"})
NODE_ONLY = frozenset({"faults"})   # api.Node.get paths without a metric on the broker
_FAULT_BITS = {"sensor": 1, "exception": 2, "comms": 4, "stopped": 8, "peer": 16}
BIRTH_GRACE_S = 0.5     # after a rebirth request, its births follow within a round trip
REBIRTH_AGAIN_S = 5.0   # at most one rebirth request this often (an unknown alias)
_ids = itertools.count()


def _client_id(what: str) -> str:
    return f"cyphy-{what}-{os.getpid()}-{next(_ids)}-{os.urandom(3).hex()}"


def _names(text: Any) -> list[str]:
    return [x for x in str(text or "").split(",") if x]


def _status(mode: Any, alarms: list[str], faults: list[str], tuning: Any) -> int:
    """The telemetry status word (docs/protocol.md) of the gateway's metrics: what
    cyphy.client.status_names reads back."""
    s = P.ST_AUTO if mode == "auto" else 0
    s |= P.ST_ALARM_LOW if "low" in alarms else 0
    s |= P.ST_ALARM_HIGH if "high" in alarms else 0
    s |= sum(_FAULT_BITS.get(f, 0) for f in faults) << P.ST_FAULT_SHIFT
    return s | (P.ST_TUNING if tuning else 0)


def _rejection(text: str) -> ProtocolError:
    """The exception for a DCMD the gateway answered Command/ok false: CommandRejected
    (what api.Node.set raises on a NACK) with the gateway's Command/last as its message,
    or ProtocolError when the node did not answer the gateway (not a refusal)."""
    if "the node did not answer" in text:
        return ProtocolError(text)
    reason = P.R_UNKNOWN_TARGET if "writable metric" in text or "no such metric" in text \
        else P.R_MALFORMED if "datatype" in text or "malformed" in text else P.R_OUT_OF_RANGE
    _, said, rest = text.partition("rejected by the node: ")
    if said:
        for code, name in P.REASONS.items():
            if rest.startswith(name):
                reason = code
                break
    e = CommandRejected(reason, text)
    e.args = (text,)
    return e


class MqttNode:
    """A cyphy node behind a gateway, as a Sparkplug host application sees it: the same
    methods as cyphy.api.Node where they make sense over the broker. Opening it connects
    to the broker, asks the edge node for a rebirth and waits (timeout) for the device's
    DBIRTH; from then on its DDATA keep the values current."""

    def __init__(self, url: str, timeout: float = 2.0, *, command_timeout: float = 10.0,
                 connect_timeout: float = 5.0, keepalive: int = 10) -> None:
        self.target = mqtt.parse_node_url(url)
        self.url = str(self.target)
        self.broker = self.target.broker
        self.timeout = timeout
        self.command_timeout = command_timeout
        t = self.target
        # the edge node's messages, every DBIRTH of its devices (to say which it has), and
        # the device's DDATA and DDEATH: no two filters match one topic (no duplicates)
        ns = f"{sp.NAMESPACE}/{t.group}"
        self._topics = [f"{ns}/+/{t.edge}", f"{ns}/DBIRTH/{t.edge}/+",
                        f"{ns}/DDATA/{t.edge}/{t.device}", f"{ns}/DDEATH/{t.edge}/{t.device}"]
        self._cond = threading.Condition()
        self._types: dict[str, T] = {}
        self._values: dict[str, Any] = {}
        self._aliases: dict[int, str] = {}
        self._born = False
        self._births = 0
        self._nbirth_at: float | None = None    # monotonic time of the last NBIRTH
        self._bdseq: int | None = None
        self._edge_devices: list[str] = []      # DBIRTHs seen since that NBIRTH
        self._lost: str | None = None           # why the device is not born (DDEATH...)
        # (Command/last, Command/ok, the DDATA's metric names) of recent DDATA with Command/ok;
        # _answered counts them all (the list keeps the last ones)
        self._answers: list[tuple[str, bool, frozenset[str]]] = []
        self._answered = 0
        self._stream: queue.Queue[tuple[str, Any]] | None = None
        self._rebirth_at = 0.0
        self._sub_mids: set[int] = set()
        self._closed = False
        self.client = mqtt.make_client(self.broker, _client_id("host"))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.suppress_exceptions = True
        mqtt.connect(self.client, self.broker, timeout=max(connect_timeout, timeout),
                     keepalive=keepalive)
        try:
            self._wait_born(timeout)
        except BaseException:
            self.close()
            raise

    # ---- the user's side ----

    def __enter__(self) -> "MqttNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            mqtt.stop(self.client)

    @property
    def name(self) -> str:
        """The node's name: the Sparkplug device_id."""
        return self.target.device

    @property
    def loops(self) -> list[str]:
        with self._cond:
            text = self._values.get("Node Info/loops")
            if isinstance(text, str):
                return _names(text)
            return sorted({n.split("/", 1)[0] for n in self._types
                           if n.endswith("/setpoint") and n.count("/") == 1})

    @property
    def link_stats(self) -> LinkStats:
        """The gateway's link to the node (its Link/* metrics, every --report-s)."""
        with self._cond:
            return LinkStats(**{f: int(self._values.get(f"Link/{f}") or 0) for f in LINK_FIELDS})

    def stats(self) -> dict[str, Any]:
        """Per loop: ticks, overruns, skipped, jitter and compute time (the node's STATS,
        through the gateway's metrics, once a second); the last known while the device is
        away (never raises: the monitor's table asks for it)."""
        with self._cond:
            return {lp: {f: self._values.get(f"{lp}/stats/{f}") for f in STAT_FIELDS}
                    for lp in self.loops}

    def get(self, path: str) -> Any:
        """node.get("oven.measurement"), node.get("oven") (the loop's values), "state",
        "stats", "info": the gateway's latest values (sent on change). Anything else is
        not published on the broker: MqttError (a LinkError) naming what is."""
        with self._cond:
            self._check_born()
            loops = self.loops
            if path == "state":
                return {lp: self._loop(lp) for lp in loops}
            if path == "stats":
                return {lp: {f: self._values.get(f"{lp}/stats/{f}") for f in STAT_FIELDS}
                        for lp in loops}
            if path == "info":
                v = self._values
                return {"name": self.name, "board": v.get("Node Info/board"),
                        "firmware": v.get("Node Info/firmware"), "loops": loops,
                        "gateway": f"{self.target.group}/{self.target.edge}",
                        "gateway_link": v.get("Node Info/url"),
                        "link": {f: v.get(f"Link/{f}") for f in LINK_FIELDS},
                        "command": {"last": v.get(CMD_LAST), "ok": v.get(CMD_OK)}}
            if path in loops:
                return self._loop(path)
            signals = self._signals()
            if path in signals:
                return signals[path]
            loop, dot, key = path.partition(".")
            if dot and loop in loops and key in LOOP_KEYS:
                return self._loop(loop)[key]
            if dot and loop in loops and key == "stats":
                return {f: self._values.get(f"{loop}/stats/{f}") for f in STAT_FIELDS}
            if dot and loop in signals and key in signals[loop]:
                return signals[loop][key]
            if dot and loop in signals:
                why = (f"{loop} has no {key!r} published by the gateway (it has "
                       f"{', '.join(signals[loop])})")
            elif dot and loop not in loops or not dot and path not in NODE_ONLY:
                what = loop if dot else path
                why = (f"no loop {what!r} on {self.name} (loops: {', '.join(loops) or 'none'}"
                       + (f"; blocks and channels: {', '.join(signals)}" if signals else "") + ")")
            else:
                why = "not published through the gateway"
            have = ", ".join(["state", "stats", "info", "LOOP",
                              "LOOP." + "|".join(LOOP_KEYS), "LOOP.stats"]
                             + (["SIGNAL", "SIGNAL.value", "BLOCK.PARAM"] if signals else []))
            raise MqttError(f"{self.url}: {path!r}: {why}; over the broker: {have} (the rest "
                            f"over the node's own link, on the gateway's host)")

    def set_param(self, path: str, value: float) -> None:
        """node.set_param("mix.ratio", 1.5): a block's parameter, one DCMD of the metric
        Blocks/mix/ratio, which the gateway makes one SET_PARAM; returns when it reports
        the node's ACK, raises CommandRejected with the reason otherwise (a block or
        parameter the gateway does not publish as writable, the node's refusal)."""
        block, dot, key = path.partition(".")
        if not (dot and block and key) or "/" in path:
            raise CommandRejected(P.R_UNKNOWN_TARGET, f"{path!r}: write block.param, e.g. "
                                  f"mix.ratio")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandRejected(P.R_MALFORMED, f"{path} = {value!r}: a block's parameter "
                                  f"is a number")
        name = f"{BLOCKS}/{block}/{key}"
        ts = sp.now_ms()
        self._command([Metric(name, T.Double, float(value), timestamp=ts)], [name], block)

    def set(self, path: str, value: float | str) -> None:
        """node.set("oven.setpoint", 60): one DCMD; returns when the gateway reports the
        node's ACK (Command/ok), raises CommandRejected with the reason on a NACK."""
        self.set_many([(path, value)])

    def set_many(self, assignments: list[tuple[str, float | str]], save: bool = False) -> None:
        """Every assignment in one DCMD: the gateway makes it one SET, all applied or none.
        CommandRejected (the node's or the gateway's reason, from Command/last) if refused;
        ProtocolError if no answer comes within command_timeout (then it may or may not
        have been applied)."""
        from .api import _split

        if save:
            raise MqttError(f"{self.url}: --save is not available through a gateway (a DCMD "
                            f"is never persisted): set it over the node's own link")
        ts = sp.now_ms()
        metrics: list[Metric] = []
        names: list[str] = []
        for path, value in assignments:
            loop, key = _split(path)
            name = f"{loop}/{key}"
            names.append(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics.append(Metric(name, T.Double, float(value), timestamp=ts))
            else:
                metrics.append(Metric(name, T.String, str(value), timestamp=ts))
        self._command(metrics, names, names[0].split("/")[0])

    def _command(self, metrics: list[Metric], names: list[str], show: str) -> None:
        """One DCMD of metrics (names: theirs); returns at the gateway's Command/ok true,
        raises at its Command/ok false or when no answer comes. show: what `cyphy get`
        would read to check."""
        data = sp.encode(Payload(timestamp=sp.now_ms(), metrics=metrics))
        topic = sp.topic("DCMD", self.target.group, self.target.edge, self.target.device)
        with self._cond:
            self._check_born()
            first = self._answered
            births = self._births
            # 3.0: commands are QoS 0, not retained (tck-id-topics-dcmd-mqtt)
            info = self.client.publish(topic, data, qos=0, retain=False)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise MqttError(f"broker {self.broker}: cannot publish the DCMD "
                                f"({paho.error_string(info.rc)})")
            end = time.monotonic() + self.command_timeout
            # The answer is the DDATA with Command/last, Command/ok and (if applied) the
            # written metrics, nothing else; the gateway's full reports (every --report-s)
            # repeat the last command's result with every other metric: not an answer.
            mine = {CMD_LAST, CMD_OK, *names}
            while True:
                new = self._answered - first
                for last, ok, sent in self._answers[max(0, len(self._answers) - new):] if new else ():
                    if sent <= mine and any(n in last for n in names):
                        if ok:
                            return
                        raise _rejection(last)
                first = self._answered
                if self._lost is not None and self._births == births:
                    raise ProtocolError(f"{self.name}: {self._lost}; the DCMD may or may not "
                                        f"have been applied")
                left = end - time.monotonic()
                if left <= 0:
                    raise ProtocolError(
                        f"{self.name}: no answer to the DCMD from {self.target.group}/"
                        f"{self.target.edge} within {self.command_timeout:g} s: it may or may "
                        f"not have been applied (cyphy get {self.url} {show} shows the "
                        f"values)")
                self._cond.wait(left)

    def _not_here(self, what: str) -> MqttError:
        return MqttError(f"{self.url}: {what} is not available through a gateway (its DCMDs "
                         f"write setpoints, gains, modes and outputs only): use the node's own "
                         f"link on the gateway's host (serial://, udp://, sim://)")

    def tune(self, loop: str, *_a: Any, **_kw: Any) -> dict:
        """Not through a gateway: MqttError."""
        raise self._not_here("an autotune")

    def forget_tuning(self, loop: str) -> None:
        """Not through a gateway: MqttError."""
        raise self._not_here("forgetting the persisted tuning")

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Not through a gateway: MqttError."""
        raise self._not_here("running code on the node")

    def telemetry(self, period_ms: int = 100, batch: int = 1, stats_s: int = 1,
                  timeout: float = 5.0) -> Iterator[dict]:
        """Samples as the gateway sends them, one per DBIRTH and DDATA: {"t_ms" (the
        gateway's timestamp, ms since the epoch), "loops": {name: {setpoint, measurement,
        output, status}}, and for a node with blocks or device channels "signals": {name:
        value} (those with a value yet)}. period_ms, batch, stats_s: the gateway's
        --period-ms decides (they are here for api.Node's signature). Ends with
        ProtocolError when the device dies (DDEATH, NDEATH, broker lost) or nothing comes
        for timeout seconds."""
        with self._cond:
            self._check_born()
            self._stream = queue.Queue()
        return self._samples(self._stream, timeout)

    def _samples(self, q: queue.Queue[tuple[str, Any]], timeout: float) -> Iterator[dict]:
        while True:
            try:
                kind, what = q.get(timeout=timeout)
            except queue.Empty:
                raise ProtocolError(f"{self.name}: no DDATA from {self.target.group}/"
                                    f"{self.target.edge} for {timeout:.1f} s") from None
            if kind == "lost":
                raise ProtocolError(f"{self.name}: {what}")
            if kind == "sample":
                yield what

    # ---- under the lock ----

    def _loop(self, loop: str) -> dict[str, Any]:
        v = self._values
        out: dict[str, Any] = {k: v.get(f"{loop}/{k}") for k in LOOP_KEYS}
        out["alarms"], out["faults"] = _names(out["alarms"]), _names(out["faults"])
        return out

    def _signals(self) -> dict[str, dict[str, Any]]:
        """{signal: {"value", and a block's writable parameters}} from the Signals/<name>
        and Blocks/<block>/<param> metrics."""
        out: dict[str, dict[str, Any]] = {}
        for n in self._types:
            if n.startswith(f"{SIGNALS}/"):
                out[n[len(SIGNALS) + 1:]] = {"value": self._values.get(n)}
        for n in self._types:
            if n.startswith(f"{BLOCKS}/"):
                block, _, key = n[len(BLOCKS) + 1:].rpartition("/")
                out.setdefault(block, {"value": None})[key] = self._values.get(n)
        return out

    def _sample(self, ts: int | None) -> dict:
        loops = {}
        for lp in self.loops:
            d = self._loop(lp)
            loops[lp] = {"setpoint": d["setpoint"], "measurement": d["measurement"],
                         "output": d["output"],
                         "status": _status(d["mode"], d["alarms"], d["faults"], d["tuning"])}
        sample: dict[str, Any] = {"t_ms": ts if ts is not None else sp.now_ms(), "loops": loops}
        signals = {n[len(SIGNALS) + 1:]: v for n, v in self._values.items()
                   if n.startswith(f"{SIGNALS}/") and v is not None}
        if signals:    # blocks and device channels, by name (as cyphy.client's samples)
            sample["signals"] = signals
        return sample

    def _check_born(self) -> None:
        if self._closed:
            raise MqttError(f"{self.url}: closed")
        if not self._born:
            raise ProtocolError(f"{self.name}: {self._lost or 'not born'}")

    def _wait_born(self, timeout: float) -> None:
        """Until the device's DBIRTH (asked for by the rebirth request once subscribed; a
        device the gateway births later on its own counts too), at most timeout s."""
        t = self.target
        end = time.monotonic() + timeout
        with self._cond:
            while not self._born:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._born:
                return
            if self._nbirth_at is not None:
                have = ", ".join(self._edge_devices) or "none"
                raise MqttError(
                    f"{t.group}/{t.edge} on {self.broker} has no device {t.device} online "
                    f"(its devices: {have}): check the name (cyphy discover --broker "
                    f"{self.broker} lists them); a device is there while its gateway has a "
                    f"session with the node (the gateway's log says why not)")
            raise MqttError(
                f"no device {t.device} under {t.group}/{t.edge} on {self.broker} within "
                f"{timeout:g} s: is the gateway running? cyphy discover --broker "
                f"{self.broker} lists the devices")

    def _lose(self, why: str) -> None:
        if self._born:
            self._born = False
            self._lost = why
            if self._stream is not None:
                self._stream.put(("lost", why))
        self._cond.notify_all()

    # ---- MQTT (paho's thread) ----

    def _on_connect(self, c: paho.Client, _u: object, _f: dict, rc: int) -> None:
        if rc == 0:
            _rc, mid = c.subscribe([(tp, 0) for tp in self._topics])
            with self._cond:
                self._sub_mids.add(mid)

    def _on_subscribe(self, _c: paho.Client, _u: object, mid: int, _granted: tuple) -> None:
        with self._cond:
            ours = mid in self._sub_mids
            self._sub_mids.discard(mid)
        if ours:
            self._rebirth()   # subscribed first: the births cannot pass us by

    def _rebirth(self) -> None:
        self._rebirth_at = time.monotonic()
        t = self.target
        p = Payload(timestamp=sp.now_ms(), metrics=[Metric(sp.NODE_CONTROL_REBIRTH, T.Boolean, True)])
        self.client.publish(sp.topic("NCMD", t.group, t.edge), sp.encode(p), qos=0, retain=False)
        log.debug("%s/%s: NCMD %s", t.group, t.edge, sp.NODE_CONTROL_REBIRTH)

    def _on_disconnect(self, _c: paho.Client, _u: object, rc: int) -> None:
        if self._closed:
            return
        with self._cond:
            self._nbirth_at = None
            self._lose(f"broker {self.broker}: connection lost ({paho.error_string(rc)})")

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            t = sp.parse_topic(msg.topic)
        except sp.SparkplugError:
            return  # not Sparkplug (amqtt replays others' retained messages)
        me = self.target
        if t.group_id != me.group or t.edge_node_id != me.edge:
            return
        kind = t.message_type
        if kind in (sp.MessageType.NCMD, sp.MessageType.DCMD):
            return  # ours, or another host's
        try:
            p = sp.decode(msg.payload, datatypes=None if kind is not sp.MessageType.DDATA
                          else self._datatypes())
        except sp.SparkplugError as e:
            log.warning("%s: not a Sparkplug B payload (%s): ignored", msg.topic, e)
            return
        with self._cond:
            if kind is sp.MessageType.NBIRTH:
                self._nbirth_at = time.monotonic()
                self._bdseq = sp.bdseq_of(p)
                self._edge_devices = []
            elif kind is sp.MessageType.NDEATH:
                # 5.x: an NDEATH counts only if its bdSeq is the current NBIRTH's
                if self._bdseq is None or sp.bdseq_of(p) in (None, self._bdseq):
                    self._nbirth_at = None
                    self._lose(f"{me.group}/{me.edge}: NDEATH: the gateway went offline")
            elif kind is sp.MessageType.DBIRTH:
                if t.device_id not in self._edge_devices:
                    self._edge_devices.append(t.device_id or "")
                if t.device_id == me.device:
                    self._birth(p)
            elif t.device_id != me.device:
                pass
            elif kind is sp.MessageType.DDEATH:
                self._lose(f"DDEATH: {me.group}/{me.edge} lost its session with the node")
            elif kind is sp.MessageType.DDATA and self._born:
                self._data(p)
            self._cond.notify_all()

    def _datatypes(self) -> dict[str | int, T]:
        with self._cond:
            out: dict[str | int, T] = dict(self._types)
            out.update({a: self._types[n] for a, n in self._aliases.items() if n in self._types})
            return out

    def _birth(self, p: Payload) -> None:
        types: dict[str, T] = {}
        values: dict[str, Any] = {}
        aliases: dict[int, str] = {}
        for m in p.metrics:
            if m.name is None:
                continue
            if m.datatype is not None:
                types[m.name] = m.datatype
            values[m.name] = m.value
            if m.alias is not None:
                aliases[m.alias] = m.name
        self._types, self._values, self._aliases = types, values, aliases
        self._born, self._lost = True, None
        self._births += 1
        if self._stream is not None:
            self._stream.put(("sample", self._sample(p.timestamp)))

    def _data(self, p: Payload) -> None:
        names = []
        unknown = False
        taken: int | None = None   # the time of the historical values being gathered
        for m in p.metrics:
            name = m.name if m.name is not None else self._aliases.get(m.alias) \
                if m.alias is not None else None
            if name is None:
                unknown = True
                continue
            if m.is_historical and m.timestamp != taken or not m.is_historical and taken is not None:
                # a gateway with --batch sends a frame's older samples first, as historical
                # values with the time each was taken: one sample each, in order
                if taken is not None and self._stream is not None:
                    self._stream.put(("sample", self._sample(taken)))
                taken = m.timestamp if m.is_historical else None
            self._values[name] = None if m.is_null else m.value
            names.append(name)
        if taken is not None and self._stream is not None:
            self._stream.put(("sample", self._sample(taken)))
        if unknown and time.monotonic() - self._rebirth_at > REBIRTH_AGAIN_S:
            self._rebirth()   # aliases we do not know: a birth we missed
        if CMD_OK in names:
            self._answers.append((str(self._values.get(CMD_LAST) or ""),
                                  bool(self._values.get(CMD_OK)), frozenset(names)))
            self._answered += 1
            del self._answers[:-32]   # a waiting set_many looks at most at these
        if self._stream is not None:
            # every DDATA: the loops' values as of the gateway's timestamp (it sends the
            # telemetry on change, and the STATS counters at least once a second)
            self._stream.put(("sample", self._sample(p.timestamp)))


def discover(broker_url: str, group: str | None = None, timeout: float = 2.0,
             what: str = "--broker") -> list[dict[str, Any]]:
    """The devices on a broker, from their DBIRTHs: each {"url", "group", "edge", "device",
    "loops", "firmware", "board", "link"}. Listens to spBv1.0/GROUP/# (every group if
    None) for timeout seconds and asks every edge node it hears from for a rebirth (once):
    its NBIRTH and DBIRTHs then arrive (an edge node with no device online is silent, and
    has nothing to list). A device whose DDEATH or NDEATH comes after its birth is left
    out."""
    b = mqtt.parse_broker_url(broker_url, what)
    if group is not None:
        try:
            sp.validate_id(group, "--group")
        except sp.SparkplugError as e:
            raise MqttError(f"{e} (Sparkplug ids are non-empty, without + / #)") from None
    lock = threading.Lock()
    asked: dict[tuple[str, str], float] = {}
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    client = mqtt.make_client(b, _client_id("discover"))
    subscribed = threading.Event()
    topic = f"{sp.NAMESPACE}/{group}/#" if group else f"{sp.NAMESPACE}/#"

    def on_connect(c: paho.Client, _u: object, _f: dict, rc: int) -> None:
        if rc == 0:
            c.subscribe(topic, 0)

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            t = sp.parse_topic(msg.topic)
        except sp.SparkplugError:
            return
        if t.message_type in (sp.MessageType.STATE, sp.MessageType.NCMD, sp.MessageType.DCMD):
            return
        if group is not None and t.group_id != group:
            return
        edge = (t.group_id or "", t.edge_node_id or "")
        with lock:
            if edge not in asked:
                asked[edge] = time.monotonic()
                p = Payload(timestamp=sp.now_ms(),
                            metrics=[Metric(sp.NODE_CONTROL_REBIRTH, T.Boolean, True)])
                c.publish(sp.topic("NCMD", *edge), sp.encode(p), qos=0, retain=False)
            key = (*edge, t.device_id or "")
            if t.message_type is sp.MessageType.DBIRTH:
                try:
                    p = sp.decode(msg.payload)
                except sp.SparkplugError:
                    return
                v = {m.name: m.value for m in p.metrics if m.name is not None}
                loops = _names(v.get("Node Info/loops")) or sorted(
                    {n.split("/", 1)[0] for n in v if n.endswith("/setpoint") and n.count("/") == 1})
                found[key] = {"url": b.node_url(*key), "group": key[0], "edge": key[1],
                              "device": key[2], "loops": loops,
                              "firmware": v.get("Node Info/firmware"),
                              "board": v.get("Node Info/board"), "link": v.get("Node Info/url")}
            elif t.message_type is sp.MessageType.DDEATH:
                found.pop(key, None)
            elif t.message_type is sp.MessageType.NDEATH:
                for k in [k for k in found if k[:2] == edge]:
                    del found[k]

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.suppress_exceptions = True
    mqtt.connect(client, b, timeout=max(5.0, timeout))
    try:
        subscribed.wait(max(5.0, timeout))
        end = time.monotonic() + timeout
        while True:
            with lock:
                # births answer a rebirth request within a round trip: wait for the last
                last = max(asked.values(), default=0.0) + BIRTH_GRACE_S
            left = max(end, min(last, end + BIRTH_GRACE_S)) - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))
    finally:
        mqtt.stop(client)
    with lock:
        return [found[k] for k in sorted(found)]
