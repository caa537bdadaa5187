"""`cyphy monitor` outlives a node's reset (issue 14): it used to die at the first reset
("no telemetry for 5.0 s"), ending a long recording. Now it says it waits, opens a new
session when the node is back and goes on appending to the same CSV, over UDP (a
machine.reset() typed on the node's console) and over the node's serial console (a power
cycle: `cyphy sim stop`, then start)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import cyphy, tool  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from serial_console import Console  # noqa: E402
from test_node_runtime import reset  # noqa: E402
from test_protocol_udp import WIFI, free_udp_port, udp_config, wait_online  # noqa: E402

from cyphy.sim.nodes import Node


def rows_of(path: Path) -> list[dict]:
    try:
        return list(csv.DictReader(path.open()))
    except OSError:
        return []


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"{what} after {timeout} s"
        time.sleep(0.1)


def monitor_through(url: str, tmp_path: Path, env: dict, knock_out) -> tuple[str, list[dict]]:
    """Run `cyphy monitor URL --csv` while knock_out() takes the node away and brings it
    back; Ctrl-C once it has recorded a while in the new session. (stderr, CSV rows)."""
    rec = tmp_path / "run.csv"
    out, err = tmp_path / "monitor.out", tmp_path / "monitor.err"
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen([tool("cyphy"), "monitor", url, "--seconds", "60",
                                 "--period-ms", "100", "--csv", str(rec)],
                                stdout=fo, stderr=fe, env=env, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(rows_of(rec)) >= 10, 20, "no samples recorded")
            knock_out()
            wait_for(lambda: "is back" in err.read_text(), 40, "monitor did not reconnect")
            n = len(rows_of(rec))
            wait_for(lambda: len(rows_of(rec)) >= n + 10, 20, "no samples after reconnecting")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0, err.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return err.read_text(), rows_of(rec)


def check_recording(stderr: str, rows: list[dict], tmp_path: Path) -> None:
    assert "Traceback" not in stderr, stderr
    assert "waiting for it to come back" in stderr and "new session (2)" in stderr, stderr
    host = [float(r["host_time"]) for r in rows]
    gaps = [i for i in range(1, len(host)) if host[i] - host[i - 1] > 2.0]
    assert len(gaps) == 1, host  # the node was away once: one file, both sessions
    i = gaps[0]
    assert int(rows[i]["t_ms"]) < int(rows[i - 1]["t_ms"]) + 1000 * (host[i] - host[i - 1]) - 500
    assert i >= 10 and len(rows) - i >= 10, (i, len(rows))
    assert {r["measurement_units"] for r in rows} == {"degC"}
    p = cyphy("plot", str(tmp_path / "run.csv"))
    assert "1 loop(s): oven" in p.stdout


def test_monitor_over_udp_goes_on_after_a_reset(sim_nodes, tmp_path, monkeypatch):
    port = free_udp_port()
    serial_port = boot(sim_nodes, "mon-udp", config=udp_config("mon-udp", port), secrets=WIFI)
    ip = Node.named("mon-udp").config()["ip"]
    wait_online([ip], port)

    def knock_out() -> None:
        con = Console(serial_port)
        try:
            con.raw()
            reset(con)  # machine.reset(): the node boots again, a new session is needed
        finally:
            con.close()

    env = {**os.environ, "CYPHY_KEY": KEY_HEX}
    stderr, rows = monitor_through(f"udp://{ip}:{port}", tmp_path, env, knock_out)
    check_recording(stderr, rows, tmp_path)


def test_monitor_over_serial_goes_on_after_a_power_cycle(sim_nodes, tmp_path):
    boot(sim_nodes, "mon-ser")
    env = {**os.environ, "CYPHY_KEY": KEY_HEX}

    def knock_out() -> None:
        cyphy("sim", "stop", "mon-ser")
        time.sleep(1.0)  # off for a while: the monitor notices and waits
        cyphy("sim", "start", "mon-ser", "--baud", "0")

    stderr, rows = monitor_through("sim://mon-ser", tmp_path, env, knock_out)
    check_recording(stderr, rows, tmp_path)


def test_seconds_bounds_the_wait(sim_nodes, tmp_path):
    """--seconds still ends the run while the node is away: exit 0, the CSV kept."""
    boot(sim_nodes, "mon-gone")
    env = {**os.environ, "CYPHY_KEY": KEY_HEX}
    rec = tmp_path / "run.csv"
    proc = subprocess.Popen([tool("cyphy"), "monitor", "sim://mon-gone", "--seconds", "8",
                             "--csv", str(rec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, stdin=subprocess.DEVNULL)
    wait_for(lambda: len(rows_of(rec)) >= 5, 20, "no samples recorded")
    cyphy("sim", "stop", "mon-gone")
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert time.monotonic() - t0 < 9
    assert "did not come back within --seconds 8" in err and len(rows_of(rec)) >= 5, err
