"""`cyphy check CONFIG [--chip] [--psram] [--json]` (cyphy.check): config and chip errors name
the field, RAM is measured by starting the firmware on the 32-bit MicroPython (cyphy.mp32),
loops' CPU is scaled to the chip's speed; exit 0 fits, 1 does not (or a config/chip error),
2 usage, always one line and never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cyphy import check, mp32

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "firmware" / "config.example.json"
KEYS = {"fits", "ram_resident_bytes", "ram_free_bytes", "ram_largest_free_bytes", "heap_bytes",
        "modules", "loops", "chip", "psram", "errors"}


@pytest.fixture(autouse=True)
def _port():
    why = mp32.unavailable()
    if why:
        pytest.fail(f"the 32-bit MicroPython is not installed: {why}")


def cyphy_check(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cyphy")
    return subprocess.run([str(exe), "check", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def write(tmp_path: Path, cfg: dict, name: str = "c.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


def one_line(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_example_fits_an_esp32_with_psram_and_reports_every_figure():
    p = cyphy_check(EXAMPLE, "--psram", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert KEYS <= r.keys()
    assert r["fits"] is True and r["chip"] == "esp32" and r["psram"] is True and r["errors"] == []
    assert r["heap_bytes"] == check.HEAPS[("esp32", True)].bytes
    # every firmware module the node imports at boot, with its own import cost
    for m in ("cyphy_node.node", "cyphy_node.comms", "cyphy_node.proto", "cyphy_node.cfgview", "board",
              "boards.esp32.pins"):
        assert r["modules"][m] > 100
    # the node boots from the compiled config: the validator is never loaded
    assert "cyphy_node.config" not in r["modules"]
    # the node holds at least its modules
    assert r["ram_resident_bytes"] >= sum(r["modules"].values())
    assert r["ram_free_bytes"] == r["heap_bytes"] - r["ram_resident_bytes"]
    assert check.MARGIN <= r["ram_largest_free_bytes"] <= r["ram_free_bytes"]
    oven = r["loops"]["oven"]
    assert oven["rate_hz"] == 10 and 0 < oven["cpu_pct"] < 50   # a 10 Hz PID: a few % of an ESP32
    assert r["seconds"] < 10


def test_the_wroom_heap_is_too_small_for_a_node_of_eight_1khz_loops(tmp_path):
    # Eight PID loops at 1 kHz on one ESP32: more than the CPU, whatever the firmware's size.
    cfg = example()
    cfg["channels"] = [cfg["channels"][0]] + [
        {"name": f"h{i}", "pin": pin, "kind": "pwm", "freq_hz": 1000, "range": [0, 100], "failsafe": 0}
        for i, pin in enumerate([16, 17, 18, 19, 21, 22, 23, 25])]
    loop = cfg["loops"][0]
    cfg["loops"] = [dict(loop, name=f"zone{i}", rate_hz=1000, actuator=f"h{i}") for i in range(8)]
    p = cyphy_check(write(tmp_path, cfg), "--chip", "esp32")
    assert p.returncode == 1
    line = one_line(p)
    assert line.startswith("does not fit ESP32 without PSRAM") and "% of the CPU" in line
    assert "DOES NOT FIT" in p.stdout and "zone0" in p.stdout and "% CPU" in p.stdout


def test_romfs_keeps_the_firmwares_bytecode_out_of_the_heap():
    # The same node with its modules in a ROMFS image (MicroPython 1.25+, on the 32-bit port
    # 1.29: the image lives outside the GC heap, mounted at /rom): what is left resident is
    # what the modules create when they run and the node's own objects.
    cfg = example()
    lib = check.check(cfg, "esp32", psram=True, timing=False)
    rom = check.check(cfg, "esp32", psram=True, timing=False, romfs=True)
    assert lib.fits and rom.fits and not lib.romfs and rom.romfs
    assert rom.romfs_bytes is not None and rom.romfs_bytes > 50_000 and lib.romfs_bytes is None
    assert rom.modules.keys() == lib.modules.keys()
    assert rom.ram_resident_bytes < lib.ram_resident_bytes - 40_000
    for m in ("cyphy_node.proto", "cyphy_node.node", "cyphy_node.pid"):
        assert 0 < rom.modules[m] < lib.modules[m]
    j = rom.to_json()
    assert j["romfs"] is True and j["romfs_bytes"] == rom.romfs_bytes
    assert "ROMFS image" in rom.summary()


def test_a_small_heap_names_the_biggest_modules():
    cfg = example()
    small = check.Heap(64 * 1024, 64 * 1024, "a 64 KB heap")
    r = check.check(cfg, "esp32", heap=small, timing=False, frozen=False)   # the .mpy files on /lib
    assert not r.fits and r.heap_bytes == 64 * 1024
    assert any("resident" in why for why in r.reasons)
    biggest = max(r.modules, key=r.modules.get)
    assert r.advice and biggest in r.advice[0]
    assert "does not fit" in r.summary() and biggest in r.summary()


def test_a_config_error_names_the_field(tmp_path):
    cfg = example()
    cfg["loops"][0]["controller"]["kp"] = "abc"
    f = write(tmp_path, cfg)
    p = cyphy_check(f)
    assert p.returncode == 1
    assert one_line(p) == 'error: loops[0].controller.kp: must be a number, got "abc"'
    p = cyphy_check(f, "--json")
    assert p.returncode == 1
    r = json.loads(p.stdout)
    assert r["fits"] is False and r["errors"] == [
        {"field": "loops[0].controller.kp", "reason": 'must be a number, got "abc"', "kind": "config"}]
    assert r["ram_resident_bytes"] is None and r["modules"] == {}


def test_a_chip_error_names_the_field(tmp_path):
    cfg = example()
    cfg["channels"][0]["pin"] = 4                     # S3 pins for the others: ADC1, PWM, input
    cfg["channels"][1]["pin"] = 6
    cfg["channels"][2]["pin"] = 7
    cfg["channels"][3] = {"name": "fan", "pin": 5, "kind": "dac", "range": [0, 100], "failsafe": 0}
    p = cyphy_check(write(tmp_path, cfg), "--chip", "esp32s3", "--json")
    assert p.returncode == 1
    r = json.loads(p.stdout)
    assert r["chip"] == "esp32s3" and r["fits"] is False
    (e,) = r["errors"]
    assert e["field"] == "channels[3].pin" and e["kind"] == "chip" and "no DAC" in e["reason"]


@pytest.mark.parametrize("case", ["missing", "not json", "binary", "not an object", "chip", "c3 psram"])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, case):
    f = tmp_path / "c.json"
    args: list = [f]
    if case == "missing":
        want = "no such file"
    elif case == "not json":
        f.write_text("{not json")
        want = "is not valid JSON"
    elif case == "binary":
        f.write_bytes(bytes(range(256)) * 4)
        want = "binary"
    elif case == "not an object":
        f.write_text("[1, 2]")
        want = "must be a JSON object"
    elif case == "chip":
        args = [EXAMPLE, "--chip", "esp8266"]
        want = "unknown chip 'esp8266'; use one of: esp32, esp32s3, esp32c3"
    else:
        args = [EXAMPLE, "--chip", "esp32c3", "--psram"]
        want = "ESP32-C3 has no PSRAM"
    p = cyphy_check(*args)
    assert p.returncode == 2
    line = one_line(p)
    assert line.startswith("Error: ") and want in line
    assert p.stdout == ""


def test_import_order_puts_each_module_after_its_imports():
    order = check.import_order(check.boot_roots({"comms": {"udp": True, "follow": [{}]}}))
    assert order.index("cyphy_node.fixed") < order.index("cyphy_node.pid") < order.index("cyphy_node.node")
    assert order.index("boards.hal") < order.index("board") and "boards.esp32.pins" in order
    assert {"cyphy_node.net", "boards.esp32.wifi", "cyphy_node.peer"} <= set(order)
    assert order[0] == "cyphy_node"
