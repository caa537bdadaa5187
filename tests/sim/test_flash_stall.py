"""Flash writes stall the whole sim node for the flash chip's erase/program time, as on an
ESP32, whose caches are off (code cannot run) while the flash erases or programs: a file
write takes at least the modelled time, and timer callbacks wait: they run between flash
operations (soft callbacks, as on ESP32), never during one, so a 2 ms periodic timer sees
gaps at least as long as a sector erase.

Model (boards/sim/rom/_flashdev.py): 45 ms per 4 KB sector erase (W25Q32 tSE typical),
30 us + 2.5 us per further byte per program command of at most 64 bytes (tBP1, tBP2)."""

from __future__ import annotations

import json

from cyphy.sim.bench_control import ControlChannel
from serial_console import Console

WRITE = r"""
import machine, time, json, _flashdev
stamps = []
def cb(t):
    stamps.append(time.ticks_us())
tm = machine.Timer(0, period=2, callback=cb)
time.sleep_ms(30)
s0 = _flashdev.stats()
n0 = len(stamps)
t0 = time.ticks_us()
with open('/big.bin', 'wb') as f:
    f.write(b'x' * 32768)
t1 = time.ticks_us()
s1 = _flashdev.stats()
during = len(stamps) - n0
time.sleep_ms(30)
tm.deinit()
gap = max(time.ticks_diff(stamps[i + 1], stamps[i]) for i in range(len(stamps) - 1))
print(json.dumps({'elapsed_us': time.ticks_diff(t1, t0), 'stalled_us': s1[2] - s0[2],
                  'erases': s1[0] - s0[0], 'programs': s1[1] - s0[1], 'max_gap_us': gap,
                  'during': during, 'expected': time.ticks_diff(t1, t0) // 2000}))
"""


def run_write(port: str) -> dict:
    with Console(port) as con:
        con.raw()
        con.run("import os\ntry:\n    os.remove('/big.bin')\nexcept OSError:\n    pass\n")
        return json.loads(con.run(WRITE))


def test_a_file_write_stalls_the_node(sim_node):
    r = run_write(sim_node.port)
    # 32 KB of data: LittleFS erases at least 8 sectors and programs at least 512 commands
    assert r["erases"] >= 8 and r["programs"] >= 512
    # each command: 30 us + 2.5 us per byte after its first; 32768 bytes at least
    modelled = r["erases"] * 45_000 + r["programs"] * 30 + (32768 - r["programs"]) * 25 // 10
    assert r["stalled_us"] >= modelled >= 8 * 45_000 + 512 * 187
    assert r["elapsed_us"] >= r["stalled_us"]           # the write took at least the modelled time
    assert r["max_gap_us"] >= 45_000                    # no callback during a sector erase
    assert r["during"] < r["expected"]                  # periods were lost to the stalls

    # the same write with the stall turned off (test equipment): no long gap
    with ControlChannel(sim_node.name, sim_node.home) as ch:
        assert ch.request("flash.stall", on=False)["flash_stall"] is False
        fast = run_write(sim_node.port)
        assert ch.request("flash.stall", on=True)["flash_stall"] is True
    assert fast["stalled_us"] == 0 and fast["erases"] >= 8
    assert fast["elapsed_us"] < r["elapsed_us"] - r["stalled_us"] / 2


def test_virtual_time_moves_by_the_stall(sim_nodes):
    n = sim_nodes("v", virtual_time=True)
    r = run_write(n.port)
    assert r["stalled_us"] >= 8 * 45_000
    assert r["elapsed_us"] == r["stalled_us"]  # only sleeps and stalls move virtual time
    assert r["max_gap_us"] >= 45_000
