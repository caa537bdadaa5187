"""`make bench`: cyphy's figures next to the anchors', measured in one run.

    python bench/run.py [--quick] [--only SECTION[,SECTION...]] [--out FILE] [--doc FILE]

Sections: control, protocol, transfer, latency, fleet, fleet_mqtt, sim, ram, attack, tuning
(docs/benchmarks.md says what each
measures and how). Writes the records to bench/results.json, regenerates the table in
docs/benchmarks.md between <!-- bench:begin --> and <!-- bench:end -->, and prints it.
With --only, the sections run replace their own records in an existing results file and
the others are kept.

Never fails because a machine is slow or a tool is missing: a figure that cannot be
measured is recorded as skipped, with the reason. The exit status is 1 only when the
bench's own code is broken (an exception such as NameError or TypeError in a section,
recorded as well), so that it cannot rot silently; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import report  # noqa: E402

SECTIONS = ("control", "protocol", "transfer", "latency", "fleet", "fleet_mqtt", "sim", "ram",
            "attack", "tuning")
RESULTS = HERE / "results.json"
DOC = C.REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# The figures each section always reports (skipped, with the reason, when not measured).
REQUIRED = {
    "control": [("tick_alloc_bytes", "B"), ("jitter_p99_us", "us"), ("overruns", "count")],
    "protocol": [("telemetry_frame_bytes", "B"), ("decode_frames_per_s", "frames/s")],
    "transfer": [("deploy_kbytes_per_s", "KB/s")],
    "latency": [("command_latency_p99_ms", "ms")],
    "fleet": [("fleet_frames_lost", "frames")],
    "fleet_mqtt": [("fleet_frames_lost", "frames"), ("gateway_cpu_pct_per_100_nodes", "%")],
    "sim": [("chip_slowdown", "x"), ("control_pass_chip_us", "us"), ("soak_bad_tags", "frames")],
    "ram": [("ram_resident_bytes", "B")],
    "attack": [("forged_accepted", "frames"), ("replays_accepted", "frames"),
               ("exactly_once_violations", "commands"), ("failsafe_within_one_period_pct", "%"),
               ("flood_read_p99_ms", "ms"), ("powercut_unreachable_nodes", "nodes")],
    "tuning": [("tuning_goal_met_pct", "%"), ("tuning_spec_met_pct", "%"),
               ("tuning_iae_ratio_median", "x")],
}


class Context:
    def __init__(self, quick: bool, log: C.Log, lab: C.Lab) -> None:
        self.quick = quick
        self.log = log
        self.lab = lab
        self.errors: list[str] = []
        self.section = ""

    def error(self, e: BaseException) -> None:
        """Record an exception; a code error makes the exit status 1."""
        if C.is_code_error(e):
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self.errors.append(f"{self.section}: {C.why(e)}\n{tb}")
            self.log(f"{self.section}: BENCH CODE ERROR {C.why(e)}")


def run_section(ctx: Context, name: str) -> list[dict]:
    ctx.section = name
    t0 = time.monotonic()
    ctx.log(f"== {name}")
    try:
        mod = importlib.import_module(name)
        recs = mod.run(ctx)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a section never takes the run down
        ctx.error(e)
        ctx.log(f"{name}: skipped: {C.why(e)}")
        recs = [C.skipped(n, u, C.why(e)) for n, u in REQUIRED[name]]
    # a figure the section promised and did not produce is recorded as skipped
    have = {r["name"] for r in recs}
    for n, u in REQUIRED[name]:
        if n not in have:
            recs.append(C.skipped(n, u, f"not produced by section {name}"))
    for r in recs:
        r["section"] = name
    ctx.log(f"{name}: {time.monotonic() - t0:.1f} s")
    return recs


def merge(old: list[dict], new: list[dict], sections: list[str]) -> list[dict]:
    keep = [r for r in old if r.get("section") not in sections and r.get("name") != "machine"]
    return new + keep


def load(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


def write_doc(path: Path, table: str) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table.rstrip()}\n{END}{tail}"
    if new != text:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (under two minutes)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only these sections (comma-separated or repeated): "
                         + ", ".join(SECTIONS))
    ap.add_argument("--out", type=Path, default=RESULTS, help="results file (JSON)")
    ap.add_argument("--doc", type=Path, default=DOC,
                    help="markdown file whose bench:begin/end block gets the table")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    only = [s.strip() for o in args.only for s in o.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    sections = only or list(SECTIONS)

    def on_term(*_a: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    log = C.Log(args.quiet)
    t0 = time.monotonic()
    machine = C.machine()
    log(f"bench ({'quick' if args.quick else 'full'}): {', '.join(sections)} on "
        f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_avg']}")
    records: list[dict] = []
    lab = C.Lab()
    ctx = Context(args.quick, log, lab)
    try:
        for name in sections:
            records += run_section(ctx, name)
    except KeyboardInterrupt:
        log("interrupted: powering the sim nodes off")
        lab.close()
        return 130
    finally:
        lab.close()
    machine["load_avg_after"] = C.machine()["load_avg"]
    machine["mode"] = "quick" if args.quick else "full"
    machine["sections"] = sections
    machine["duration_s"] = round(time.monotonic() - t0, 1)
    mrec = C.record("machine", None, "", "host", **machine)
    mrec["section"] = "machine"
    all_recs = [mrec] + merge(load(args.out), records, sections) if only else [mrec] + records
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(all_recs, indent=1) + "\n")
    os.replace(tmp, args.out)
    table = report.markdown(all_recs)
    if not write_doc(args.doc, table):
        log(f"{args.doc}: no {BEGIN}/{END} block: the table was not written there")
    print(table)
    log(f"done in {time.monotonic() - t0:.0f} s; results in {args.out}")
    if ctx.errors:
        print("\nbench code errors (the bench itself needs fixing):", file=sys.stderr)
        for e in ctx.errors:
            print("  " + e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
