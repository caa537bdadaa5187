"""Issue 13, finding 6 (host part): the host's heartbeat follows the comms timeout a node
gives in its HELLO (min(1 s, timeout / 4), never faster than every 50 ms), and `cyphy
check` / `cyphy provision` warn, in one line, about a comms timeout shorter than that
heartbeat can keep alive (200 ms)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cyphy
from cyphy import codec as P
from cyphy.client import (HEARTBEAT_MIN_S, HEARTBEAT_S, MIN_COMMS_TIMEOUT_MS, comms_timeout_warning,
                          heartbeat_period)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_host_auth import FakeNode  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "firmware" / "config.example.json"


def test_the_rule():
    assert heartbeat_period(None) == HEARTBEAT_S == 1.0   # an old node: as before
    assert heartbeat_period(0) == 1.0                     # no comms watchdog
    assert heartbeat_period(5000) == 1.0
    assert heartbeat_period(2000) == 0.5
    assert heartbeat_period(300) == pytest.approx(0.075)
    assert heartbeat_period(200) == pytest.approx(HEARTBEAT_MIN_S)
    assert heartbeat_period(50) == HEARTBEAT_MIN_S        # never faster than 20/s
    assert MIN_COMMS_TIMEOUT_MS == 200
    assert comms_timeout_warning(0) is None and comms_timeout_warning(200) is None
    assert comms_timeout_warning(5000) is None and comms_timeout_warning(None) is None
    w = comms_timeout_warning(150)
    assert w and "150" in w and "200" in w and "\n" not in w


def heartbeat_gaps(timeout_ms: int | None, seconds: float) -> list[float]:
    with FakeNode("hb-node", comms_timeout_ms=timeout_ms) as fake:
        with cyphy.connect(fake.url) as n:
            assert n.hello.comms_timeout_ms == timeout_ms
            t0 = time.monotonic()
            time.sleep(seconds)
        beats = [t for t, f in fake.received if f.type == P.HEARTBEAT and t >= t0 - 0.01]
    return [b - a for a, b in zip(beats, beats[1:])]


@pytest.mark.parametrize("timeout_ms, period", [(300, 0.075), (120, 0.05), (2000, 0.5)])
def test_the_heartbeat_follows_the_nodes_comms_timeout(cyphy_home, timeout_ms, period):
    gaps = heartbeat_gaps(timeout_ms, 1.6)
    assert len(gaps) >= int(1.6 / period) - 3, gaps
    assert sum(gaps) / len(gaps) == pytest.approx(period, rel=0.2), gaps
    # what matters: a heartbeat well inside every timeout, two lost ones included
    assert max(gaps) < timeout_ms / 1000 / 2, gaps


@pytest.mark.parametrize("timeout_ms", [0, None], ids=["no-watchdog", "old-node"])
def test_without_a_timeout_once_a_second(cyphy_home, timeout_ms):
    gaps = heartbeat_gaps(timeout_ms, 2.6)
    assert 1 <= len(gaps) <= 2 and all(0.9 < g < 1.2 for g in gaps), gaps


def cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cyphy")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=180)


def test_check_warns_about_a_short_comms_timeout(tmp_path):
    cfg = json.loads(EXAMPLE.read_text())
    cfg["comms_timeout_ms"] = 150
    f = tmp_path / "fast.json"
    f.write_text(json.dumps(cfg))
    p = cli("check", str(f), "--psram")
    assert p.returncode == 0, p.stderr                      # a warning, not an error
    assert "Traceback" not in p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert line.startswith("warning: comms_timeout_ms 150 is shorter than 200 ms"), line
    p = cli("check", str(f), "--psram", "--json")
    assert p.returncode == 0 and len(json.loads(p.stdout)["warnings"]) == 1
    cfg["comms_timeout_ms"] = 200
    f.write_text(json.dumps(cfg))
    p = cli("check", str(f), "--psram", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["warnings"] == [] and "warning" not in p.stderr


def test_provision_warns_about_a_short_comms_timeout(sim_nodes, tmp_path, cyphy_home):
    n = sim_nodes("hbprov")
    cfg = json.loads(EXAMPLE.read_text())
    cfg["comms_timeout_ms"] = 120
    f = tmp_path / "fast.json"
    f.write_text(json.dumps(cfg))
    p = cli("provision", "--port", f"sim://{n.name}", "--config", str(f), "--force", "--dry-run", "--json")
    assert p.returncode == 0, p.stderr
    assert any("comms_timeout_ms 120 is shorter than 200 ms" in w for w in json.loads(p.stdout)["warnings"])
    warned = [ln for ln in p.stderr.splitlines() if "comms_timeout_ms" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: "), p.stderr
    cfg["comms_timeout_ms"] = 1000
    f.write_text(json.dumps(cfg))
    p = cli("provision", "--port", f"sim://{n.name}", "--config", str(f), "--force", "--dry-run", "--json")
    assert p.returncode == 0 and "comms_timeout_ms" not in p.stderr, p.stderr
