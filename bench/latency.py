"""Section 4, command latency host -> node -> actuator, over serial and over UDP.

One sim node runs the firmware as deployed (main.py: the oven loop at 100 Hz on the
background timer, the protocol endpoint with a key, UDP on its loopback "Wi-Fi"), its
UART emulated at 115200 baud. The host opens a cyphy.client.Session over SerialLink (the
console, `node.serve()`) and then over UdpLink, subscribes to telemetry every 10 ms, and
sends N SET output commands (each a new value, which puts the loop in manual):

- until ACK: from just before Session.set() sends the authenticated COMMAND frame until
  it returns with the node's authenticated ACK (host encode, link both ways, the node's
  parse, HMAC check, apply and answer, the host's reader thread);
- until actuator: until a telemetry sample shows the loop's output at the new value.
  The output is written to the PWM by the loop's next tick (up to 10 ms at 100 Hz),
  sampled into telemetry by a later pass (the subscription's 10 ms grid), then sent:
  this is what an operator watching telemetry sees, an upper bound of the time the
  actuator itself takes (the sim's PWM is inside the node and has no faster observer).
The node serves its links once per control pass (after the loop's tick), so a request
waits for the next pass: up to one period of the fastest loop (10 ms here). Commands go
out at a random phase of that pass (a random pause of up to two telemetry periods
first); without it the host, woken by telemetry sent right after a pass, would always
send just after one and wait a whole period.
"""

from __future__ import annotations

import time

import common as C

RATE_HZ = 100
PERIOD_MS = 10
BAUD = 115200


def measure(session, n: int, log) -> tuple[list[float], list[float]]:
    import queue
    import random

    rng = random.Random(7)

    session.open()
    period = session.subscribe(PERIOD_MS, batch=1, stats_s=0)
    next(session.samples(timeout=5))
    acks: list[float] = []
    acts: list[float] = []
    for i in range(n + 3):  # the first 3 warm up
        value = float(10 + i % 60)
        while True:  # only samples sent after the command count
            try:
                session.telemetry.get_nowait()
            except queue.Empty:
                break
        # at a random phase of the node's control pass (which also serves the links): the
        # previous answer was seen right after a pass, so sending at once would always
        # wait a whole period
        time.sleep(rng.uniform(0, 2 * period / 1000))
        t0 = time.perf_counter()
        session.set("oven", "output", value)
        t1 = time.perf_counter()
        deadline = t1 + 5.0
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"telemetry never showed output {value} (period {period} ms)")
            s = session.telemetry.get(timeout=left)
            if abs(s["loops"]["oven"]["output"] - value) < 1e-6:
                t2 = time.perf_counter()
                break
        if i >= 3:
            acks.append((t1 - t0) * 1000)
            acts.append((t2 - t0) * 1000)
    return acks, acts


def run(ctx) -> list[dict]:
    from cyphy.client import Session
    from cyphy.links import SerialLink, UdpLink
    from cyphy import codec as P

    n = 30 if ctx.quick else 200
    port_no = C.free_udp_port()
    image = C.flash_image(C.config(RATE_HZ, udp_port=port_no), C.secrets(wifi=True))
    name = "latency"
    st = ctx.lab.start(name, image, bench=C.THERMAL, baud=BAUD)
    ip = ctx.lab.node(name).config()["ip"]
    key = P.key_from_hex(C.KEY_HEX)
    C.wait_udp(ip, port_no, key)  # the node joins "Wi-Fi" in the background after boot
    out: list[dict] = []
    try:
        for link in ("serial", "udp"):
            params = {"link": link, "n": n, "loop_hz": RATE_HZ, "telemetry_ms": PERIOD_MS}
            if link == "serial":
                params["baud"] = BAUD
            ctx.log(f"latency: {n} commands over {link}")
            try:
                lk = SerialLink(st["port"], BAUD) if link == "serial" else UdpLink(ip, port_no)
                with Session(lk, key, timeout=3.0) as s:
                    acks, acts = measure(s, n, ctx.log)
                    retries = s.stats.retries
            except Exception as e:  # noqa: BLE001 - recorded, the other link goes on
                ctx.error(e)
                ctx.log(f"latency over {link}: {C.why(e)}")
                out.append(C.skipped("command_latency_p99_ms", "ms", C.why(e), link=link,
                                     until="ack"))
                continue
            for until, xs in (("ack", acks), ("actuator", acts)):
                p = dict(params, until=until, retries=retries)
                out += [C.record("command_latency_p50_ms", round(C.percentile(xs, 50), 3), "ms", **p),
                        C.record("command_latency_p99_ms", round(C.percentile(xs, 99), 3), "ms", **p),
                        C.record("command_latency_max_ms", round(max(xs), 3), "ms", **p)]
    finally:
        ctx.lab.stop(name)
    return out
