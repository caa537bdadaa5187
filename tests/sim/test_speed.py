"""The sim at an ESP32's speed (issue 11 item 7): a calibrated slowdown (cyphy.sim.speed:
pystone_lowmem here against public ESP32 figures), compute time reported in chip
microseconds, and `--speed chip` making the soft callbacks take the chip's time."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from test_node_runtime import CONFIG, node_for, reset  # noqa: E402

from cyphy.sim import speed  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402


def test_calibration_compares_like_with_like():
    host = speed.host_pystones()
    assert host > speed.ESP32_PYSTONES  # any PC runs MicroPython faster than a 240 MHz ESP32
    f = speed.factor("esp32")
    assert f == max(1.0, host / 1661.0)
    # S3 is faster than ESP32 at 240 MHz, C3 at 160 MHz slower (the same benchmark run on all)
    assert speed.factor("esp32s3") < f < speed.factor("esp32c3")


def _stats_after(con, seconds):
    con.run("import time\nnode.sched.reset_stats()\ntime.sleep_ms(%d)" % int(seconds * 1000))
    return json.loads(con.run("import json\nprint(json.dumps(node.stats()['oven']))"))


def _fast_config(rate_hz):
    c = copy.deepcopy(CONFIG)
    c["loops"][0]["rate_hz"] = rate_hz
    return c


def test_a_loop_that_does_not_fit_the_chip_overruns_at_chip_speed(sim_nodes):
    # 1 kHz: a pass of tens of host microseconds fits 1 ms on the host, but it takes
    # milliseconds on an ESP32 (the calibrated slowdown is ~150 on a PC; on a slower host
    # it is smaller and the host time larger: the product, the chip's time, stays about
    # the same). At chip speed the loop overruns.
    results = {}
    for mode in ("host", "chip"):
        con = node_for(sim_nodes, "speed-" + mode, THERMAL, _fast_config(1000), virtual=False, speed=mode)
        boot = reset(con)
        assert "running 1 loop(s)" in boot, boot
        con.raw()
        results[mode] = _stats_after(con, 2.0)
        con.close()
    host, chip = results["host"], results["chip"]
    k = Node.named("speed-host").state()["chip_slowdown"]
    assert k and k > 1
    # chip microseconds = host microseconds x the calibrated slowdown, in both modes
    for st in (host, chip):
        assert st["chip_compute_mean_us"] == int(st["compute_mean_us"] * k + 0.5)
        assert st["chip_cpu_pct"] == round(100.0 * st["compute_mean_us"] * k / st["period_us"], 1)
    # (the whole pass: the ticks plus the comms check, telemetry sampling, watchdog, and the
    # protocol service after it)
    assert chip["overruns"] >= chip["ticks"] // 5 and chip["skipped"] > 0, chip
    # at host speed it fits (a loaded machine may still delay a pass now and then)
    assert host["overruns"] / max(1, host["ticks"]) < 0.5 * chip["overruns"] / chip["ticks"], (host, chip)
