"""`cyphy gateway` (cyphy.gateway): a Sparkplug B 3.0 Edge Node serving a real sim node
(the real firmware, with a key, on UDP) through a real broker of each kind. Everything the
gateway publishes is decoded with pysparkplug (its protobuf classes, generated from the
official sparkplug_b.proto, and its public API), and the commands are built with it: an
independent implementation, not cyphy.sparkplug.

The sim node boots once for the module (about 6 s). The gateway talks to it over UDP; the
tests check the node over its serial console (sim://), a session of its own."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pysparkplug as psp
import pytest
from pysparkplug._protobuf import Payload as PB

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import power_on  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

import cyphy  # noqa: E402
from cyphy.api import LinkError, ProtocolError  # noqa: E402
from cyphy.gateway import Gateway  # noqa: E402
from cyphy.sim import control  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402

CYPHY = str(Path(sys.executable).parent / "cyphy")
WAIT = 8.0       # s: the longest one gateway event may take here (a node's boot excepted)
SIM = "gw"       # the sim node's name on this host
NAME = "oven-1"  # the node's own name: the Sparkplug device_id
WIFI = {"wifi": {"ssid": "lab", "password": "not-printed-anywhere"}}
D = psp.DataType

# metric -> pysparkplug datatype, as docs/fleet.md ("Metrics of a cyphy node") lists them
EXPECTED = {
    "oven/setpoint": D.DOUBLE, "oven/measurement": D.DOUBLE, "oven/output": D.DOUBLE,
    "oven/mode": D.STRING, "oven/alarms": D.STRING, "oven/faults": D.STRING,
    "oven/tuning": D.BOOLEAN, "oven/kp": D.DOUBLE, "oven/ki": D.DOUBLE, "oven/kd": D.DOUBLE,
    "oven/tune": D.STRING,
    **{f"oven/stats/{f}": D.UINT32 for f in ("ticks", "overruns", "skipped", "jitter_p99_us",
                                              "jitter_max_us", "compute_mean_us", "compute_max_us")},
    "Node Info/firmware": D.STRING, "Node Info/board": D.STRING, "Node Info/url": D.STRING,
    "Node Info/loops": D.STRING,
    **{f"Link/{f}": D.UINT64 for f in ("frames", "lost", "bad_tag", "replayed", "retries",
                                       "reopened")},
    "Telemetry/t_ms": D.UINT32,
    "Command/last": D.STRING, "Command/ok": D.BOOLEAN,
    "Signals/double": D.DOUBLE,     # a block's value (protocol 1.2 telemetry signals)
    "Blocks/double/ratio": D.DOUBLE, "Blocks/double/bias": D.DOUBLE,   # its writable parameters
}


class UdpNode:
    def __init__(self, home: Path, url: str) -> None:
        self.home, self.url = home, url

    def stop(self) -> None:
        control.stop(SIM, home=self.home)

    def start(self) -> None:
        control.start(SIM, baud=0, home=self.home)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UdpNode]:
    """The sim node, booted once: the real firmware with KEY_HEX, UDP on; CYPHY_HOME and
    CYPHY_KEY set for the module (the gateway and the tests' sessions find the key)."""
    import socket

    home = tmp_path_factory.mktemp("gateway-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CYPHY_HOME", str(home))
    mp.setenv("CYPHY_KEY", KEY_HEX)

    class Started:
        def __init__(self, port: str) -> None:
            self.port = port

    def start(name: str, baud: int = 0, files: dict[str, bytes] | None = None, **kw) -> Started:
        return Started(power_on(name, home, files, baud=baud, **kw)["port"])

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp_port = s.getsockname()[1]
    config = copy.deepcopy(CONFIG)
    config["comms"] = {"udp": True, "udp_port": udp_port}
    # a block (twice the temperature) in a task of its own: a signal in the telemetry
    config["blocks"] = [{"name": "double", "type": "ratio", "input": "temp", "ratio": 2}]
    config["tasks"] = [{"name": "calc", "rate_hz": 10, "order": ["double"]}]
    try:
        boot(start, SIM, config=config, secrets=WIFI)
        ip = Node.named(SIM, home).config()["ip"]
        n = UdpNode(home, f"udp://{ip}:{udp_port}")
        wait_for_udp(n.url)
        yield n
    finally:
        control.stop(SIM, home=home)
        mp.undo()


def wait_for_udp(url: str, timeout: float = 20.0) -> None:
    """Until the node answers a HELLO on UDP (it joins the sim's Wi-Fi after boot)."""
    end = time.monotonic() + timeout
    while True:
        try:
            cyphy.connect(url, timeout=0.5).close()
            return
        except (ProtocolError, LinkError):
            assert time.monotonic() < end, f"{url}: no HELLO within {timeout} s"


class Host:
    """A Sparkplug host application in the test: every message of the group, in order."""

    def __init__(self, client, group: str) -> None:
        self.c, self.group = client, group
        self.log: list[tuple[str, bytes]] = []    # every message of the group, as received
        client.subscribe(f"spBv1.0/{group}/#", qos=0)

    def next(self, kind: str, device: str | None = None, timeout: float = WAIT,
             where=None) -> bytes:
        """The payload of the next `kind` message (of `device`) for which where(raw) holds."""
        want = f"spBv1.0/{self.group}/{kind}/gw1" + (f"/{device}" if device else "")
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            got = f"got {[t for t, _ in self.log[-8:]]}"
            assert left > 0, f"no {want} within {timeout} s; {got}"
            try:
                msg = self.c.get(left)
            except AssertionError as e:     # nothing more came: say what did
                raise AssertionError(f"no {want} within {timeout} s; {got}; {e}") from None
            if not msg.topic.startswith(f"spBv1.0/{self.group}/"):
                continue  # amqtt replays other clients' retained messages (docs/brokers.md)
            self.log.append((msg.topic, bytes(msg.payload)))
            if msg.topic == want and (where is None or where(bytes(msg.payload))):
                return bytes(msg.payload)

    def command(self, kind: str, device: str | None, payload: bytes) -> None:
        topic = f"spBv1.0/{self.group}/{kind}/gw1" + (f"/{device}" if device else "")
        self.c.publish(topic, payload, qos=0)

    def seqs(self) -> list[int]:
        """seq of every message of the Edge Node but NDEATH, in the order received (our
        own commands come back to us too: not counted)."""
        return [PB.FromString(raw).seq for t, raw in self.log
                if t.split("/")[2] in ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH")]


def dcmd(*metrics: psp.Metric) -> bytes:
    """A DCMD built by pysparkplug (datatypes included, as Ignition sends them)."""
    return psp.DCmd(timestamp=psp.get_current_timestamp(), metrics=metrics).encode(include_dtypes=True)


def metric(name: str | None, dt: psp.DataType, value, alias: int | None = None) -> psp.Metric:
    return psp.Metric(timestamp=psp.get_current_timestamp(), name=name, datatype=dt,
                      value=value, alias=alias)


def values(raw: bytes, birth: psp.DBirth) -> dict[str, object]:
    """A DDATA's metrics by name, names and datatypes from the birth (pysparkplug's API)."""
    return {m.name: m.value for m in psp.DData.decode(raw, birth=birth).metrics}


def has(name: str, birth: psp.DBirth, pred=lambda v: True):
    return lambda raw: name in (v := values(raw, birth)) and pred(v[name])


def births(host: Host) -> tuple[psp.NBirth, psp.DBirth]:
    nb = host.next("NBIRTH")
    db = host.next("DBIRTH", NAME)
    return psp.NBirth.decode(nb), psp.DBirth.decode(db)


def bdseq(nbirth_or_ndeath: bytes) -> int:
    (m,) = [m for m in PB.FromString(nbirth_or_ndeath).metrics if m.name == "bdSeq"]
    assert m.datatype == D.INT64
    return m.long_value


@pytest.fixture
def gateway(broker, node) -> Iterator:
    started: list[Gateway] = []

    def make(group: str, **kw) -> Gateway:
        kw.setdefault("period_ms", 50)
        gw = Gateway(broker.url, group, "gw1", [node.url], **kw)
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()


def test_births_ddata_and_a_dcmd_applied_once(broker, node, gateway, mqtt_client):
    host = Host(mqtt_client(broker), "g1")
    gateway("g1", report_s=3600)     # no periodic reads: the node's counters are ours to count
    nb_raw = host.next("NBIRTH")
    db_raw = host.next("DBIRTH", NAME)

    # NBIRTH: seq 0, bdSeq 0 (Int64), Node Control/Rebirth false without an alias (5.17)
    nb = PB.FromString(nb_raw)
    assert nb.seq == 0 and nb.HasField("timestamp")
    assert bdseq(nb_raw) == 0
    (rb,) = [m for m in nb.metrics if m.name == "Node Control/Rebirth"]
    assert rb.datatype == D.BOOLEAN and rb.boolean_value is False and not rb.HasField("alias")
    nbirth = psp.NBirth.decode(nb_raw)
    assert {m.name for m in nbirth.metrics} == {"bdSeq", "Node Control/Rebirth", "Command/last",
                                               "Command/ok"}

    # DBIRTH: seq 1, every metric named, typed, aliased (aliases unique), with a value
    db = PB.FromString(db_raw)
    assert db.seq == 1
    assert {m.name: m.datatype for m in db.metrics} == {k: int(v) for k, v in EXPECTED.items()}
    aliases = [m.alias for m in db.metrics]
    assert all(m.HasField("alias") for m in db.metrics) and len(set(aliases)) == len(aliases)
    birth = psp.DBirth.decode(db_raw)
    v = {m.name: m.value for m in birth.metrics}
    assert v["Node Info/firmware"] == "0.1.0" and v["Node Info/board"] == "cyphy-sim"
    assert v["Node Info/url"] == node.url and v["Node Info/loops"] == "oven"
    assert v["oven/mode"] == "auto" and v["oven/alarms"] == "" and v["oven/faults"] == ""
    assert isinstance(v["oven/setpoint"], float) and v["oven/kp"] > 0
    assert v["Command/last"] == "" and v["Command/ok"] is True
    assert v["Blocks/double/ratio"] == 2.0 and v["Blocks/double/bias"] == 0.0
    # the block's value arrives in DDATA, from the telemetry, by name
    host.next("DDATA", NAME, where=has("Signals/double", birth,
                                        lambda x: isinstance(x, float) and x > 0))

    with cyphy.connect(f"sim://{SIM}") as n:
        # a change made on the node (another host) appears as DDATA (from its telemetry):
        # aliases only, no names, no datatypes (6.4.6); pysparkplug maps them back
        n.set("oven.setpoint", 47.5)
        raw = host.next("DDATA", NAME, where=has("oven/setpoint", birth, lambda x: x == 47.5))
        for m in PB.FromString(raw).metrics:
            assert m.HasField("alias") and not m.HasField("name") and not m.HasField("datatype")
        # a DCMD setpoint write: applied once. The node counts every request it applies
        # (a READ: one per piece of its answer); the gateway sends none but this SET here
        # (report_s: no periodic reads), so the count grows by our READs and one SET.
        a = n.get("info")["counters"]["applied"]
        b = n.get("info")["counters"]["applied"]
        host.command("DCMD", NAME, dcmd(metric("oven/setpoint", D.DOUBLE, 55.0)))
        raw = host.next("DDATA", NAME, where=has("Command/ok", birth))
        c = n.get("info")["counters"]["applied"]
        assert c - b == (b - a) + 1, (a, b, c)
        got = values(raw, birth)
        assert got["Command/ok"] is True and got["Command/last"] == "oven/setpoint=55 ok"
        assert got["oven/setpoint"] == 55.0
        assert n.get("oven.setpoint") == 55.0

    # seq: 0, 1, 2, ... on every message, wrapping at 255 (6.4.5)
    seqs = host.seqs()
    assert seqs == [i % 256 for i in range(len(seqs))]


def test_bad_dcmds_are_refused_with_a_reason(broker, node, gateway, mqtt_client, caplog):
    host = Host(mqtt_client(broker), "g2")
    gw = gateway("g2")
    _, birth = births(host)
    alias = {m.name: m.alias for m in birth.metrics}
    sp0 = {m.name: m.value for m in birth.metrics}["oven/setpoint"]
    caplog.set_level("INFO", logger="cyphy.gateway")

    def refused(payload: bytes, *words: str) -> str:
        caplog.clear()
        host.command("DCMD", NAME, payload)
        raw = host.next("DDATA", NAME, where=has("Command/ok", birth))
        got = values(raw, birth)
        assert got["Command/ok"] is False, got
        for w in words:
            assert w in got["Command/last"], (w, got["Command/last"])
        lines = [r.getMessage() for r in caplog.records if r.name == "cyphy.gateway"
                 and "DCMD" in r.getMessage()]
        assert len(lines) == 1 and words[0] in lines[0], lines
        return got["Command/last"]

    refused(dcmd(metric("oven/bogus", D.DOUBLE, 1.0)), "oven/bogus", "not a writable metric",
            "oven/setpoint")
    refused(dcmd(metric("oven/setpoint", D.BOOLEAN, True)), "oven/setpoint", "wrong datatype Boolean")
    refused(dcmd(metric("oven/mode", D.STRING, "fast")), "oven/mode", "auto")
    refused(dcmd(metric(None, D.DOUBLE, 1.0, alias=99999)), "alias 99999", "no such metric")
    # out of range: the node's refusal (the channel's limits; gains >= 0) and its reason
    refused(dcmd(metric("oven/setpoint", D.DOUBLE, 5000.0)), "oven/setpoint=5000", "outside")
    refused(dcmd(metric("oven/kp", D.DOUBLE, -1.0)), "oven/kp=-1", "out of range")
    # all or none: a good write with a bad one changes nothing
    refused(dcmd(metric("oven/setpoint", D.DOUBLE, 33.0), metric("oven/nope", D.DOUBLE, 1.0)),
            "oven/nope")
    refused(b"\xff\xff\xff", "malformed payload")
    # a DCMD for a device the gateway does not have: a log line, and the Edge Node's own
    # Command/last and Command/ok (NDATA: the NACK a host sees)
    caplog.clear()
    host.command("DCMD", "nobody", dcmd(metric("oven/setpoint", D.DOUBLE, 1.0)))
    nd = {m.name: m for m in PB.FromString(host.next("NDATA")).metrics}
    assert nd["Command/ok"].boolean_value is False, nd
    text = nd["Command/last"].string_value
    assert "DCMD for nobody: no such device online" in text and NAME in text, text
    # the gateway goes on: an alias-only write (as a host that learnt the aliases sends it)
    host.command("DCMD", NAME, psp.DCmd(timestamp=psp.get_current_timestamp(), metrics=(
        metric(None, D.DOUBLE, 2.5, alias=alias["oven/kd"]),)).encode(include_dtypes=False))
    raw = host.next("DDATA", NAME, where=has("Command/ok", birth))
    assert values(raw, birth)["Command/last"] == "oven/kd=2.5 ok"
    assert any("DCMD for nobody" in r.getMessage() for r in caplog.records)
    with cyphy.connect(f"sim://{SIM}") as n:
        assert n.get("oven.setpoint") == sp0 and n.get("oven.kd") == 2.5
        n.set("oven.kd", 0.0)
    assert gw.online


def test_periodic_report_and_rebirth_on_ncmd(broker, node, gateway, mqtt_client):
    host = Host(mqtt_client(broker), "g3")
    gateway("g3", report_s=1.0)
    _, birth = births(host)
    # every report_s: every metric again (by alias), the link counters among them
    raw = host.next("DDATA", NAME, where=has("Link/frames", birth))
    got = values(raw, birth)
    assert set(got) == set(EXPECTED) and got["Link/frames"] > 0 and got["Link/bad_tag"] == 0
    ncmd = psp.NCmd(timestamp=psp.get_current_timestamp(), metrics=(
        metric("Node Control/Rebirth", D.BOOLEAN, True),)).encode(include_dtypes=True)
    host.command("NCMD", None, ncmd)
    nb = host.next("NBIRTH")
    db = host.next("DBIRTH", NAME)
    assert PB.FromString(nb).seq == 0 and PB.FromString(db).seq == 1
    assert bdseq(nb) == 0  # a rebirth keeps the bdSeq (no new CONNECT)
    assert {m.name: m.alias for m in psp.DBirth.decode(db).metrics} == \
        {m.name: m.alias for m in birth.metrics}
    raw = host.next("DDATA", NAME)
    assert PB.FromString(raw).seq == 2


def test_broker_restart_rebirths_with_a_new_bdseq(broker, node, gateway, mqtt_client):
    client = mqtt_client(broker)
    host = Host(client, "g4")
    gw = gateway("g4")
    births(host)
    # the gateway waits 1 s before reconnecting, our host 0.2 s: it sees the new births
    broker.restart()
    client.wait_connected(2)
    nb = host.next("NBIRTH")
    assert PB.FromString(nb).seq == 0 and bdseq(nb) == 1
    db = host.next("DBIRTH", NAME)
    assert PB.FromString(db).seq == 1
    assert gw.connects == 2


def test_node_lost_ddeath_then_back_dbirth(broker, node, gateway, mqtt_client):
    host = Host(mqtt_client(broker), "g5")
    gateway("g5")
    births(host)
    node.stop()
    t = time.monotonic()
    dd = host.next("DDEATH", NAME, timeout=3.0 + WAIT)   # lost after 3 s without telemetry
    assert time.monotonic() - t >= 2.5
    assert PB.FromString(dd).metrics == [] and PB.FromString(dd).HasField("seq")
    node.start()
    db = host.next("DBIRTH", NAME, timeout=30)            # boots, joins Wi-Fi, HELLO
    assert "oven/setpoint" in {m.name for m in psp.DBirth.decode(db).metrics}
    host.next("DDATA", NAME)
    seqs = host.seqs()
    assert seqs == [i % 256 for i in range(len(seqs))]


def run_gateway(broker, node, group: str) -> subprocess.Popen:
    env = dict(os.environ, CYPHY_HOME=str(node.home), CYPHY_KEY=KEY_HEX)
    return subprocess.Popen([CYPHY, "gateway", "--broker", broker.url, "--group", group,
                             "--edge", "gw1", node.url, "--period-ms", "100"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_ndeath_by_the_will(broker, node, mqtt_client):
    host = Host(mqtt_client(broker), "g6")
    p = run_gateway(broker, node, "g6")
    try:
        nb = host.next("NBIRTH", timeout=15)
        host.next("DBIRTH", NAME)
        p.send_signal(signal.SIGKILL)
        nd = host.next("NDEATH")
        assert bdseq(nd) == bdseq(nb) == 0
        assert not PB.FromString(nd).HasField("seq")
        assert psp.NDeath.decode(nd).bd_seq_metric.value == 0
    finally:
        p.kill()
        p.communicate(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_by_a_signal_ddeath_ndeath_exit_0(broker, node, mqtt_client, sig):
    host = Host(mqtt_client(broker), "g7")
    p = run_gateway(broker, node, "g7")
    try:
        host.next("NBIRTH", timeout=15)
        host.next("DBIRTH", NAME)
        p.send_signal(sig)
        host.next("DDEATH", NAME)
        nd = host.next("NDEATH")
        assert bdseq(nd) == 0
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    # Ctrl-C: one line, after the gateway's log
    assert err.strip().splitlines()[-1].endswith(
        f"cyphy gateway: g7/gw1: stopped by {sig.name}: DDEATHs and NDEATH published"), err
    # every line a log line: time, then "cyphy gateway: ..."
    assert all(" cyphy gateway: " in ln for ln in err.strip().splitlines()), err


def test_births_wait_for_the_primary_host_and_end_when_it_goes_offline(broker, node, gateway,
                                                                      mqtt_client):
    # Sparkplug 3.0, 5.x: with a Primary Host Application configured the Edge Node births
    # only while that host's STATE (retained, QoS 1) says online; offline ends the session
    # (NDEATH, DISCONNECT), and the next one (a new bdSeq) waits for it again. A STATE
    # older than the last one is stale.
    client = mqtt_client(broker)
    host = Host(client, "g8")
    state = "spBv1.0/STATE/scada1"
    gw = gateway("g8", primary_host="scada1")
    with pytest.raises(AssertionError):
        host.next("NBIRTH", timeout=1.5)             # no primary host yet: no births
    t1 = psp.get_current_timestamp()
    client.publish(state, sp_state(True, t1), qos=1, retain=True)
    nb = host.next("NBIRTH")
    host.next("DBIRTH", NAME)
    assert bdseq(nb) == 0
    client.publish(state, sp_state(False, t1 - 1000), qos=1, retain=True)   # stale: ignored
    with pytest.raises(AssertionError):
        host.next("NDEATH", timeout=1.0)
    client.publish(state, sp_state(False, t1 + 1), qos=1, retain=True)
    nd = host.next("NDEATH")
    assert bdseq(nd) == 0
    with pytest.raises(AssertionError):
        host.next("NBIRTH", timeout=2.0)             # reconnected, waiting for the host
    client.publish(state, sp_state(True, t1 + 2), qos=1, retain=True)
    nb = host.next("NBIRTH")
    assert bdseq(nb) == 1 and gw.connects == 2
    host.next("DBIRTH", NAME)
    client.publish(state, b"", qos=1, retain=True)   # clear the retained STATE


def sp_state(online: bool, ts: int) -> bytes:
    from cyphy import sparkplug as sp

    return sp.encode_state(online, ts)


def test_the_allow_list_and_a_tune_by_dcmd(broker, node, gateway, mqtt_client):
    # --allow: what a DCMD may write, per metric; LOOP/tune "start"/"abort" runs the relay
    # autotune through the gateway's own session (gone with the gateway: the node stops it)
    host = Host(mqtt_client(broker), "g9")
    gateway("g9", allow=["*/setpoint", "oven/tune"])
    _, birth = births(host)
    assert {m.name: m.value for m in birth.metrics}["oven/tune"] == "idle"
    for name in ("oven/kp", "Blocks/double/ratio"):
        host.command("DCMD", NAME, dcmd(metric(name, D.DOUBLE, 2.0)))
        got = values(host.next("DDATA", NAME, where=has("Command/ok", birth)), birth)
        assert got["Command/ok"] is False and got["Command/last"].startswith(
            f"{name}: not allowed by this gateway"), got
    host.command("DCMD", NAME, dcmd(metric("oven/tune", D.STRING, "start")))
    got = values(host.next("DDATA", NAME, where=has("Command/ok", birth)), birth)
    assert got["Command/ok"] is True and got["Command/last"] == "oven/tune=start ok", got
    host.next("DDATA", NAME, where=has("oven/tune", birth, lambda v: v == "running"))
    host.command("DCMD", NAME, dcmd(metric("oven/tune", D.STRING, "abort")))
    host.next("DDATA", NAME, where=has("oven/tune", birth, lambda v: v == "idle"))
    got = values(host.next("DDATA", NAME, where=has("Command/last", birth,
                                                    lambda v: v.startswith("oven/tune ended"))),
                 birth)
    assert got["Command/ok"] is False and "nothing applied" in got["Command/last"], got
    host.command("DCMD", NAME, dcmd(metric("oven/tune", D.STRING, "now")))
    got = values(host.next("DDATA", NAME, where=has("Command/ok", birth)), birth)
    assert got["Command/ok"] is False and '"start" or "abort"' in got["Command/last"], got


def test_nodes_found_by_discovery_are_served(broker, node, gateway, mqtt_client):
    # --discover PORT: the nodes that answer a broadcast there and verify with a key held
    # here become devices (the node list is empty)
    host = Host(mqtt_client(broker), "g10")
    port = int(node.url.rsplit(":", 1)[1])
    gw = Gateway(broker.url, "g10", "gw1", [], period_ms=50, discover_port=port)
    try:
        gw.start()
        host.next("DBIRTH", NAME, timeout=WAIT + 5)
        assert [d.name for d in gw.devices] == [NAME]
    finally:
        gw.stop()


def test_the_gateway_from_a_config_file(tmp_path, broker, node, mqtt_client):
    import json
    import subprocess
    import sys

    host = Host(mqtt_client(broker), "g11")
    cfg = tmp_path / "gw.json"
    cfg.write_text(json.dumps({"broker": broker.url, "group": "g11", "edge": "gw1",
                               "nodes": [node.url], "period_ms": 50, "allow": ["*/setpoint"]}))
    cyphy_exe = str(Path(sys.executable).with_name("cyphy"))
    p = subprocess.Popen([cyphy_exe, "gateway", "--config", str(cfg)], stderr=subprocess.PIPE,
                         text=True)
    try:
        host.next("DBIRTH", NAME, timeout=WAIT + 5)
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"broker": broker.url, "nodes": ["sim://x", 5]}))
    r = subprocess.run([cyphy_exe, "gateway", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nodes[1]: 5 is not a string" in r.stderr


def test_a_blocks_parameter_by_dcmd_mqttnode_and_cyphy_set(broker, node, gateway, mqtt_client):
    """Issue 17, item 5: a block's writable parameters are metrics (Blocks/<block>/<param>,
    in the DBIRTH with their values); a DCMD writing one becomes one authenticated
    SET_PARAM, applied once; a wrong one is refused with one reason in Command/last.
    cyphy.connect(mqtt://...).set_param and `cyphy set mqtt://... block.param=V` send it."""
    from cyphy import codec as P
    from cyphy.client import CommandRejected

    host = Host(mqtt_client(broker), "g12")
    gateway("g12", report_s=3600)    # no periodic reads: the node's counters are ours to count
    _, birth = births(host)

    def answer(payload: bytes) -> dict[str, object]:
        host.command("DCMD", NAME, payload)
        return values(host.next("DDATA", NAME, where=has("Command/ok", birth)), birth)

    with cyphy.connect(f"sim://{SIM}") as n:
        a = n.get("info")["counters"]["applied"]
        b = n.get("info")["counters"]["applied"]
        got = answer(dcmd(metric("Blocks/double/ratio", D.DOUBLE, 2.5)))
        c = n.get("info")["counters"]["applied"]
        assert c - b == (b - a) + 1, (a, b, c)            # one SET_PARAM, applied once
        assert got["Command/ok"] is True and got["Command/last"] == "Blocks/double/ratio=2.5 ok"
        assert got["Blocks/double/ratio"] == 2.5 and n.get("double")["ratio"] == 2.5
        # any numeric datatype (as for loop metrics), by alias too
        alias = {m.name: m.alias for m in birth.metrics}["Blocks/double/bias"]
        got = answer(psp.DCmd(timestamp=psp.get_current_timestamp(), metrics=(
            metric(None, D.INT32, -3, alias=alias),)).encode(include_dtypes=True))
        assert got["Command/last"] == "Blocks/double/bias=-3 ok" and n.get("double")["bias"] == -3

        refusals = [
            (dcmd(metric("Blocks/double/lead_s", D.DOUBLE, 1.0)),
             "Blocks/double/lead_s: not a writable metric of oven-1 (writable: oven/setpoint"),
            (dcmd(metric("Blocks/nope/ratio", D.DOUBLE, 1.0)), "Blocks/nope/ratio: not a writable"),
            (dcmd(metric("Blocks/double/ratio", D.BOOLEAN, True)),
             "Blocks/double/ratio: wrong datatype Boolean, expected Double"),
            (dcmd(metric("Blocks/double/ratio", D.STRING, "3")), "wrong datatype String"),
            (dcmd(metric("Blocks/double/ratio", D.DOUBLE, float("nan"))), "not a finite"),
            (dcmd(metric("Blocks/double/ratio", D.DOUBLE, 3.0),
                  metric("oven/setpoint", D.DOUBLE, 50.0)),
             "Blocks/double/ratio: a block's parameter is written alone"),
            # the node's own range check and reason
            (dcmd(metric("Blocks/double/ratio", D.DOUBLE, 5e6)),
             "Blocks/double/ratio=5e+06: rejected by the node: out of range"),
        ]
        sp0 = n.get("oven.setpoint")
        for payload, text in refusals:
            got = answer(payload)
            assert got["Command/ok"] is False and text in got["Command/last"], (text, got)
        assert n.get("double")["ratio"] == 2.5 and n.get("oven.setpoint") == sp0

    # the host tools: MqttNode.set_param, cyphy set/get over the broker (no key given)
    url = f"{broker.url}/g12/gw1/{NAME}"
    with cyphy.connect(url) as m:
        m.set_param("double.ratio", 3.0)
        assert m.get("double")["ratio"] == 3.0 and m.get("double.bias") == -3.0
        with pytest.raises(CommandRejected) as e:
            m.set_param("double.gain", 1.0)
        assert e.value.reason == P.R_UNKNOWN_TARGET and "not a writable metric" in str(e.value)
        with pytest.raises(CommandRejected) as e:
            m.set_param("double.ratio", 5e6)
        assert e.value.reason == P.R_OUT_OF_RANGE and "must be from" in str(e.value)
        sample = next(s for s in m.telemetry(timeout=5) if "signals" in s)
        assert set(sample["signals"]) == {"double"}          # the monitor's rows, by name
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYPHY_KEY")}
    r = subprocess.run([CYPHY, "set", url, "double.ratio=2"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert (r.returncode, r.stdout) == (0, "double.ratio = 2.0: acknowledged\n"), r.stderr
    r = subprocess.run([CYPHY, "get", url, "double", "--json"], capture_output=True, text=True,
                       timeout=30, env=env)
    got = json.loads(r.stdout)
    assert (got["ratio"], got["bias"]) == (2.0, -3.0) and isinstance(got["value"], float), got
    r = subprocess.run([CYPHY, "set", url, "double.lead_s=2"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: Blocks/double/lead_s: not a writable metric"), r.stderr
    with cyphy.connect(f"sim://{SIM}") as n:
        assert n.get("double")["ratio"] == 2.0
        n.set_param("double.bias", 0.0)
