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
    if why is None:
        out += soak(ctx)
    bare = check.bare_bytes() if hasattr(check, "bare_bytes") else None
    if bare is not None:
        out.append(C.record("ram_free_bytes", wroom.bytes - bare, "B", system="micropython",
                            chip="esp32", heap_bytes=wroom.bytes,
                            note="a plain MicroPython's heap on an ESP32-WROOM, less what the bare "
                                 "interpreter holds (measured on the 32-bit port)"))
    return out


# An hour of a host's traffic with a node, by count: `cyphy monitor`'s telemetry at 10 Hz
# (36,000 samples) and a set and a get every second (7,200 commands). Here the commands'
# count is sent as fast as the node answers, while a second session streams telemetry.
HOUR_COMMANDS = 7200


def soak(ctx) -> list[dict]:
    """Issue 12's node (two loops, serial protocol and UDP) frozen in a WROOM's heap on the
    32-bit build: an hour's commands and a telemetry stream over real UDP from two host
    sessions; MemoryErrors, comms errors and the heap the traffic left behind."""
    import threading
    import time

    import cyphy
    from cyphy import check, frozen

    cfg = loops_config(2)
    cfg.setdefault("comms", {})["udp"] = True
    for lp in cfg["loops"]:
        lp["rate_hz"] = 100          # the service runs after every pass here (no timers)
    want = HOUR_COMMANDS // (10 if ctx.quick else 1)
    budget_s = 25.0 if ctx.quick else 120.0   # about 100 commands a second get answered
    snip, port = check.frozen_soak(cfg, budget_s)
    res: list = []
    t = threading.Thread(target=lambda: res.append(frozen.run_many([snip], timeout=budget_s + 60)[0]))
    t.start()
    url, key = f"udp://127.0.0.1:{port}", "5a" * 32
    sent = samples = failed = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal samples
        with cyphy.connect(url, key=key, timeout=2.0) as m:
            for _ in m.telemetry(period_ms=100):
                samples += 1
                if stop.is_set():
                    break

    t0 = time.monotonic()
    try:
        deadline = t0 + 20
        while True:
            try:
                n = cyphy.connect(url, key=key, timeout=2.0)
                break
            except cyphy.api.LinkError:
                if time.monotonic() > deadline or not t.is_alive():
                    raise
                time.sleep(0.2)
        tele = threading.Thread(target=stream, daemon=True)
        tele.start()
        with n:
            t1 = time.monotonic()
            while sent < want and time.monotonic() - t0 < budget_s - 10:
                v = 20.0 + sent % 50 / 10
                try:
                    n.set("loop0.setpoint", v)
                    if n.get("loop0.setpoint") != v:
                        failed += 1
                except cyphy.api.LinkError:
                    failed += 1
                sent += 2
            took = time.monotonic() - t1
        stop.set()
        tele.join(10)
    except Exception as e:      # noqa: BLE001 - a bench records what failed
        stop.set()
        t.join(budget_s + 60)
        return [C.skipped("frozen_soak_commands", "count", C.why(e), storage="frozen")]
    t.join(budget_s + 60)
    r = res[0] if res else None
    if r is None or not r.ok:
        return [C.skipped("frozen_soak_commands", "count",
                          f"the node's run failed: {(r.stderr if r else 'no result')[-300:]}",
                          storage="frozen")]
    s = check.parse_soak(r.stdout)
    p = {"loops": 2, "udp": True, "storage": "frozen", "heap_bytes": check.heap_for("esp32", False).bytes,
         "commands_wanted": want, "seconds": round(took, 1), "telemetry_samples": samples}
    ctx.log(f"ram: frozen soak {sent} commands in {took:.0f} s, {samples} telemetry samples, "
            f"{failed} failed, comms errors {s['comms_errors']}, heap +{s['heap_after'] - s['heap_before']} B")
    return [C.record("frozen_soak_commands", sent, "count", **p),
            C.record("frozen_soak_failed_commands", failed, "count", **p),
            C.record("frozen_soak_memory_errors", ("MemoryError" in r.stdout + r.stderr) * 1, "count", **p),
            C.record("frozen_soak_comms_errors", s["comms_errors"], "count", **p),
            C.record("frozen_soak_heap_left_bytes", s["heap_after"] - s["heap_before"], "B", **p)]
