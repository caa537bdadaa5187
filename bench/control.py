"""Section 1, the control loop: one PID loop (the thermal bench's oven) on a sim node in
real time at 100, 500 and 1000 Hz.

For each rate the node runs the loop twice, each for `seconds`:
- driver "timer": node.start(), the background machine.Timer pass that firmware/main.py
  uses, while the REPL code sleeps (the sim runs soft timers whenever the node waits);
- driver "run": node.run(seconds), the foreground driver (the scheduler sleeps to each
  deadline).
The scheduler's own statistics (sched.py: jitter = actual start - deadline, compute time,
overruns, skipped periods) are read through the raw REPL afterwards.

Bytes allocated per tick: micropython.mem_total() over N full passes (scheduler + tick +
statistics + health check, a loop forced due on each pass), as tests/sim/test_node_runtime.py
does: the firmware's figure, which must be 0. The sim board's ROM is Python in the same
heap and allocates while the node sleeps (the plant model, the link), so mem_total over a
whole real-time run is recorded apart (sim_alloc_bytes_per_tick), with what it means.

The host floor: the same scheduler on the bare MicroPython Unix port (no sim board, no
plant, nothing else), in the same run: the jitter the Linux host gives any process.
"""

from __future__ import annotations

import json
import subprocess
import time

import common as C

RATES = (100, 500, 1000)
NAMES = [("tick_alloc_bytes", "B"), ("jitter_p99_us", "us"), ("overruns", "count")]

# The node is built from /config.json in the REPL (the image has no main.py): main.py's
# background timer at 1 kHz keeps the sim's REPL from ever reading input (see
# docs/benchmarks.md), and building it here gives the same Node with nothing else running.
SETUP = """\
import gc, json, micropython, sys, time
from cyphy_node import config
from cyphy_node.node import Node
from board import Board
node = Node(config.load('/config.json'), Board())
del config
sys.modules.pop('cyphy_node.config', None)
import cyphy_node
try:
    delattr(cyphy_node, 'config')
except AttributeError:
    pass
lp = node.loop('oven')
sl = lp.sloop
b = node.board
def _full():
    sl.deadline = b.ticks_us()
    node.run_once()
def _alloc(n):
    node._prepare()
    _full()
    m0 = micropython.mem_total()
    for k in range(n):
        _full()
    return micropython.mem_total() - m0
def _measure(driver, seconds):
    node.stop()
    gc.collect()
    node.sched.reset_stats()
    t0 = lp.ticks
    m0 = micropython.mem_total()
    if driver == 'run':
        node.run(seconds)
    else:
        node.start()
        time.sleep(seconds)
        node.stop()
    m1 = micropython.mem_total()
    st = node.stats()['oven']
    st['p50'] = sl.jitter_percentile(50)
    st['mem'] = m1 - m0
    st['n'] = lp.ticks - t0
    print(json.dumps(st))
gc.collect()
print(gc.mem_free())
"""

FLOOR = """\
import sys, time, json
sys.path.append(%(lib)r)
from cyphy_node.sched import Scheduler
def tick():
    pass
s = Scheduler()
lp = s.add(tick, %(rate)d, 'floor')
s.run(until=time.ticks_add(time.ticks_us(), %(us)d))
st = s.stats()['floor']
st['p50'] = lp.jitter_percentile(50)
print(json.dumps(st))
"""


def _records(st: dict, rate: int, driver: str, seconds: float) -> list[dict]:
    p = {"rate_hz": rate, "driver": driver, "seconds": seconds}
    out = [
        C.record("jitter_p50_us", st["p50"], "us", **p),
        C.record("jitter_p99_us", st["jitter_p99_us"], "us", **p),
        C.record("jitter_max_us", st["jitter_max_us"], "us", **p),
        C.record("jitter_mean_us", st["jitter_mean_us"], "us", **p),
        C.record("overruns", st["overruns"], "count", **p),
        C.record("skipped_periods", st["skipped"], "count", **p),
        C.record("ticks", st["ticks"], "count", expected=int(rate * seconds), **p),
        C.record("compute_mean_us", st["compute_mean_us"], "us", **p),
        C.record("compute_max_us", st["compute_max_us"], "us", **p),
    ]
    if st.get("n"):
        out.append(C.record(
            "sim_alloc_bytes_per_tick", round(st["mem"] / st["n"]), "B",
            note="mem_total over the whole real-time run / ticks: the sim ROM's plant model "
                 "and link allocate while the node sleeps; not firmware, not on an ESP32", **p))
    return out


def floor(rate: int, seconds: float) -> dict:
    """The scheduler alone on the bare MicroPython Unix port (no sim board)."""
    code = FLOOR % {"lib": str(C.REPO / "firmware" / "lib"), "rate": rate,
                    "us": int(seconds * 1e6)}
    r = subprocess.run([str(C.BIN / "micropython"), "-c", code], capture_output=True,
                       text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-300:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(ctx) -> list[dict]:
    seconds = 3.0 if ctx.quick else 30.0
    floor_s = 1.0 if ctx.quick else 10.0
    alloc_n = 500 if ctx.quick else 2000
    out: list[dict] = []
    for rate in RATES:
        try:
            out += _rate(ctx, rate, seconds, alloc_n)
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            ctx.error(e)
            ctx.log(f"control {rate} Hz: {C.why(e)}")
            for name, unit in NAMES:
                out.append(C.skipped(name, unit, C.why(e), rate_hz=rate))
    sys_floor = "MicroPython Unix port (bare)"
    for rate in RATES:
        try:
            ctx.log(f"control: host floor at {rate} Hz, {floor_s:g} s")
            st = floor(rate, floor_s)
            p = {"rate_hz": rate, "driver": "sched.run", "seconds": floor_s}
            out += [C.record("jitter_p50_us", st["p50"], "us", sys_floor, **p),
                    C.record("jitter_p99_us", st["jitter_p99_us"], "us", sys_floor, **p),
                    C.record("jitter_max_us", st["jitter_max_us"], "us", sys_floor, **p),
                    C.record("overruns", st["overruns"], "count", sys_floor, **p)]
        except Exception as e:  # noqa: BLE001
            ctx.error(e)
            out.append(C.skipped("jitter_p99_us", "us", C.why(e), sys_floor, rate_hz=rate))
    return out


def _rate(ctx, rate: int, seconds: float, alloc_n: int) -> list[dict]:
    lab = ctx.lab
    name = f"ctl{rate}"
    image = C.flash_image(C.config(rate), None, main=False)
    st = lab.start(name, image, bench=C.THERMAL)
    out: list[dict] = []
    try:
        with C.Repl(st["port"]) as r:
            free = int(r.run(SETUP, timeout=60).strip().splitlines()[-1])
            ctx.log(f"control {rate} Hz: node built ({free // 1024} KB heap free)")
            for driver in ("timer", "run"):
                ctx.log(f"control {rate} Hz: driver {driver}, {seconds:g} s")
                t0 = time.monotonic()
                res = json.loads(r.run(f"_measure({driver!r}, {seconds})",
                                       timeout=seconds * 3 + 60).strip().splitlines()[-1])
                res["wall_s"] = time.monotonic() - t0
                out += _records(res, rate, driver, seconds)
            n_bytes = int(r.run(f"print(_alloc({alloc_n}))", timeout=120).strip())
            per = n_bytes // alloc_n if n_bytes % alloc_n == 0 else round(n_bytes / alloc_n, 2)
            out.append(C.record("tick_alloc_bytes", per, "B", rate_hz=rate,
                                passes=alloc_n,
                                note="micropython.mem_total() over full passes (scheduler, "
                                     "tick, statistics, health)"))
    finally:
        lab.stop(name)
    return out
