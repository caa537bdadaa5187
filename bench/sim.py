"""Section 6, the sim as strict as an ESP32 (issue 11): the speed model and a soak of the
node's soft-interrupt design.

- chip_slowdown: how many times slower each chip runs MicroPython than this machine
  (cyphy.sim.speed: micropython-lib's pystone_lowmem here against public ESP32 figures).
- control_pass_chip_us: the oven loop's tick (10 Hz, thermal plant, as deployed) in ESP32
  microseconds: the node's measured compute time x the slowdown (`cyphy get URL stats`).
- soak_*: serial and UDP protocol sessions at once on one node (each with telemetry and a
  stream of commands and reads; the node's timer callbacks land between bytecodes of
  node.serve() as on ESP32) for 600 s (30 s with --quick): frames received, bad tags,
  malformed frames, frames the node refused, values read back wrong, overruns.
"""

from __future__ import annotations

import threading
import time

import common as C
from cyphy.hil.soak import traffic

SOAK_S = 600
SOAK_QUICK_S = 30


def run(ctx) -> list[dict]:
    from cyphy.client import Session
    from cyphy.links import SerialLink, UdpLink
    from cyphy.sim import speed
    from cyphy import codec as P

    out: list[dict] = []
    for chip in ("esp32", "esp32s3", "esp32c3"):
        try:
            out.append(C.record("chip_slowdown", round(speed.factor(chip), 1), "x", system="sim",
                                chip=chip, host_pystones=round(speed.host_pystones()),
                                chip_pystones=round(speed.CHIP_PYSTONES[chip])))
        except speed.SpeedError as e:
            out.append(C.skipped("chip_slowdown", "x", str(e), system="sim", chip=chip))

    seconds = SOAK_QUICK_S if ctx.quick else SOAK_S
    port_no = C.free_udp_port()
    image = C.flash_image(C.config(10, udp_port=port_no), C.secrets(wifi=True))
    name = "soak"
    st = ctx.lab.start(name, image, bench=C.THERMAL, baud=115200)
    ip = ctx.lab.node(name).config()["ip"]
    key = P.key_from_hex(C.KEY_HEX)
    try:
        C.wait_udp(ip, port_no, key)
        with Session(SerialLink(st["port"], 115200), key) as ser, Session(UdpLink(ip, port_no), key) as udp:
            ser.open()
            udp.open()
            time.sleep(2)
            stats = ser.read("stats")["oven"]
            if stats.get("chip_compute_mean_us") is not None:
                out.append(C.record("control_pass_chip_us", stats["chip_compute_mean_us"], "us",
                                    chip="esp32", loop_hz=10, host_us=stats["compute_mean_us"],
                                    cpu_pct=stats["chip_cpu_pct"]))
            else:
                out.append(C.skipped("control_pass_chip_us", "us", "no speed calibration"))
            ser.subscribe(50)
            udp.subscribe(100)
            res: dict[str, dict] = {"serial": {}, "udp": {}}
            ctx.log(f"sim: soak, serial + UDP sessions at once for {seconds} s")
            ts = [threading.Thread(target=traffic, args=(ser, "oven", "setpoint", 20.0, seconds, res["serial"])),
                  threading.Thread(target=traffic, args=(udp, "oven", "kp", 1.0, seconds, res["udp"]))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(seconds + 120)
            info = ser.read("info")
            loop = ser.read("stats")["oven"]
            p = {"seconds": seconds, "telemetry_ms": "50 serial, 100 udp"}
            for link, s in (("serial", ser), ("udp", udp)):
                r = res[link]
                lp = dict(p, link=link, error=r.get("error"))
                out += [C.record("soak_commands", r.get("commands", 0), "count", **lp),
                        C.record("soak_frames", s.stats.frames, "frames", **lp),
                        C.record("soak_bad_tags", s.stats.bad_tag, "frames", **lp),
                        C.record("soak_malformed", s.stats.malformed, "frames", **lp),
                        C.record("soak_wrong_readback", r.get("wrong", 0), "count", **lp)]
            c = info["counters"]
            out += [C.record("soak_node_bad_frames", c["bad_frame"] + c["bad_tag"], "frames", **p),
                    C.record("soak_node_comms_errors", info["comms_errors"], "count", **p),
                    C.record("soak_overruns", loop["overruns"], "count", **p)]
    finally:
        ctx.lab.stop(name)
    return out
