"""Section 7, RAM on a 32-bit MicroPython (issue 12): what the firmware takes on a node.

`cyphy check` (host/cyphy/check.py) boots the firmware as boot.py does on the MicroPython
WebAssembly port (32-bit words and 31-bit ints, as on ESP32) in an ESP32's typical heap,
for configs of one, two and eight PID loops (serial protocol, no Wi-Fi): resident bytes
after boot, free bytes and the largest free block in an ESP32-WROOM's heap (~110 KB,
MicroPython 1.22+ without PSRAM), next to what a plain MicroPython leaves free there.
The budget (issue 12): resident at most 40 KB, largest free block at least 32 KB.
Each config is measured three ways: the firmware's .mpy on the filesystem (`storage` "lib",
as `cyphy deploy` leaves a node), in a ROMFS image (`storage` "romfs", bytecode in flash:
MicroPython 1.25+ with a ROMFS partition), both on the WebAssembly port, and frozen into
MicroPython (`storage` "frozen": bytecode and names in flash, as a custom ESP32 build has
it) on the 32-bit Unix port built here (cyphy.frozen); the two-loop config also with UDP
on, issue 12's own case.
"""

from __future__ import annotations

import copy

import common as C

# ADC1 pins and PWM-capable outputs of an ESP32 DevKitC, one pair per loop
ADC = [32, 33, 34, 35, 36, 39, 4, 13]
PWM = [16, 17, 18, 19, 21, 22, 23, 25]
BUDGET = 40 * 1024
USER_BLOCKS = C.REPO / "tests" / "hil" / "user_blocks"     # mypi.py, the HIL example's PI

# Issue 17's node: a cascade (two-tank level -> feed), a DS18B20 and an SHT3x on their buses,
# one user block (a PI of the user's own on the DS18B20), UDP on.
LEVEL = {"mv_min": 0, "mv_max": 2450, "eng_min": 0, "eng_max": 200}
FULL = {
    "name": "ram-full", "comms_timeout_ms": 0, "comms": {"udp": True}, "channels": [
        {"name": "h1", "pin": 34, "kind": "adc", "units": "mm", "scale": LEVEL, "valid": [13, 198]},
        {"name": "h2", "pin": 35, "kind": "adc", "units": "mm", "scale": LEVEL, "valid": [13, 198]},
        {"name": "pump", "pin": 25, "kind": "dac", "range": [0, 10], "units": "V", "failsafe": 0},
        {"name": "temp", "pin": 4, "kind": "ds18b20", "rom": "28ff641e0f160390", "valid": [0, 120]},
        {"name": "air", "kind": "sht3x", "sda": 21, "scl": 22, "quantity": "temperature"},
        {"name": "rh", "kind": "sht3x", "sda": 21, "scl": 22, "quantity": "humidity"},
        {"name": "heater", "pin": 26, "kind": "pwm", "range": [0, 100], "failsafe": 0}],
    "loops": [
        {"name": "level", "sensor": "h2", "controller": {"type": "pid", "kp": 2.06, "ki": 0.0258,
                                                         "setpoint": 100}},
        {"name": "feed", "sensor": "h1", "actuator": "pump", "setpoint_from": "level",
         "controller": {"type": "pid", "kp": 0.167, "ki": 0.0084, "setpoint": 64.4}}],
    "blocks": [{"name": "pi", "type": "user", "module": "mypi", "inputs": ["temp"],
                "params": {"setpoint": 60, "kp": 4.9, "ki": 0.034},
                "actuators": {"out": "heater"}, "units": "%", "range": [0, 100]}],
    "tasks": [{"name": "tanks", "rate_hz": 10, "order": ["level", "feed"]},
              {"name": "oven", "rate_hz": 1, "order": ["pi"]}]}


def loops_config(n: int) -> dict:
    base = copy.deepcopy(C.CONFIG)
    temp = next(c for c in base["channels"] if c["kind"] == "adc")
    heat = next(c for c in base["channels"] if c["kind"] == "pwm")
    loop = base["loops"][0]
    cfg = {k: v for k, v in base.items() if k not in ("channels", "loops", "plant")}
    cfg["name"] = f"ram-{n}"
    cfg["channels"], cfg["loops"] = [], []
    for i in range(n):
        t = dict(temp, name=f"t{i}", pin=ADC[i])
        h = dict(heat, name=f"h{i}", pin=PWM[i])
        lp = copy.deepcopy(loop)
        lp.update(name=f"loop{i}", sensor=t["name"], actuator=h["name"])
        cfg["channels"] += [t, h]
        cfg["loops"].append(lp)
    return cfg


def run(ctx) -> list[dict]:
    from cyphy import check

    out: list[dict] = []
    wroom = check.heap_for("esp32", False)
    from cyphy import frozen

    why = frozen.unavailable()
    storages = ("lib", "romfs", "frozen") if why is None else ("lib", "romfs")
    if why:
        out.append(C.skipped("ram_resident_bytes", "B", f"frozen: {why}", storage="frozen"))
    cases = [(n, udp, st) for st in storages
             for n, udp in ((1, False), (2, False), (2, True), (8, False), ("full", True))]
    for n, udp, storage in cases:
        ctx.log(f"ram: {n} loop(s){' + UDP' if udp else ''}, firmware in {storage}")
        if n == "full":
            cfg, base = copy.deepcopy(FULL), USER_BLOCKS
        else:
            cfg, base = loops_config(n), None
            if udp:
                cfg.setdefault("comms", {})["udp"] = True
        rep = check.check(cfg, "esp32", psram=False, timing=False, romfs=storage == "romfs",
                          frozen=storage == "frozen", base=base)
        p = {"loops": n, "udp": udp, "storage": storage, "chip": "esp32", "heap_bytes": wroom.bytes,
             "fits": rep.fits, "budget_bytes": BUDGET,
             "within_budget": (rep.ram_resident_bytes or 0) <= BUDGET}
        if storage == "romfs":
            p["romfs_bytes"] = rep.romfs_bytes
        if rep.errors:
            out.append(C.skipped("ram_resident_bytes", "B", f"config error: {rep.errors}", loops=n))
            continue
        out += [C.record("ram_resident_bytes", rep.ram_resident_bytes, "B", **p),
                C.record("ram_largest_free_bytes", rep.ram_largest_free_bytes, "B", **p)]
        if n == 1:
            top = sorted(rep.modules.items(), key=lambda kv: -kv[1])[:6]
            out.append(C.record("ram_modules_top_bytes", sum(b for _, b in top), "B",
                                modules=dict(top), storage=storage))
    bare = check.bare_bytes() if hasattr(check, "bare_bytes") else None
    if bare is not None:
        out.append(C.record("ram_free_bytes", wroom.bytes - bare, "B", system="micropython",
                            chip="esp32", heap_bytes=wroom.bytes,
                            note="a plain MicroPython's heap on an ESP32-WROOM, less what the bare "
                                 "interpreter holds (measured on the 32-bit port)"))
    return out
