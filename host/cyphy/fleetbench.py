"""The fleet through the broker, measured (issue 16 item 6; `make bench` section fleet_mqtt,
and a short run in tests/fleet/test_fleetbench.py).

    r = run(nodes=500, gateways=1, seconds=60)     # -> FleetRun (figures, per gateway CPU)

Real parts end to end: a swarm of synthetic nodes (cyphy.sim.swarm, the firmware's own
protocol endpoint, each node on a loopback address of its own) streams telemetry at 10 Hz
over UDP; `gateways` `cyphy gateway` processes, each serving its share of the nodes,
publish them as Sparkplug B devices to one broker (Mosquitto when installed, else the
embedded one); a subscriber here counts what arrives.

Counting, per device, on the node's own clock: every DDATA carries the node time of each
sample (`Telemetry/t_ms`, one per sample; historical values with --batch). From the first
to the last sample of a device taken in the window, every period must be there: expected =
span / period + 1, received = the distinct samples in that span; lost = expected -
received, summed over the devices (a device that sent nothing in the window: its whole
window). Sparkplug seq gaps (per edge node) say how much of that was lost between a
gateway and the subscriber. The swarm's own skipped passes (a busy host kept it off the
CPU: samples never taken, not lost on the way) are reported beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sparkplug as sp
from .broker import Broker, _parent_death_signal
from .gateway import SAMPLE_T_MS

__all__ = ["FleetRun", "run", "session_cost"]

GROUP = "fleetbench"
RATE_HZ = 10
T_MASK = 0x3FFFFFFF


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process pid and its threads."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Device:
    t_alias: int | None = None
    stamps: list[tuple[float, int]] = field(default_factory=list)  # (arrival, node t_ms)


class Counter:
    """A Sparkplug host application that counts every sample of group GROUP."""

    def __init__(self, broker: Broker) -> None:
        import paho.mqtt.client as mqtt

        self.devices: dict[tuple[str, str], _Device] = {}
        self.births = 0
        self.seq: dict[str, int] = {}
        self.seq_gaps = 0
        self.messages = 0
        self.bad = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(client_id=f"cyphy-fleetbench-{os.getpid()}", clean_session=True)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{sp.NAMESPACE}/{GROUP}/#", 0)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        now = time.monotonic()
        try:
            t = sp.parse_topic(msg.topic)
        except sp.SparkplugError:
            return
        kind = t.message_type.name
        with self._lock:
            self.messages += 1
            try:
                if kind in ("NBIRTH", "DBIRTH", "DDATA"):
                    self._follow_seq(t.edge_node_id, msg.payload, kind == "NBIRTH")
                if kind == "DBIRTH":
                    p = sp.decode(msg.payload)
                    d = self.devices.setdefault((t.edge_node_id, t.device_id or ""), _Device())
                    for m in p.metrics:
                        if m.name == SAMPLE_T_MS:
                            d.t_alias = m.alias
                    self.births += 1
                elif kind == "DDATA":
                    d = self.devices.get((t.edge_node_id, t.device_id or ""))
                    if d is None or d.t_alias is None:
                        return
                    for v in sp.metric_ints(msg.payload, d.t_alias):
                        d.stamps.append((now, v))
            except sp.SparkplugError:
                self.bad += 1

    def _follow_seq(self, edge: str, payload: bytes, birth: bool) -> None:
        # seq is the payload's field 3, after the metrics: read it without decoding them
        seq = sp.payload_seq(payload)
        if seq is None:
            return
        last = self.seq.get(edge)
        if last is not None and not birth:
            self.seq_gaps += (seq - last - 1) % 256
        self.seq[edge] = seq

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class FleetRun:
    nodes: int
    gateways: int
    batch: int
    seconds: float
    broker: str
    expected: int = 0
    received: int = 0
    lost: int = 0
    seq_gaps: int = 0
    silent: int = 0
    births: int = 0
    swarm_skipped: int = 0
    gateway_cpu_pct: list[float] = field(default_factory=list)
    swarm_cpu_pct: float = 0.0
    subscriber_cpu_pct: float = 0.0
    broker_cpu_pct: float = 0.0
    error: str = ""
    gateway_log: list[str] = field(default_factory=list)   # when samples were lost

    @property
    def gateway_cpu_pct_per_100_nodes(self) -> float:
        if not self.gateway_cpu_pct:
            return 0.0
        per = self.nodes / self.gateways
        return sum(self.gateway_cpu_pct) / len(self.gateway_cpu_pct) * 100 / per


def count(stamps: list[tuple[float, int]], t0: float, t1: float, period_ms: int) -> tuple[int, int]:
    """(expected, received) samples of one device taken in the window [t0, t1) (arrival
    times), on the node's clock: from its first to its last sample in the window."""
    ts = [t for a, t in stamps if t0 <= a < t1]   # in the order they came: the node's order
    if not ts:
        return 0, 0
    base = ts[0]                                  # unwrap the node's 30-bit clock from there
    rel = sorted({(t - base) & T_MASK for t in ts})
    span = rel[-1]
    expected = span // period_ms + 1
    return expected, len(rel)


def run(nodes: int, gateways: int = 1, seconds: float = 60.0, batch: int = 10,
        broker_kind: str = "auto", log: Any = print, settle_s: float = 3.0,
        urls: list[str] | None = None, key_file: Path | None = None) -> FleetRun:
    """Run the fleet through the broker and count (see the module doc). urls (with
    key_file): nodes that run already (e.g. real sim nodes at 10 Hz); else a swarm of
    `nodes` synthetic ones."""
    period_ms = 1000 // RATE_HZ
    work = Path(tempfile.mkdtemp(prefix="cyphy-fleetbench-"))
    env = {**os.environ, "CYPHY_HOME": str(work / "home")}
    key = key_file or work / "swarm.key"
    procs: list[subprocess.Popen] = []
    broker = Broker(broker_kind, workdir=work / "broker")
    r = FleetRun(nodes if urls is None else len(urls), gateways, batch, seconds, broker.kind)
    nodes = r.nodes
    counter: Counter | None = None
    swarm: subprocess.Popen | None = None
    try:
        broker.start()
        if urls is None:
            swarm = subprocess.Popen(
                [sys.executable, "-m", "cyphy.sim.swarm", "--nodes", str(nodes), "--rate-hz",
                 str(RATE_HZ), "--key-file", str(key), "--write-key"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                preexec_fn=_parent_death_signal())   # none outlives a killed bench
            procs.append(swarm)
            line = swarm.stdout.readline() if swarm.stdout else ""
            if not line:
                raise RuntimeError("the swarm did not start: "
                                   f"{swarm.stderr.read() if swarm.stderr else ''}")
            urls = json.loads(line)["urls"]
        counter = Counter(broker)
        share = [urls[k::gateways] for k in range(gateways)]
        gws = []
        for k, part in enumerate(share):
            gws.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "cyphy"), "gateway", "--broker", broker.url,
                 "--group", GROUP, "--edge", f"gw{k + 1}", "--batch", str(batch),
                 "--period-ms", str(period_ms), "--report-s", "3600", "--key-file", str(key),
                 *part],
                stdout=subprocess.DEVNULL, stderr=open(work / f"gw{k + 1}.log", "wb"), env=env,
                preexec_fn=_parent_death_signal()))
        procs += gws
        deadline = time.monotonic() + 30 + nodes / 20
        while counter.births < nodes and time.monotonic() < deadline:
            time.sleep(0.2)
        r.births = counter.births
        log(f"fleet_mqtt {nodes} nodes / {gateways} gateway(s), batch {batch}, {broker.kind}: "
            f"{counter.births} DBIRTHs")
        time.sleep(settle_s)
        g0 = [_cpu_s(g.pid) for g in gws]
        s0 = _cpu_s(swarm.pid) if swarm is not None else 0.0
        b0, me0 = _cpu_s(broker.pid or 0), time.process_time()
        t0 = time.monotonic()
        gaps0 = counter.seq_gaps
        time.sleep(seconds)
        t1 = time.monotonic()
        wall = t1 - t0
        r.gateway_cpu_pct = [round(100 * (_cpu_s(g.pid) - c) / wall, 1) for g, c in zip(gws, g0)]
        if swarm is not None:
            r.swarm_cpu_pct = round(100 * (_cpu_s(swarm.pid) - s0) / wall, 1)
        r.broker_cpu_pct = round(100 * (_cpu_s(broker.pid or 0) - b0) / wall, 1)
        r.subscriber_cpu_pct = round(100 * (time.process_time() - me0) / wall, 1)
        time.sleep(1.0 + batch * period_ms / 1000)   # what was taken in the window, on its way
        with counter._lock:
            r.seq_gaps = counter.seq_gaps - gaps0
            devices = list(counter.devices.values())
        window = int(seconds * RATE_HZ)
        for d in devices:
            e, g = count(d.stamps, t0, t1, period_ms)
            if e == 0:
                r.silent += 1
                e = window
            r.expected += e
            r.received += g
        r.silent += max(0, nodes - len(devices))
        r.expected += max(0, nodes - len(devices)) * window
        r.lost = r.expected - r.received
        if swarm is not None:
            swarm.send_signal(signal.SIGTERM)
            try:
                out, _ = swarm.communicate(timeout=10)
                totals = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
                r.swarm_skipped = int(totals.get("skipped", 0))
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                pass
    except Exception as e:  # noqa: BLE001 - the bench records why, never crashes
        r.error = f"{type(e).__name__}: {e}"
    finally:
        if counter is not None:
            counter.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.close()
        if r.error or r.lost:   # what the gateways said, for the record
            for log_file in sorted(work.glob("gw*.log")):
                lines = [ln for ln in log_file.read_text(errors="replace").splitlines()
                         if "DBIRTH" not in ln and "node(s):" not in ln]
                if lines:
                    r.gateway_log += [f"{log_file.stem}: {ln}" for ln in lines[-5:]]
        shutil.rmtree(work, ignore_errors=True)
    return r


def session_cost(n: int, seconds: float = 10.0, rate_hz: int = RATE_HZ) -> dict[str, float]:
    """One host process with n protocol sessions (cyphy.client.Session over UDP, all read
    by the process's one hub thread) to n swarm nodes at rate_hz: the process's CPU time
    per frame received, frames per second, and frames lost (sequence gaps). Issue 16 asks
    for a flat cost per frame up to at least 500 sessions."""
    from . import codec as P
    from .client import Session
    from .links import UdpLink

    work = Path(tempfile.mkdtemp(prefix="cyphy-sessioncost-"))
    key = work / "swarm.key"
    env = {**os.environ, "CYPHY_HOME": str(work / "home")}
    swarm = subprocess.Popen(
        [sys.executable, "-m", "cyphy.sim.swarm", "--nodes", str(n), "--rate-hz", str(rate_hz),
         "--key-file", str(key), "--write-key"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        preexec_fn=_parent_death_signal())
    sessions: list[Session] = []
    try:
        line = swarm.stdout.readline() if swarm.stdout else ""
        if not line:
            raise RuntimeError(f"the swarm did not start: {swarm.stderr.read() if swarm.stderr else ''}")
        k = P.key_from_hex(key.read_text().strip())
        for url in json.loads(line)["urls"]:
            host = url.removeprefix("udp://").split(":")[0]
            sessions.append(Session(UdpLink(host, P.UDP_PORT), k, timeout=5.0))
        for s in sessions:
            s.open()
            s.on_telemetry = lambda samples: None      # frames are counted, not kept
            s.subscribe(1000 // rate_hz)
        time.sleep(2.0)
        f0 = sum(s.stats.frames for s in sessions)
        l0 = sum(s.stats.lost for s in sessions)
        c0, t0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = time.process_time() - c0, time.monotonic() - t0
        frames = sum(s.stats.frames for s in sessions) - f0
        lost = sum(s.stats.lost for s in sessions) - l0
        return {"sessions": n, "frames_per_s": round(frames / wall, 1),
                "us_per_frame": round(1e6 * cpu / max(frames, 1), 1),
                "cpu_pct": round(100 * cpu / wall, 1), "lost": lost,
                "threads": threading.active_count()}
    finally:
        for s in sessions:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - closing must not fail the figure
                pass
        swarm.send_signal(signal.SIGTERM)
        try:
            swarm.wait(timeout=10)
        except subprocess.TimeoutExpired:
            swarm.kill()
        shutil.rmtree(work, ignore_errors=True)
