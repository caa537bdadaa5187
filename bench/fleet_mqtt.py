"""Section fleet_mqtt: the fleet through an MQTT broker (issue 16 item 6).

A swarm of synthetic nodes (cyphy.sim.swarm: the firmware's own protocol endpoint, one
loopback address per node, 10 Hz telemetry over UDP) feeds `cyphy gateway` processes,
which publish every node as a Sparkplug B device to one broker (Mosquitto when installed,
else the embedded one); a subscriber counts every sample on the node's clock
(cyphy.fleetbench has the method). Runs, each `seconds` long:
- 500 nodes through 1 gateway, and 2000 nodes through 4 gateways, with --batch 10 (one
  DDATA a second per node carrying its 10 samples, 9 of them as historical values):
  `fleet_frames_lost` and `gateway_cpu_pct_per_100_nodes`, params
  {"nodes", "gateways", "path": "mqtt"};
- 500 nodes through 1 gateway with --batch 1 (a DDATA per sample, the lowest latency):
  the same figures named `..._unbatched`;
- 20 real sim nodes (the firmware on the MicroPython Unix port, at 10 Hz over UDP)
  through 1 gateway: `fleet_frames_lost_sim`;
- one host process with 10, 100 and 500 sessions (no broker) to swarm nodes at 20 Hz:
  `host_us_per_frame` (its CPU time per frame received; flat: the process's one hub
  thread reads every session), params {"sessions"}.
--quick: 100 and 200/2 nodes, 10 s, and 5 sim nodes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common as C  # noqa: E402 - bench/ is on sys.path (run.py)


def _records(r, suffix: str = "") -> list[dict]:
    p = {"nodes": r.nodes, "gateways": r.gateways, "path": "mqtt"}
    note = (f"batch {r.batch}, {r.seconds:.0f} s, broker {r.broker}; seq gaps {r.seq_gaps}, "
            f"silent devices {r.silent}, swarm passes skipped {r.swarm_skipped}; CPU % of a "
            f"core: gateways {r.gateway_cpu_pct}, swarm {r.swarm_cpu_pct}, subscriber "
            f"{r.subscriber_cpu_pct}, broker {r.broker_cpu_pct}"
            + (f"; the gateways said: {' | '.join(r.gateway_log)}" if r.gateway_log else ""))
    if r.error:
        return [C.skipped(f"fleet_frames_lost{suffix}", "frames", r.error, **p)]
    return [
        C.record(f"fleet_frames_lost{suffix}", r.lost, "frames", note=note, **p),
        C.record(f"fleet_frames_expected{suffix}", r.expected, "frames", **p),
        C.record(f"gateway_cpu_pct_per_100_nodes{suffix}",
                 round(r.gateway_cpu_pct_per_100_nodes, 2), "%", **p),
        C.record(f"fleet_subscriber_cpu_pct{suffix}", r.subscriber_cpu_pct, "%", **p),
    ]


def _sim_urls(ctx, n: int, work: Path) -> tuple[list[str], Path]:
    """n real sim nodes at 10 Hz over UDP, each with a name of its own (device ids)."""
    port = C.free_udp_port()
    key = work / "sim.key"
    key.write_text(C.KEY_HEX + "\n")
    names = [f"fmq{i:02d}" for i in range(n)]

    def start(name: str) -> None:
        image = C.flash_image(C.config(10, udp_port=port, name=name), C.secrets(wifi=True))
        ctx.lab.start(name, image, bench=C.THERMAL, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as ex:
        list(ex.map(start, names))
    time.sleep(3.0)  # they join the sim's Wi-Fi after boot
    return [f"udp://{ctx.lab.node(nm).config()['ip']}:{port}" for nm in names], key


def run(ctx) -> list[dict]:
    from cyphy import fleetbench

    quick = ctx.quick
    seconds = 10.0 if quick else 60.0
    runs = [(100, 1, 10, ""), (200, 2, 10, "")] if quick else \
        [(500, 1, 10, ""), (2000, 4, 10, ""), (500, 1, 1, "_unbatched")]
    out: list[dict] = []
    for nodes, gateways, batch, suffix in runs:
        r = fleetbench.run(nodes, gateways, seconds, batch=batch, log=ctx.log)
        ctx.log(f"fleet_mqtt {nodes}/{gateways} batch {batch}: lost {r.lost} of {r.expected}, "
                f"seq gaps {r.seq_gaps}, gateway CPU {r.gateway_cpu_pct} % "
                f"({r.gateway_cpu_pct_per_100_nodes:.1f} % per 100 nodes)"
                + (f"; {r.error}" if r.error else ""))
        out += _records(r, suffix)
    # one host process, n sessions (the hub: one thread reads them all): the cost per frame
    for n in ((10, 100) if quick else (10, 100, 500)):
        try:
            c = fleetbench.session_cost(n, 5.0 if quick else 20.0, rate_hz=20)
        except Exception as e:  # noqa: BLE001 - recorded, the bench goes on
            ctx.error(e)
            out.append(C.skipped("host_us_per_frame", "us", C.why(e), sessions=n))
            continue
        ctx.log(f"sessions {n}: {c['us_per_frame']} us of host CPU per frame, "
                f"{c['frames_per_s']} frames/s, {c['lost']} lost, {c['threads']} threads")
        note = (f"{c['frames_per_s']} frames/s at 20 Hz per node, host CPU {c['cpu_pct']} %, "
                f"{c['lost']} frames lost, {c['threads']} threads in the process")
        out += [C.record("host_us_per_frame", c["us_per_frame"], "us", note=note, sessions=n),
                C.record("host_frames_lost", c["lost"], "frames", sessions=n)]
    n_sim = 5 if quick else 20
    work = ctx.lab.root
    try:
        urls, key = _sim_urls(ctx, n_sim, work)
        r = fleetbench.run(n_sim, 1, seconds, batch=1, log=ctx.log, urls=urls, key_file=key)
        ctx.log(f"fleet_mqtt {n_sim} sim nodes: lost {r.lost} of {r.expected}"
                + (f"; {r.error}" if r.error else ""))
        out += _records(r, "_sim")
    except Exception as e:  # noqa: BLE001 - recorded, the bench goes on
        ctx.error(e)
        out.append(C.skipped("fleet_frames_lost_sim", "frames", C.why(e), nodes=n_sim,
                             gateways=1, path="mqtt"))
    return out
