"""The firmware frozen into a 32-bit MicroPython built here (cyphy.frozen) and issue 12's
WROOM budget measured on it: `cyphy check --frozen`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cyphy import check, frozen, mp32

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import ram  # noqa: E402  (bench/ram.py: the bench's configs of 1, 2, 8 loops)

BUDGET = 40 * 1024          # issue 12: resident after boot, two loops, serial and UDP
LARGEST = 32 * 1024         # ... and the largest free block in a 110 KB heap


@pytest.fixture(autouse=True)
def _built():
    why = frozen.unavailable()
    if why:
        pytest.fail(f"the frozen 32-bit MicroPython cannot be built here: {why}")


def two_loops_udp() -> dict:
    cfg = ram.loops_config(2)
    cfg["comms"] = dict(cfg.get("comms") or {}, udp=True)
    return cfg


def test_the_build_is_32_bit_with_the_firmware_frozen_and_a_fixed_heap():
    # 31-bit small ints as on ESP32; the firmware imports with nothing on the filesystem;
    # an allocation beyond the heap is a MemoryError (this heap never grows).
    code = ("import sys\nprint(sys.maxsize, sys.path)\nimport cyphy_node.pid, board\n"
            "print(type(1 << 30).__name__, cyphy_node.pid.__file__)\n")
    r, big = frozen.run_many([
        mp32.Snippet(code, heap_bytes=64 * 1024, files={}),
        mp32.Snippet("b = bytearray(80 * 1024)\n", heap_bytes=64 * 1024, files={})])
    r.check()
    first, second = r.stdout.split("\n")[:2]
    assert first.startswith("2147483647 ['', '.frozen', '/lib']")
    assert second == "int cyphy_node/pid.py"
    assert len(r.settled) == 1 and 0 < r.settled[0].used < 16 * 1024
    assert not big.ok and "MemoryError" in big.stderr


def test_settled_figures_are_per_step_and_a_failing_step_stops_the_run():
    r = frozen.run_many([mp32.Snippet("x = bytearray(8000)\n", heap_bytes=64 * 1024, files={},
                                      more=("y = bytes(100); del x\n", "raise ValueError('no')\n",
                                            "print('never')\n"))])[0]
    assert r.status == 1 and "ValueError: no" in r.stderr and "never" not in r.stdout
    a, b = r.settled
    assert 7_700 < a.used - b.used < 8_100   # x freed, y kept: settled within the step
    assert a.total == b.total and b.max_free > a.max_free


def test_two_loops_with_udp_fit_a_wroom_within_issue_12s_budget():
    rep = check.check(two_loops_udp(), "esp32", psram=False, timing=False, frozen=True)
    lib = check.check(two_loops_udp(), "esp32", psram=True, timing=False)
    assert rep.fits and rep.frozen and not lib.frozen, rep.summary()
    assert rep.ram_resident_bytes <= BUDGET, rep.summary()
    assert rep.ram_largest_free_bytes >= LARGEST, rep.summary()
    # the same modules, each taking a fraction of what its .mpy costs in the heap
    assert rep.modules.keys() == lib.modules.keys()
    assert sum(rep.modules.values()) < sum(lib.modules.values()) / 3
    assert "firmware frozen" in rep.summary()


def test_cli_frozen_json_and_usage(tmp_path):
    path = tmp_path / "two.json"
    path.write_text(json.dumps(two_loops_udp()))
    exe = Path(sys.executable).with_name("cyphy")
    p = subprocess.run([str(exe), "check", str(path), "--frozen", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["fits"] is True and j["frozen"] is True and j["romfs"] is False
    assert j["ram_resident_bytes"] <= BUDGET and j["heap_bytes"] == check.heap_for("esp32", False).bytes
    p = subprocess.run([str(exe), "check", str(path), "--frozen", "--romfs"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "exclude each other" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_a_changed_firmware_gets_its_own_build():
    # the key covers the firmware's sources (and the target's board), so a binary is never
    # reused for other firmware
    assert frozen.firmware_key("esp32") != frozen.firmware_key("sim")
    assert frozen.binary("esp32").parent.name.endswith(frozen.firmware_key("esp32"))


def test_the_two_loop_udp_node_serves_the_protocol_in_a_wroom_heap():
    # Issue 12's case in that state: the firmware frozen, a WROOM's heap (plus the
    # measuring code's), two loops running in the foreground, and a host speaking the real
    # protocol over a real UDP socket: sets, gets, telemetry and reads, with no MemoryError,
    # no comms error and no heap left behind by the traffic.
    import threading
    import time

    import cyphy

    run_s = 12
    snip, port = check.frozen_soak(two_loops_udp(), run_s)
    out: list = []
    t = threading.Thread(target=lambda: out.append(frozen.run_many([snip], timeout=90)[0]))
    t.start()
    done = 0
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                n = cyphy.connect(f"udp://127.0.0.1:{port}", key="5a" * 32, timeout=1.0)
                break
            except cyphy.api.LinkError:
                if time.monotonic() > deadline or not t.is_alive():
                    raise
                time.sleep(0.2)
        with n:
            assert n.name == "ram-2" and n.loops == ["loop0", "loop1"]
            stop = time.monotonic() + run_s - 4
            while time.monotonic() < stop:
                v = 20.0 + done % 10
                n.set("loop0.setpoint", v)
                assert n.get("loop0.setpoint") == v
                n.get("loop1")
                done += 1
            sample = next(n.telemetry(period_ms=100))
            assert set(sample["loops"]) == {"loop0", "loop1"}
    finally:
        t.join(60)
    r = out[0]
    assert r.ok, r.stderr
    soak = check.parse_soak(r.stdout)
    assert "MemoryError" not in r.stdout + r.stderr
    assert soak["comms_errors"] == 0 and soak["dropped"] == "[]", soak
    assert done >= 10, done    # (the service runs after each 100 ms pass here: no timers)
    assert soak["heap_after"] - soak["heap_before"] < 2048, soak   # the traffic left nothing


def test_a_node_that_runs_out_of_the_fixed_heap_does_not_fit_and_says_where():
    # The frozen build's heap is the chip's and never grows: eight loops in 48 KB run out
    # of it while the node builds them, which the node says (and refuses the config), and
    # which is "does not fit" (exit 1), not a failed measurement.
    from cyphy.cli.check import text

    small = check.Heap(48 * 1024, 48 * 1024, "a 48 KB heap")
    rep = check.check(ram.loops_config(8), "esp32", psram=False, timing=False, heap=small, frozen=True)
    assert not rep.fits and rep.ram_resident_bytes is None, rep.summary()
    assert "did not start in the 48.0 KB heap: its loops did not fit in the" in rep.reasons[0]
    assert "PSRAM" in rep.advice[0]
    assert rep.summary().startswith("does not fit ESP32 without PSRAM, firmware frozen: the node did not start")
    t = text(rep)
    assert "DOES NOT FIT" in t and "its loops did not fit" in t
    assert rep.to_json()["fits"] is False
