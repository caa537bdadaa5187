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
from serial_console import Console  # noqa: E402
from test_node_runtime import CONFIG, node_for, put, reset  # noqa: E402

from cyphy.sim import speed  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402


def test_calibration_compares_like_with_like():
    host = speed.host_pystones()
    assert host > speed.ESP32_PYSTONES  # any PC runs MicroPython faster than a 240 MHz ESP32
    f = speed.factor("esp32")
    assert f == max(1.0, host / 1661.0)
    # S3 is faster than ESP32 at 240 MHz, C3 at 160 MHz slower (the same benchmark run on all)
    assert speed.factor("esp32s3") < f < speed.factor("esp32c3")


def test_a_wroom_node_is_calibrated_on_the_micropython_it_runs(sim_nodes):
    # WROOM nodes run the 32-bit build with the firmware frozen, slower than the 64-bit
    # Unix port on the same machine: their slowdown is measured on that build, so chip
    # time is neither over- nor under-stated there.
    wroom = speed.host_pystones("wroom")
    assert speed.ESP32_PYSTONES < wroom < speed.host_pystones("psram")
    assert speed.factor("esp32", "wroom") == max(1.0, wroom / 1661.0)
    sim_nodes("speed-wroom", ram="wroom")
    k = Node.named("speed-wroom").state()["chip_slowdown"]
    assert k == int(speed.factor("esp32", "wroom") * 1000) / 1000


def _stats_after(con, seconds):
    con.run("import time\nnode.sched.reset_stats()\ntime.sleep_ms(%d)" % int(seconds * 1000))
    return json.loads(con.run("import json\nprint(json.dumps(node.stats()['oven']))"))


def _fast_config(rate_hz):
    c = copy.deepcopy(CONFIG)
    c["loops"][0]["rate_hz"] = rate_hz
    return c


def test_chip_time_is_reported_for_the_firmware_loops(sim_nodes):
    # Every node reports its loops' compute time in chip microseconds: measured x slowdown.
    con = node_for(sim_nodes, "speed-stats", THERMAL, _fast_config(50), virtual=False)
    boot = reset(con)
    assert "running 1 loop(s)" in boot, boot
    con.raw()
    st = _stats_after(con, 1.0)
    con.close()
    k = Node.named("speed-stats").state()["chip_slowdown"]
    assert k and k > 1
    assert st["chip_compute_mean_us"] == int(st["compute_mean_us"] * k + 0.5)
    assert st["chip_compute_max_us"] == int(st["compute_max_us"] * k + 0.5)
    assert st["chip_cpu_pct"] == round(100.0 * st["compute_mean_us"] * k / st["period_us"], 1)


# The firmware's scheduler on a bare node, driven by a 2 ms machine.Timer as Node.start()
# drives it, ticking a fixed piece of work: tens of host microseconds, milliseconds on an
# ESP32. (A firmware node whose loop does not fit the chip would starve its own boot, as an
# ESP32 would: this keeps the test about the loop.)
LOOP = """
import machine, time, json
from cyphy_node.sched import Scheduler
def work():
    x = 0
    for i in range(%d):
        x += i
s = Scheduler(early_us=1000)
lp = s.add(work, 500, "w")
tm = machine.Timer(0, period=2, callback=s.on_timer)
time.sleep_ms(1500)
s.reset_stats()
time.sleep_ms(2000)
tm.deinit()
print(json.dumps(s.stats()["w"]))
"""


def test_a_loop_that_does_not_fit_the_chip_overruns_at_chip_speed(sim_nodes):
    from cyphy import firmware

    sched = next(f for f in firmware.files("sim") if f.dst.endswith("/sched.mpy"))
    results = {}
    for mode in ("host", "chip"):
        n = sim_nodes("loop-" + mode, baud=0, speed=mode)
        with Console(n.port) as con:
            con.raw()
            con.run("import os\nfor d in ('/lib', '/lib/cyphy_node'):\n    try:\n        os.mkdir(d)\n"
                    "    except OSError:\n        pass\n")
            put(con, "/lib/cyphy_node/__init__.py", b"")
            put(con, "/lib/cyphy_node/sched.mpy", firmware.compile_mpy(sched.src))
            results[mode] = json.loads(con.run(LOOP % 1500, timeout=120).splitlines()[-1])
    host, chip = results["host"], results["chip"]
    k = Node.named("loop-host").state()["chip_slowdown"]
    period = host["period_us"]
    # the tick's chip time (what the chip-speed node stalls to) is well over the period...
    assert host["compute_mean_us"] * k > 2 * period, (host, k)
    # ...so at chip speed (nearly) every tick overruns, and at host speed (nearly) none does
    assert chip["overruns"] >= chip["ticks"] // 2 and chip["skipped"] > 0, chip
    assert host["overruns"] <= max(2, host["ticks"] // 20), host
