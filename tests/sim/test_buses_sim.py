"""Issue 17, item 3, on the sim: an SHT3x on I2C and a MAX31855 on SPI, their drivers
(firmware/lib/cyphy_node/sht3x.py, max31855.py) running unchanged against the sim's models
(boards/sim/rom/_i2c.py, _spi.py: MicroPython's machine.I2C / machine.SPI API, the parts'
timing and data formats, faults). A thermocouple loop holds a kiln at 500 degC; the SHT3x reads
the room's temperature and humidity; their faults (missing, CRC, open and shorted
thermocouple) are sensor faults of the loop or shown in the channel's state."""

from __future__ import annotations

import json

import pytest
from benchnode import booted, get_after

BENCH = {
    "plant": {"type": "fotd", "gain": 9.0, "tau_s": 160, "dead_time_s": 12, "ambient": 20.0},
    "wiring": [
        {"kind": "spi", "sck": 18, "miso": 19, "devices": [
            {"type": "max31855", "cs": 5, "signal": "temperature", "internal": 24.0,
             "faults": [{"at_s": 1500, "fault": "open"}, {"at_s": 1520, "fault": "none"},
                        {"at_s": 1600, "fault": "short_gnd"}, {"at_s": 1620, "fault": "none"},
                        {"at_s": 1700, "fault": "missing"}, {"at_s": 1720, "fault": "none"}]}]},
        {"kind": "i2c", "sda": 21, "scl": 22, "devices": [
            {"type": "sht3x", "addr": 68, "temperature": 23.5, "humidity": 41.5,
             "faults": [{"at_s": 1500, "fault": "crc"}, {"at_s": 1520, "fault": "missing"},
                        {"at_s": 1540, "fault": "none"}]}]},
        {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]}],
    "seed": 1,
}
CONFIG = {"name": "kiln", "comms_timeout_ms": 0, "channels": [
    {"name": "tc", "kind": "max31855", "sck": 18, "miso": 19, "cs": 5, "valid": [0, 1200]},
    {"name": "cj", "kind": "max31855", "sck": 18, "miso": 19, "cs": 5, "quantity": "internal"},
    {"name": "air", "kind": "sht3x", "sda": 21, "scl": 22, "quantity": "temperature"},
    {"name": "rh", "kind": "sht3x", "sda": 21, "scl": 22, "quantity": "humidity"},
    {"name": "heater", "pin": 25, "kind": "pwm", "range": [0, 100], "failsafe": 0}],
    "loops": [{"name": "kiln", "rate_hz": 2, "sensor": "tc", "actuator": "heater",
               "controller": {"type": "pid", "kp": 0.49, "ki": 0.0034, "setpoint": 500}}]}


NAMES = ("kiln", "tc", "cj", "air", "rh")


@pytest.fixture
def kiln(sim_nodes):
    with booted(sim_nodes, "kiln", BENCH, CONFIG) as con:
        yield con


def state(con, t_s):
    return dict(zip(NAMES, get_after(con, t_s, NAMES)))


def test_a_thermocouple_loop_and_an_sht3x_on_their_buses(kiln):
    s = state(kiln, 1400)
    print({k: (v.get("value", v.get("measurement")), v.get("status")) for k, v in s.items()})
    assert s["kiln"]["faults"] == [] and abs(s["kiln"]["measurement"] - 500) < 3
    assert s["tc"]["status"] == "ok" and s["tc"]["value"] * 4 == int(s["tc"]["value"] * 4)
    assert s["cj"]["value"] == 24.0
    assert abs(s["air"]["value"] - 23.5) < 0.01                 # the room by the kiln
    assert abs(s["rh"]["value"] - 41.5) < 0.01 and s["rh"]["status"] == "ok"


def test_bus_faults_are_sensor_faults(kiln):
    state(kiln, 1490)
    s = state(kiln, 15)                                   # t = 1505
    assert s["tc"]["status"] == "open circuit" and "sensor" in s["kiln"]["faults"]
    # the model corrupts the temperature word: its CRC fails, the humidity word's holds
    assert s["air"]["status"] == "crc error" and s["rh"]["status"] == "ok"
    s = state(kiln, 20)                                   # t = 1525
    assert s["tc"]["status"] == "ok" and s["kiln"]["faults"] == []
    assert s["air"]["status"] == "missing"
    s = state(kiln, 20)                                   # t = 1545
    assert s["air"]["status"] == "ok"
    s = state(kiln, 60)                                   # t = 1605
    assert s["tc"]["status"] == "short to GND" and "sensor" in s["kiln"]["faults"]
    s = state(kiln, 100)                                  # t = 1705
    assert s["tc"]["status"] == "missing" and "sensor" in s["kiln"]["faults"]
    s = state(kiln, 20)                                   # t = 1725
    assert s["tc"]["status"] == "ok" and s["kiln"]["faults"] == []


def table_rows(view) -> list[list[str]]:
    """cyphy monitor's live table as a terminal shows it: the header, then each row's cells."""
    import io

    from rich.console import Console

    out = Console(file=io.StringIO(), width=120, record=True)
    out.print(view._table())
    return [[c.strip() for c in ln.strip()[1:-1].split(ln.strip()[0])]
            for ln in out.export_text().splitlines() if ln.strip()[:1] in ("┃", "│")]


def test_telemetry_monitor_and_get_see_the_device_channels_by_name(sim_nodes, tmp_path):
    """Item 5: the signals after the loops in every telemetry sample (HELLO names them),
    in cyphy.connect's samples, cyphy monitor's live view (a row each under the loop's) and
    CSV, and cyphy get. (Real time: the protocol tools stream while the node runs.)"""
    import subprocess
    import sys
    from pathlib import Path

    import cyphy
    from cyphy.monitor import LiveTable

    with booted(sim_nodes, "kiln-rt", BENCH, CONFIG, virtual=False) as con:
        port = con.port
    url = f"serial://{port}"                           # the port to the protocol tools
    with cyphy.connect(url, unprovisioned=True) as n:
        assert n.hello.signals == ["tc", "cj", "air", "rh"]
        sample = next(iter(n.telemetry(period_ms=200, timeout=10)))
        sig = sample["signals"]
        assert set(sig) == {"tc", "cj", "air", "rh"} and sig["cj"] == 24.0
        assert abs(sig["rh"] - 41.5) < 0.01 and abs(sig["air"] - 23.5) < 0.01
        # the live table on a terminal: the loop's row, then one per signal (its value);
        # a sample without signals (a node without any) shows the loops only, as before
        view = LiveTable(n)
        view.update(sample)
        rows = table_rows(view)
        assert rows[0] == ["loop / signal", "setpoint", "measurement", "output", "mode",
                           "alarms", "faults", "jitter p99"]
        assert [rows[1][i] for i in (0, 1, 4)] == ["kiln", "500", "auto"]
        assert rows[2:] == [[k, "-", f"{sig[k]:g}", "-", "signal", "-", "-", "-"]
                            for k in ("tc", "cj", "air", "rh")]
        view.update({k: v for k, v in sample.items() if k != "signals"})
        assert [r[0] for r in table_rows(view)] == ["loop", "kiln"]
    cyphy_exe = str(Path(sys.executable).with_name("cyphy"))
    csv = tmp_path / "kiln.csv"
    r = subprocess.run([cyphy_exe, "monitor", url, "--unprovisioned", "--seconds", "2",
                        "--period-ms", "200", "--csv", str(csv)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()       # not a terminal: a line per loop, then per signal
    assert any(ln.startswith("kiln: sp 500") for ln in lines), r.stdout
    assert {ln.split(":")[0] for ln in lines if ": signal " in ln} == {"tc", "cj", "air", "rh"}
    assert "cj: signal 24" in lines, r.stdout
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    assert {row[2] for row in rows if row[6] == "signal"} == {"tc", "cj", "air", "rh"}
    r = subprocess.run([cyphy_exe, "get", url, "rh", "--unprovisioned", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "ok"
    # (cyphy plot draws such a recording: tests/host/test_plot_signals.py)
