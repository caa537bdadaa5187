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
run as jobs in the pool, one at a time per node (cyphy.gateway_device: a node as a Device).
No thread per node: a gateway serves hundreds of nodes at the same cost per frame as one.
Section numbers in comments are those of the Sparkplug 3.0.0 specification; docs/fleet.md
("Gateway", "Metrics of a cyphy node") describes what a host application sees.

Threads and order: every publish that carries a `seq`, and every change of what has been
born, happens under one lock (`Gateway._lock`), so that seq is strictly increasing on the
wire (6.4.5, 4.2), an NBIRTH precedes its DBIRTHs, and no DDATA of a device goes out
before its DBIRTH in the current MQTT session (tck-id-operational-behavior-device-ddata).
paho's publish() only queues the packet, so nothing slow is done under the lock.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from typing import Any, Sequence
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt

from . import mqtt as mqtt_url
from . import sparkplug as sp
from .gateway_device import CMD_LAST, CMD_OK, SAMPLE_T_MS, WRITABLE_KEYS, Device
from .hub import Hub
from .mqtt import BrokerUrl
from .sparkplug import DataType as T, Metric, Payload

log = logging.getLogger("cyphy.gateway")

__all__ = ["Gateway", "GatewayError", "parse_broker_url", "check_node_url", "check_allow_pattern",
           "WRITABLE_KEYS", "SAMPLE_T_MS"]

REPORT_S = 10.0             # every metric again in a DDATA this often (and gains re-read)
MAX_BATCH = 16              # samples per telemetry frame, at most (docs/protocol.md, SUBSCRIBE)
DISCOVER_EVERY_S = 30.0     # --discover: look for new nodes this often
POOL_WORKERS = 16           # jobs that wait for nodes (open, DCMD, reports) at once


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
        self.devices = [Device(self, u) for u in node_urls]
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
            d = Device(self, f.url)
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

    def _dbirth(self, d: Device) -> None:
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

    def _aliases_of(self, d: Device) -> dict[str, int]:
        with self._lock:
            return dict(self._aliases.get(d.name or "", {}))

    def _device_named(self, name: str) -> Device | None:
        with self._lock:
            for d in self.devices:
                if d.name == name:
                    return d
        return None

    def _device_born(self, d: Device, types: dict[str, T], values: dict[str, Any]) -> None:
        with self._lock:
            d.types, d.values = types, values
            if self.online and not self._stopping.is_set():
                self._dbirth(d)
        log.info("%s (%s): DBIRTH, loops %s", d.node.name, d.url, ", ".join(d.node.loops))

    def _device_data(self, d: Device, values: dict[str, Any], full: bool,
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

    def _device_lost(self, d: Device) -> None:
        with self._lock:
            if d.born and self.online and not self._stopping.is_set():
                # tck-id-operational-behavior-device-ddeath: the device is gone.
                self._publish("DDEATH", d.name, [])
                log.warning("%s (%s): DDEATH", d.name, d.url)
            d.born = False
            d.types = {}
