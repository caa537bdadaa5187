"""One owner per buffer under ESP32's soft interrupts (issue 11 item 1).

The sim's timer callbacks land between bytecodes of whatever the main thread runs (here
node.serve(), reading the serial console), as on ESP32. The node's control pass runs in
the timer callback, its protocol service in a callback of its own, serve() only reads the
console. Serial and UDP sessions at once, each with telemetry and a stream of commands and
reads: no frame may be mangled, no tag bad, nothing applied twice, no gap unexplained.

CYPHY_SOAK_S sets the length (default 20 s here; `make bench` runs 600 s)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from protonode import KEY_HEX, boot  # noqa: E402
from test_protocol_udp import WIFI, free_udp_port, udp_config, wait_online  # noqa: E402

from cyphy.client import Session  # noqa: E402
from cyphy.hil.soak import traffic  # noqa: E402
from cyphy.links import SerialLink, UdpLink  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402
from cyphy import codec as P  # noqa: E402

KEY = P.key_from_hex(KEY_HEX)
SOAK_S = float(os.environ.get("CYPHY_SOAK_S", "20"))


def test_serial_and_udp_sessions_at_once_keep_every_frame_whole(sim_nodes):
    port_no = free_udp_port()
    serial_port = boot(sim_nodes, "soak", config=udp_config("soak", port_no), secrets=WIFI)
    ip = Node.named("soak").config()["ip"]
    wait_online([ip], port_no)
    results: dict[str, dict] = {"serial": {}, "udp": {}}
    with Session(SerialLink(serial_port), KEY) as ser, Session(UdpLink(ip, port_no), KEY) as udp:
        ser.open()
        udp.open()
        ser.subscribe(50)
        udp.subscribe(100)
        threads = [threading.Thread(target=traffic, args=(ser, "oven", "setpoint", 20.0, SOAK_S, results["serial"])),
                   threading.Thread(target=traffic, args=(udp, "oven", "kp", 1.0, SOAK_S, results["udp"]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SOAK_S + 60)
        for r in results.values():
            assert "error" not in r and r["wrong"] == 0, results
        assert results["serial"]["commands"] > SOAK_S * 5, results
        assert results["udp"]["commands"] > SOAK_S * 2, results
        info = ser.read("info")
        for name, s in (("serial", ser), ("udp", udp)):
            assert s.stats.bad_tag == 0, (name, s.stats)
            assert s.stats.malformed == 0, (name, s.stats)
            assert s.stats.replayed == 0, (name, s.stats)
            assert s.stats.frames > SOAK_S * 5, (name, s.stats)
        c = info["counters"]
        # the node saw nothing mangled either, and answered no request twice from scratch
        assert c["bad_frame"] == 0 and c["bad_tag"] == 0, c
        assert info["comms_errors"] == 0, info
        stats = ser.read("stats")["oven"]
        assert stats["overruns"] == 0 and stats["skipped"] == 0, stats


def test_first_tick_after_start_is_on_time(sim_nodes):
    # The first deadline is the timer's first fire, one period after start(): no overrun,
    # no skipped period and no period-long jitter at boot (it showed in every monitor).
    port = boot(sim_nodes, "start")
    with Session(SerialLink(port), KEY) as s:
        s.open()
        st = s.read("stats")["oven"]
        while st["ticks"] < 3:
            time.sleep(0.2)
            st = s.read("stats")["oven"]
        assert st["overruns"] == 0 and st["skipped"] == 0, st
        assert st["jitter_max_us"] < st["period_us"] // 4, st


def test_real_time_nodes_run_above_ordinary_host_work(sim_nodes):
    # A host that keeps a node off the CPU shows as skipped periods no chip would have:
    # where the host allows it, the supervisor and the node process run at nice -10.
    from cyphy.sim.supervisor import REALTIME_NICE

    boot(sim_nodes, "prio")
    pid = int(Node.named("prio").state()["pid"])
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert kids, "the supervisor runs the node in a child process"
    want = REALTIME_NICE if os.geteuid() == 0 else os.getpriority(os.PRIO_PROCESS, 0)
    for p in (pid, *map(int, kids)):
        assert os.getpriority(os.PRIO_PROCESS, p) == want, p
