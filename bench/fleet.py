"""Section 5, the fleet: 10, 50 and 100 sim nodes streaming telemetry at 50 Hz over UDP to
one host process.

Every node runs the firmware as deployed (main.py: the oven loop at 50 Hz on the
background timer with the thermal plant, a key, UDP on its own loopback address). They
all get the same flash image, built once on the host (firmware + config + secrets in
its LittleFS partition) and copied as each node's flash.bin before its first start:
deploying 100 nodes through their REPLs would take minutes and measure nothing here.

The host process opens one cyphy.client.Session per node over UdpLink (each with its
reader and heartbeat threads), subscribes every node at 20 ms, one sample per frame,
waits a second, then takes the samples that arrive during `seconds` (and, a second
later, those of that span still on their way). Counted per node on the node's own clock
(each sample's t_ms), from the oldest to the newest sample that arrived in the window:
- frames expected: one per 20 ms of that span (a node silent in the window: seconds x 50);
- frames received: the distinct samples of the span that arrived (authenticated, in
  sequence);
- frames lost: expected - received (a node that fell behind its 50 Hz, a datagram lost
  on the way or in a socket buffer); seq_gaps: the part the host saw as gaps in the
  nodes' sequence numbers (LinkStats.lost), i.e. lost after the node sent it;
- host CPU: the host process's CPU time / wall time (100 % = one core);
- memory per node: resident set (VmRSS) of the node's MicroPython process plus its
  supervisor (the sim board's "hardware"), averaged over the nodes;
- machine CPU: all cores busy, from /proc/stat (the nodes share the host's cores);
- nodes at full rate: nodes that delivered at least 90 % of their expected frames;
- sample span: the node time the samples of the window cover, on average; longer than
  the window when the host runs behind (it is then working through older samples).
Sizes are started incrementally (10, then 40 more, then 50 more). A size the machine has
no memory for is not started and is recorded as skipped with the reason.
"""

from __future__ import annotations

import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common as C

RATE_HZ = 50
PERIOD_MS = 20
EST_NODE_MB = 80  # before the first nodes are measured


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def drain(sessions: list, stamps: list[list[int]] | None = None) -> None:
    """Take every sample the sessions have queued; stamps[i] gets session i's t_ms."""
    for i, s in enumerate(sessions):
        q = s.telemetry
        while True:
            try:
                sample = q.get_nowait()
            except queue.Empty:
                break
            if stamps is not None:
                stamps[i].append(sample["t_ms"])


def count(window: list[int], late: list[int], seconds: float) -> tuple[int, int]:
    """(expected, received) for one node, on the node's own clock: from the oldest to the
    newest sample that arrived during the window, a sample every PERIOD_MS is expected;
    received: the distinct samples in that span, late arrivals included. Counting by the
    samples' timestamps rather than by arrival time keeps a backlog from before the
    window (a host or node running behind) from counting as frames of the window."""
    if not window:
        return round(seconds * 1000 / PERIOD_MS), 0
    t0, t1 = min(window), max(window)
    got = {t for t in window + late if t0 <= t <= t1}
    return round((t1 - t0) / PERIOD_MS) + 1, len(got)


def rss_per_node(lab, names: list[str]) -> tuple[float, float, float]:
    """Mean MB: (node process + supervisor, node process, supervisor)."""
    tot, node, sup, k = 0, 0, 0, 0
    for name in names:
        pids = C.node_pids(lab, name)
        if not pids:
            continue
        s = C.rss_kb(pids[0]) or 0
        m = sum(C.rss_kb(p) or 0 for p in pids[1:])
        tot, node, sup, k = tot + s + m, node + m, sup + s, k + 1
    k = max(k, 1)
    return tot / k / 1024, node / k / 1024, sup / k / 1024


def run(ctx) -> list[dict]:
    from cyphy.client import Session
    from cyphy.links import UdpLink
    from cyphy import codec as P

    sizes = [10] if ctx.quick else [10, 50, 100]
    seconds = 3.0 if ctx.quick else 10.0
    port_no = C.free_udp_port()
    image = C.flash_image(C.config(RATE_HZ, udp_port=port_no, name="fleet"),
                          C.secrets(wifi=True))
    key = P.key_from_hex(C.KEY_HEX)
    lab = ctx.lab
    names: list[str] = []
    sessions: list = []
    out: list[dict] = []
    per_node_mb = float(EST_NODE_MB)

    def start(name: str) -> str | None:
        try:
            lab.start(name, image, bench=C.THERMAL, timeout=120)
            return None
        except Exception as e:  # noqa: BLE001
            return f"{name}: {C.why(e)}"

    try:
        for size in sizes:
            add = [f"fleet{i:03d}" for i in range(len(names), size)]
            avail_mb = C.meminfo().get("MemAvailable", 0) / 1024
            need_mb = len(add) * per_node_mb * 1.3 + 512
            if avail_mb and need_mb > avail_mb:
                reason = (f"not enough memory for {size} nodes: {len(add)} more need about "
                          f"{need_mb:.0f} MB, {avail_mb:.0f} MB available")
                ctx.log(f"fleet: {reason}")
                out.append(C.skipped("fleet_frames_lost", "frames", reason, nodes=size))
                break
            ctx.log(f"fleet: starting {len(add)} nodes ({size} in all)")
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=min(8, len(add))) as ex:
                errs = [e for e in ex.map(start, add) if e]
            started = [n for n in add if lab.node(n).state() is not None]
            names += started
            ctx.log(f"fleet: {len(started)} started in {time.monotonic() - t0:.1f} s"
                    + (f"; {len(errs)} failed, e.g. {errs[0]}" if errs else ""))
            new = [Session(UdpLink(lab.node(name).config()["ip"], port_no), key, timeout=5.0)
                   for name in started]
            sessions += new

            def subscribe(s) -> None:
                try:
                    s.open()
                    s.subscribe(PERIOD_MS, batch=1, stats_s=0)
                except Exception as e:  # noqa: BLE001 - counted: its frames are missing
                    ctx.log(f"fleet: {s.link.describe()}: no session: {C.why(e)}")

            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=16) as ex:
                list(ex.map(subscribe, new))
            ctx.log(f"fleet: {len(new)} sessions opened in {time.monotonic() - t0:.1f} s")
            n = len(names)
            time.sleep(1.0)
            drain(sessions)
            lost0 = sum(s.stats.lost for s in sessions)
            drop0 = sum(s.stats.node.get("dropped", 0) for s in sessions)
            c0, w0, k0 = os.times(), time.monotonic(), cpu_ticks()
            stamps: list[list[int]] = [[] for _ in sessions]
            end = w0 + seconds
            while time.monotonic() < end:
                time.sleep(min(0.25, max(0.0, end - time.monotonic())))
                drain(sessions, stamps)
            c1, w1, k1 = os.times(), time.monotonic(), cpu_ticks()
            drain(sessions, stamps)  # what arrived by the end of the window
            wall = w1 - w0
            late: list[list[int]] = [[] for _ in sessions]
            time.sleep(1.0)
            drain(sessions, late)  # samples of the window still on their way
            per = [count(w, x, wall) for w, x in zip(stamps, late)]
            expected = sum(e for e, _ in per)
            got = sum(g for _, g in per)
            gaps = sum(s.stats.lost for s in sessions) - lost0
            dropped = sum(s.stats.node.get("dropped", 0) for s in sessions) - drop0
            host_cpu = 100 * ((c1.user - c0.user) + (c1.system - c0.system)) / wall
            machine_cpu = 100 * (k1[0] - k0[0]) / max(1, k1[1] - k0[1])
            tot_mb, node_mb, sup_mb = rss_per_node(lab, names)
            if tot_mb:
                per_node_mb = tot_mb
            p = {"nodes": n, "seconds": round(wall, 1), "rate_hz": RATE_HZ}
            if n != size:
                p["requested"] = size
            lost = expected - got
            full_rate = sum(1 for e, g in per if g and g >= 0.9 * e)
            span = sum(e for e, g in per if g) * PERIOD_MS / 1000 / max(1, sum(1 for _, g in per if g))
            silent = sum(1 for _, g in per if g == 0)
            ctx.log(f"fleet {n}: expected {expected}, got {got}, gaps {gaps}, "
                    f"{full_rate} nodes at >= 90 % of 50 Hz, {silent} silent, "
                    f"host CPU {host_cpu:.0f} %, machine CPU {machine_cpu:.0f} %, "
                    f"{tot_mb:.1f} MB/node")
            out += [
                C.record("fleet_frames_lost", lost, "frames", **p),
                C.record("fleet_frames_expected", expected, "frames", **p),
                C.record("fleet_frames_received", got, "frames", **p),
                C.record("fleet_loss_pct", round(100 * lost / max(expected, 1), 2), "%", **p),
                C.record("fleet_seq_gaps", gaps, "frames", **p),
                C.record("fleet_nodes_full_rate", full_rate, "nodes",
                         note="nodes that delivered at least 90 % of their frames", **p),
                C.record("fleet_nodes_silent", silent, "nodes", **p),
                C.record("fleet_sample_span_s", round(span, 1), "s",
                         note="mean span of node time covered by the samples that arrived in "
                              "the window: longer than the window when the host runs behind", **p),
                C.record("fleet_node_dropped_batches", dropped, "frames", **p),
                C.record("fleet_host_cpu_pct", round(host_cpu, 1), "%", **p),
                C.record("fleet_machine_cpu_pct", round(machine_cpu, 1), "%",
                         cores=os.cpu_count(), **p),
                C.record("fleet_rss_per_node_mb", round(tot_mb, 1), "MB", **p),
                C.record("fleet_node_process_rss_mb", round(node_mb, 1), "MB", **p),
                C.record("fleet_supervisor_rss_mb", round(sup_mb, 1), "MB", **p),
            ]
    finally:
        for s in sessions:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
        with ThreadPoolExecutor(max_workers=16) as ex:
            list(ex.map(lab.stop, names))
    return out
