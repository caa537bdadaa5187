"""The node runtime (firmware/lib/cyphy_node/node.py, firmware/main.py) on a sim node.

A sim node on virtual time wired to the thermal plant (FOTD: gain 0.9 degC/%, tau 160 s,
dead time 12 s; ADC pin 34 <- temperature [0, 150] degC -> [0, 2.45] V; PWM pin 25 ->
heater 0..100 %). The firmware, the board files (/lib/board.py is boards/sim/board.py) and
a config are written to the node's flash through the raw REPL (cyphy.deploy and a
Device), then the node is reset so that main.py boots it as in the field.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from cyphy import firmware

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from serial_console import Console  # noqa: E402
from benches import THERMAL
from cyphy.hil.defaults import THERMAL_CONFIG  # noqa: E402

# The same plant (fotd defaults) whose temperature sensor gets stuck at -10 degC (the ADC
# reads 0: below the valid range) from t = 60 s to t = 90 s.
STUCK = {
    "plant": {"type": "fotd", "disturbances": [
        {"at_s": 60, "sensor": "temperature", "fault": "stuck", "value": -10},
        {"at_s": 90, "sensor": "temperature", "fault": "none"}]},
    "wiring": [{"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150]},
               {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]}],
}

# SIMC tuning of the FOTD model (K = 0.9, tau = 160 s, theta = 12 s) with tau_c = 2 theta:
# kp = tau / (K (tau_c + theta)) = 4.9 %/degC, Ti = min(tau, 4 (tau_c + theta)) = 144 s.
CONFIG = copy.deepcopy(THERMAL_CONFIG)
CONFIG["name"] = "oven-1"
CONFIG["loops"][0]["controller"]["setpoint"] = 60.0

# The firmware tree (which source goes where on a node) is cyphy.firmware's one list.
FILES = firmware.source_pairs("sim")


def compiled(src: Path, tmp: Path) -> bytes:
    """The module as .mpy bytecode: compiling the sources on the node needs more contiguous
    heap than a 192K node has (as on an ESP32 without PSRAM), so firmware ships compiled."""
    return firmware.compile_mpy(src)


def put(con: Console, dst: str, data: bytes) -> None:
    for i in range(0, max(len(data), 1), 2048):  # small pieces: the raw REPL buffers each
        mode = "ab" if i else "wb"
        con.run(f"with open({dst!r}, {mode!r}) as f:\n    f.write({data[i:i + 2048]!r})\n")


def reset(con: Console) -> str:
    """machine.reset(); returns the boot output (main.py's lines) once the REPL is back."""
    con.write(b"import machine\nmachine.reset()\n\x04")
    boot = con.read_until(b"Type \"help()\" for more information.", timeout=60)
    con.raw()
    return boot.decode(errors="replace")


def node_for(sim_nodes, name, bench, config, main=True, virtual=True, **kw):
    """A sim node with the firmware and config on its flash from power-on (as `cyphy
    flash` writes them: helpers.firmware_files), and a Console on it in the raw REPL. With
    main.py the node has booted them once already; main=False leaves main.py out."""
    from helpers import firmware_files

    n = sim_nodes(name, virtual_time=virtual, bench=bench, files=firmware_files(config, main), **kw)
    con = Console(n.port)
    con.raw()
    return con


@pytest.fixture
def oven(sim_nodes):
    con = node_for(sim_nodes, "oven", THERMAL, CONFIG)
    boot = reset(con)
    assert "cyphy: node oven-1 running 1 loop(s)" in boot, boot
    yield con
    con.close()


STEP = (
    "import time\n"
    "lp = node.loop('oven')\n"
    "for k in range(1800):\n"
    "    time.sleep(1)\n"
    "    print(lp.y, lp.u)\n"
)


def step_response(con):
    rows = [line.split() for line in con.run(STEP, timeout=300).splitlines()]
    return [int(y) / 1000 for y, u in rows], [int(u) / 1000 for y, u in rows]


def test_closed_loop_step_meets_spec_and_is_reproducible(oven):
    ys, us = step_response(oven)
    sp, y0 = 60.0, 20.0
    band = 0.02 * (sp - y0)
    overshoot = (max(ys) - sp) / (sp - y0)
    settle = max([i + 1 for i, y in enumerate(ys) if abs(y - sp) > band] or [0])
    sse = abs(sum(ys[-60:]) / 60 - sp)
    print(f"step 20 -> 60 degC: overshoot {overshoot:.1%}, settling (2 %) {settle} s, "
          f"steady-state error {sse:.3f} degC, peak {max(ys):.2f} degC")
    assert overshoot < 0.10, overshoot
    assert settle < 1500, settle
    assert sse < 0.5, sse
    assert max(us) <= 100 and min(us) >= 0
    # second run from a fresh boot: identical to the last bit
    reset(oven)
    assert step_response(oven) == (ys, us)


def test_repl_while_running(oven):
    out = oven.run((
        "import time, json\n"
        "time.sleep(300)\n"
        "s = node.state()['oven']\n"
        "node.set('oven.setpoint', 40.0)\n"
        "time.sleep(900)\n"
        "s2 = node.state()['oven']\n"
        "st = node.stats()['oven']\n"
        "print(json.dumps([s, s2, node.get('oven.setpoint'), st['ticks'], st['overruns'], node.running()]))\n"
    ), timeout=200)
    s, s2, sp, ticks, overruns, running = json.loads(out)
    assert s["mode"] == "auto" and s["setpoint"] == 60.0 and s["faults"] == []
    assert 50 < s["measurement"] < 70
    assert sp == 40.0 and s2["setpoint"] == 40.0
    assert abs(s2["measurement"] - 40.0) < 0.5, s2
    assert running and overruns == 0
    assert 11990 <= ticks <= 12010
    # manual output, gains and back to auto (bumpless: no jump at the switch)
    out = oven.run((
        "node.set('oven.output', 30.0)\n"
        "time.sleep(1)\n"
        "a = (node.get('oven.mode'), node.get('oven.output'), node.loop('oven').act.hw._pwm.duty_u16())\n"
        "node.set('oven.kp', 3.0)\n"
        "node.set('oven.mode', 'auto')\n"
        "time.sleep_ms(100)\n"
        "b = (node.get('oven.mode'), node.get('oven.output'), node.get('oven.kp'))\n"
        "print(json.dumps([a, b]))\n"
    ))
    a, b = json.loads(out)
    assert a == ["manual", 30.0, 19660]      # 30 % of 65535
    assert b[0] == "auto" and abs(b[1] - 30.0) < 1.0 and b[2] == 3.0


def duty(con) -> int:
    return int(con.run("print(node.loop('oven').act.hw._pwm.duty_u16())").strip())


def records(con):
    return json.loads(con.run("import json\nprint(json.dumps(node.faults()))"))


def test_tick_exception_latches_failsafe_until_clear_and_is_recorded(oven):
    oven.run("import time\ntime.sleep(60)\n")
    assert duty(oven) > 0
    out = oven.run((
        "lp = node.loop('oven')\n"
        "def boom():\n"
        "    raise OSError(5)\n"
        "lp.inp.read = boom\n"
        "t0 = lp.ticks\n"
        "time.sleep_ms(100)\n"             # one period
        "print(lp.ticks - t0, lp.act.hw._pwm.duty_u16(), lp.state()['faults'], repr(lp.last_exc))\n"
    ))
    n, d, fl, exc = out.split(None, 3)
    assert n == "1" and d == "0" and "exception" in fl and "OSError" in exc
    # the fault is latched: a working sensor again does not bring the loop back
    oven.run("del lp.inp.read\nlp.inp.read = lp.inp._read_adc\ntime.sleep(1)\n")
    assert duty(oven) == 0
    assert oven.run("print(lp.mode)").strip() == "failsafe"
    oven.run("node.clear()\ntime.sleep(2)\n")
    assert oven.run("print(lp.mode)").strip() == "auto"
    assert duty(oven) > 0
    recs = records(oven)
    assert [r[1:3] for r in recs] == [["oven", "exception"]]
    reset(oven)
    assert [r[1:3] for r in records(oven)] == [["oven", "exception"]]


def test_comms_timeout_failsafe_and_bumpless_return(sim_nodes):
    cfg = dict(CONFIG, comms_timeout_ms=2000)
    con = node_for(sim_nodes, "comms", THERMAL, cfg)
    reset(con)
    out = con.run((
        "import time\n"
        "lp = node.loop('oven')\n"
        "for k in range(300):\n"
        "    node.touch()\n"
        "    time.sleep_ms(200)\n"
        "node.touch()\n"
        "u0 = lp.u\n"
        "time.sleep_ms(1950)\n"   # silent for just under the timeout: still fine
        "ok = lp.mode\n"
        "time.sleep_ms(150)\n"    # within one period after the timeout
        "print(u0, ok, lp.mode, lp.act.hw._pwm.duty_u16())\n"
        "node.touch()\n"
        "time.sleep_ms(300)\n"
        "print(lp.mode, lp.u, lp.pid.i)\n"
    ))
    first, second = out.splitlines()
    u0, ok, mode, d = first.split()
    assert int(u0) > 0 and ok == "auto" and mode == "failsafe" and d == "0"
    mode2, u2, i2 = second.split()
    assert mode2 == "auto"
    assert int(u2) < int(u0)        # resumes from the held (fail-safe) output, no jump back
    assert [r[1:4] for r in records(con)][0][:2] == ["-", "comms"]
    reset(con)
    assert [r[1:3] for r in records(con)][0] == ["-", "comms"]
    con.close()


def test_sensor_out_of_range_failsafe_and_recovery(sim_nodes):
    con = node_for(sim_nodes, "stuck", STUCK, CONFIG)
    reset(con)
    out = con.run((
        "import time\n"
        "lp = node.loop('oven')\n"
        "time.sleep(59)\n"
        "a = (lp.mode, lp.act.hw._pwm.duty_u16())\n"
        "time.sleep_ms(1100)\n"       # the fault starts at 60 s: holding after one period
        "b = (lp.mode, lp.act.hw._pwm.duty_u16(), lp.inp.value)\n"
        "time.sleep(35)\n"            # cleared at 90 s
        "c = (lp.mode, lp.act.hw._pwm.duty_u16())\n"
        "print([a, b, c])\n"
    ))
    a, b, c = eval(out)  # noqa: S307 (tuples printed by MicroPython)
    assert a[0] == "auto" and a[1] > 0
    # 0 V reads about 7 degC (ESP32 measures from 150 mV at 11 dB): below valid, a fault
    assert b[0] == "failsafe" and b[1] == 0 and b[2] < 10000
    assert c[0] == "auto" and c[1] > 0
    recs = records(con)
    assert [r[1:3] for r in recs] == [["oven", "sensor"]] and recs[0][3] < 10000
    reset(con)
    assert [r[1:3] for r in records(con)] == [["oven", "sensor"]]
    con.close()


def ctrl_c_in_run(con) -> bytes:
    """node.run() in the foreground, Ctrl-C after a second: the exception text."""
    con.run("node.stop()\n")
    con.write(b"print('running')\nnode.run()\n\x04")
    con.read_until(b"OK")
    con.read_until(b"running")
    import time
    time.sleep(1.0)
    con.write(b"\x03")
    con.read_until(b"\x04", timeout=20)
    err = con.read_until(b"\x04", timeout=20)
    con.read_until(b">")
    return err


def test_ctrl_c_in_run_leaves_outputs_safe(sim_nodes):
    con = node_for(sim_nodes, "fg", THERMAL, CONFIG)
    reset(con)  # main.py builds the node and starts it in the background
    err = ctrl_c_in_run(con)
    assert b"KeyboardInterrupt" in err, err
    res = con.run("lp = node.loop('oven')\nprint(lp.ticks > 0, lp.u, lp.act.hw._pwm.duty_u16(), lp.mode)")
    assert res.split() == ["True", "0", "0", "failsafe"]
    assert [r[1:3] for r in records(con)][-1] == ["-", "interrupt"]
    reset(con)
    recs = json.loads(con.run((
        "import json\nfrom cyphy_node.faults import FaultLog\nprint(json.dumps(FaultLog().records()))")))
    assert [r[1:3] for r in recs][-1] == ["-", "interrupt"]
    con.close()


ALLOC = (
    "import micropython, time\n"
    "node.stop()\n"
    "lp = node.loop('oven')\n"
    "b = node.board\n"
    "def mem(f, n):\n"
    "    f()\n"
    "    m0 = micropython.mem_total()\n"
    "    for k in range(n):\n"
    "        f()\n"
    "    return micropython.mem_total() - m0\n"
    "def locked(f, n):\n"
    "    micropython.heap_lock()\n"
    "    try:\n"
    "        for k in range(n):\n"
    "            f()\n"
    "        r = 'ok'\n"
    "    except MemoryError:\n"
    "        r = 'MemoryError'\n"
    "    micropython.heap_unlock()\n"
    "    return r\n"
    "def full():\n"  # a due loop every pass: scheduler + tick + statistics + health
    "    lp.sloop.deadline = b.ticks_us()\n"
    "    node.run_once()\n"
    "node._prepare()\n"
    "print(mem(lp.tick, 2000), locked(lp.tick, 5000))\n"
    "print(mem(full, 2000), locked(full, 5000))\n"
    "print(lp.ticks, lp.fault, node.stats()['oven']['ticks'], node.stats()['oven']['overruns'])\n"
)


def alloc_report(con):
    return [line.split() for line in con.run(ALLOC, timeout=120).splitlines()]


def test_full_tick_allocates_nothing(oven):
    # The loop's tick (HAL sensor read, filter, PID, actuator write, alarm check) allocates
    # nothing at all, counted by mem_total (heap_lock alone would not show heap-allocated
    # frames), and the full scheduler pass (with statistics and the watchdog's health check)
    # runs thousands of times under heap_lock without MemoryError.
    tick, full, counts = alloc_report(oven)
    assert tick == ["0", "ok"]
    assert full[1] == "ok"
    ticks, fault, sticks, overruns = (int(v) for v in counts)
    assert ticks >= 7000 + 7000 and fault == 0 and sticks >= 7000


def test_scheduler_pass_allocates_nothing(oven):
    # Counted with mem_total, without heap_lock (which would hide heap-allocated frames):
    # the whole pass, scheduler and statistics included, allocates not one byte.
    tick, full, counts = alloc_report(oven)
    assert full[0] == "0"


def test_invalid_config_names_the_field_and_keeps_the_repl(sim_nodes):
    bad = json.loads(json.dumps(CONFIG))
    bad["loops"][0]["controller"]["kp"] = "abc"
    con = node_for(sim_nodes, "bad", THERMAL, bad)
    boot = reset(con)
    msg = 'loops[0].controller.kp: must be a number, got "abc"'
    assert msg in boot, boot
    out = con.run((
        "print(node)\n"
        "print(open('/config_error.txt').read().strip())\n"
        "print(1 + 1)\n"
    ))
    lines = out.splitlines()
    assert lines[0] == "None"
    assert msg in lines[1]
    assert lines[2] == "2"
    con.close()


def test_autotune_result_is_kept_on_flash_and_applied_at_boot(oven):
    out = oven.run((
        "import time, json\n"
        "node.autotune('oven', high=100, low=0, hyst=0.5)\n"
        "time.sleep(4000)\n"
        "st = node.tune_status('oven')\n"
        "r = st['result']\n"
        "print(json.dumps([st['running'], r['ok'], r['applied'], round(r['ku'], 2), round(r['pu'], 1),"
        " node.loop('oven').pid.get_tunings()[0], r['kp'], r['rule']]))\n"
    ), timeout=120)
    running, ok, applied, ku, pu, kp, kp_chosen, rule = json.loads(out)
    assert (running, ok, applied) == (False, True, True)
    # FOPDT gain 0.9, tau 160 s, dead time 12 s: analytic ultimate gain 24 %/degC, period
    # 46.6 s; a relay test reads Ku a little low (describing-function approximation)
    assert 18 < ku < 30 and 40 < pu < 65  # (an asymmetric relay lengthens the period)
    assert kp == pytest.approx(kp_chosen, rel=1e-6) and rule   # the rule chosen from the model
    boot = reset(oven)  # a hard reset: main.py builds the node again from flash
    assert "running 1 loop(s)" in boot
    kp_after = json.loads(oven.run("import json\nprint(json.dumps(node.loop('oven').pid.get_tunings()[0]))"))
    assert kp_after == pytest.approx(kp, rel=1e-6)
    # applied from /autotune.json at boot, and the tuning code unloaded again: no RAM for it
    loaded = oven.run("import sys\nprint([m for m in sys.modules if m.endswith(('.tuning', '.autotune'))])")
    assert loaded.strip() == "[]", loaded


def test_repl_tools_work_while_the_loop_runs_in_real_time(sim_nodes):
    """mpremote without a soft reset (`resume`) reads and changes a running node."""
    import subprocess
    import time

    con = node_for(sim_nodes, "live", THERMAL, CONFIG, virtual=False)
    reset(con)
    port = con.s.port
    con.close()
    mpremote = str(Path(sys.executable).with_name("mpremote"))

    def remote(code):
        r = subprocess.run([mpremote, "connect", port, "resume", "exec", code],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    first = int(remote("print(node.loop('oven').ticks)"))
    time.sleep(1.0)
    second = int(remote("print(node.loop('oven').ticks)"))
    assert second > first  # the loop kept ticking while nobody was connected
    remote("node.set('oven.setpoint', 55.0)")
    assert remote("print(node.get('oven.setpoint'))") == "55.0"


# Two loops on one node: the oven's sensor sticks from 60 s to 90 s (as STUCK); a fan loop
# reads the same temperature through a second ADC channel whose range still covers the
# stuck value, so only the oven loop has a fault of its own.
TWO_LOOPS_BENCH = {
    "plant": STUCK["plant"],
    "wiring": STUCK["wiring"] + [
        {"pin": 35, "kind": "adc", "signal": "temperature", "range": [-50, 150], "volts": [0.0, 2.45]}],
}
TWO_LOOPS = json.loads(json.dumps(CONFIG))
TWO_LOOPS["channels"] += [
    {"name": "temp2", "pin": 35, "kind": "adc",
     "scale": {"mv_min": 0, "mv_max": 2450, "eng_min": -50, "eng_max": 150},
     "units": "degC", "valid": [-37, 149]},
    {"name": "fan", "pin": 27, "kind": "pwm", "freq_hz": 1000, "range": [0, 100], "units": "%",
     "failsafe": 100},
]
TWO_LOOPS["loops"].append(
    {"name": "fan", "rate_hz": 5, "sensor": "temp2", "actuator": "fan",
     "controller": {"type": "onoff", "setpoint": 80.0, "hysteresis": 2.0, "direction": "reverse"}})


def test_one_loops_sensor_fault_takes_every_output_safe(sim_nodes):
    con = node_for(sim_nodes, "two", TWO_LOOPS_BENCH, TWO_LOOPS)
    boot = reset(con)
    assert "running 2 loop(s)" in boot, boot
    out = con.run((
        "import time\n"
        "fan = node.loop('fan')\n"
        "def duty():\n"
        "    return fan.act.hw._pwm.duty_u16()\n"
        "time.sleep(59)\n"
        "a = (fan.mode, duty())\n"
        "time.sleep_ms(1100)\n"       # the oven's sensor is stuck: both loops hold fail-safe
        "b = (fan.mode, duty(), node.loop('oven').mode, fan.state()['faults'])\n"
        "time.sleep(35)\n"            # cleared at 90 s: both resume
        "c = (fan.mode, node.loop('oven').mode)\n"
        "print([a, b, c])\n"
    ))
    a, b, c = eval(out)  # noqa: S307 (tuples printed by MicroPython)
    assert a == ("auto", 0)  # below 80 degC the reverse on/off fan is off
    assert b == ("failsafe", 65535, "failsafe", ["peer"])
    assert c == ("auto", "auto")
    con.close()


def test_a_soft_reset_from_the_raw_repl_restarts_the_loops(sim_nodes):
    """mpremote and ampy soft-reset into the raw REPL, where main.py does not run, and the
    watchdog keeps running across a soft reset (as on ESP32). boot.py starts the node
    again: outputs at fail-safe as it is built, then the loops run and feed the watchdog."""
    con = node_for(sim_nodes, "soft", TWO_LOOPS_BENCH, TWO_LOOPS)
    boot = reset(con)
    assert "running 2 loop(s)" in boot, boot
    con.write(b"\x04")  # soft reset from the raw REPL, as mpremote does
    con.read_until(b"raw REPL; CTRL-B to exit\r\n>")
    out = con.run("import machine, time\n"
                  "t0 = [lp.ticks for lp in node.loops]\n"
                  "time.sleep_ms(4000)\n"  # twice the watchdog's 2 s: it must be fed
                  "t1 = [lp.ticks for lp in node.loops]\n"
                  "print(node.running(), node.wdt is not None, all(b > a for a, b in zip(t0, t1)),"
                  " machine.reset_cause())")
    assert out.split() == ["True", "True", "True", "5"], out  # SOFT_RESET: no watchdog reset
    con.close()
