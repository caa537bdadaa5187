"""`make bench` cannot rot silently: its code paths run here in a tiny mode, and the
committed results keep the schema and the names docs/benchmarks.md promises.

(Named test_benchmarks.py: tests/sim/test_bench.py is the sim's bench-file test, and two
test modules with one basename cannot be collected together.)"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import run as bench_run  # noqa: E402

ANCHORS = {"MAVLink", "Modbus", "ESPHome", "Sparkplug B", "JSON/MQTT", "CBOR"}


def check_schema(recs: list[dict]) -> None:
    assert isinstance(recs, list) and recs
    for r in recs:
        assert {"name", "value", "unit", "system", "params"} <= r.keys(), r
        assert isinstance(r["name"], str) and isinstance(r["unit"], str), r
        assert isinstance(r["system"], str) and isinstance(r["params"], dict), r
        if "skipped" in r:
            assert r["value"] is None and r["skipped"], r
        elif r["name"] != "machine":
            assert isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool), r


def names(recs: list[dict], name: str, measured: bool = False) -> list[dict]:
    return [r for r in recs if r["name"] == name and (not measured or "skipped" not in r)]


def test_quick_protocol_section_runs_and_writes_results_and_table(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# x\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\nafter\n")
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--only", "protocol",
                        "--out", str(out), "--doc", str(doc), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    recs = json.loads(out.read_text())
    check_schema(recs)
    sizes = names(recs, "telemetry_frame_bytes", measured=True)
    cyphy = {r["params"]["auth"]: r["value"] for r in sizes
             if r["system"] == "cyphy" and r["params"]["link"] == "udp"}
    assert cyphy == {True: 33, False: 29}
    assert ANCHORS <= {r["system"] for r in sizes}
    dec = {(r["system"], r["params"].get("auth")): r for r in names(recs, "decode_frames_per_s")}
    assert dec[("cyphy", True)]["value"] > 0 and dec[("cyphy", False)]["value"] > 0
    for anchor in ("MAVLink", "Sparkplug B"):  # measured, or skipped with the reason
        assert any(s == anchor for s, _ in dec), dec.keys()
    text = doc.read_text()
    assert "old" not in text and text.endswith("<!-- bench:end -->\n\nafter\n")
    assert "| cyphy v1, authenticated, UDP | cyphy | 33 | yes |" in text
    assert "Bytes per telemetry sample" in r.stdout


class FakeLab:
    root = Path("/nonexistent")


def section(monkeypatch, name: str, exc: BaseException) -> tuple[list[dict], list[str]]:
    mod = types.ModuleType(name)

    def run(ctx):
        raise exc

    mod.run = run
    monkeypatch.setitem(sys.modules, name, mod)
    ctx = bench_run.Context(True, lambda msg: None, FakeLab())
    return bench_run.run_section(ctx, name), ctx.errors


def test_a_failing_section_is_recorded_as_skipped_and_only_code_errors_count(monkeypatch):
    recs, errors = section(monkeypatch, "fleet", TimeoutError("the machine is slow"))
    assert [(r["name"], r["value"], r["section"]) for r in recs] == [
        ("fleet_frames_lost", None, "fleet")]
    assert "TimeoutError: the machine is slow" in recs[0]["skipped"] and errors == []
    recs, errors = section(monkeypatch, "latency", NameError("name 'x' is not defined"))
    assert recs[0]["name"] == "command_latency_p99_ms" and "skipped" in recs[0]
    assert len(errors) == 1 and "NameError" in errors[0]


def test_report_lists_what_was_not_measured():
    recs = [
        {"name": "deploy_kbytes_per_s", "value": 4.2, "unit": "KB/s", "system": "mpremote",
         "params": {"tool": "mpremote fs cp -r", "files": 3, "bytes": 1000}},
        {"name": "deploy_seconds", "value": 0.24, "unit": "s", "system": "mpremote",
         "params": {"tool": "mpremote fs cp -r", "files": 3, "bytes": 1000}},
        {"name": "deploy_kbytes_per_s", "value": None, "unit": "KB/s", "system": "cyphy",
         "params": {"tool": "cyphy deploy --force"}, "skipped": "cyphy deploy not available yet"},
    ]
    md = report.markdown(recs)
    assert "| mpremote fs cp -r | 3 | 1000 | - | 0.24 | 4.20 | - |" in md
    assert "cyphy deploy not available yet" in md


RESULTS = BENCH / "results.json"


@pytest.mark.skipif(not RESULTS.exists(), reason="no committed bench/results.json")
def test_committed_results_have_the_schema_and_every_name():
    recs = json.loads(RESULTS.read_text())
    check_schema(recs)
    mode = names(recs, "machine")[0]["params"]["mode"]

    def systems(name: str) -> set[str]:
        return {r["system"] for r in names(recs, name)}

    for name in ("tick_alloc_bytes", "jitter_p99_us", "overruns"):
        assert {r["params"]["rate_hz"] for r in names(recs, name) if r["system"] == "cyphy"} \
            >= {100, 500, 1000}, name
    assert {"cyphy"} | ANCHORS <= systems("telemetry_frame_bytes")
    assert {r["params"]["auth"] for r in names(recs, "telemetry_frame_bytes")
            if r["system"] == "cyphy"} == {True, False}
    assert {"cyphy", "MAVLink"} <= systems("decode_frames_per_s")
    assert {"cyphy", "mpremote", "ampy"} <= systems("deploy_kbytes_per_s")
    assert {"serial", "udp"} <= {r["params"]["link"] for r in names(recs, "command_latency_p99_ms")}
    sizes = {10} if mode == "quick" else {10, 50, 100}
    assert sizes <= {r["params"].get("requested", r["params"]["nodes"])
                     for r in names(recs, "fleet_frames_lost")}
    for r in names(recs, "tick_alloc_bytes", measured=True):
        assert r["value"] == 0, r  # the control tick allocates nothing
