"""The HIL plugin seen from a user's test suite: markers skip with a reason, a failing
step-response assertion writes a PNG beside the JUnit report, a sim node is the default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INNER = '''
import pytest

@pytest.mark.cyphy(virtual_time=True)
def test_too_strict(node, control):
    r = node.step("oven", 60.0, seconds=600, period_ms=2000)
    control.assert_step(r, overshoot_max_pct=0.0, settling_time_max=10)

@pytest.mark.hardware_only
def test_needs_a_board(node):
    pass

@pytest.mark.sim_only
def test_sim(node):
    assert node.sim and node.exec("print(1)").strip() == "1"
'''


def run_inner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "test_inner.py", "-p", "no:cacheprovider",
                           "-rs", "-q", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_plugin_from_a_users_suite(tmp_path):
    p = run_inner(tmp_path, "--junitxml", str(tmp_path / "reports" / "junit.xml"))
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "1 failed, 1 passed, 1 skipped" in out, out
    assert "hardware only: give --cyphy-port PORT" in out
    assert "step response out of spec: settling time (2 %)" in out and "> 10 s" in out
    pngs = list((tmp_path / "reports").glob("*.png"))
    assert len(pngs) == 1 and "test_too_strict" in pngs[0].name, out
    assert pngs[0].read_bytes()[:4] == b"\x89PNG"


def test_a_missing_board_is_a_clear_error(tmp_path):
    p = run_inner(tmp_path, "-k", "test_sim or test_needs", "--cyphy-port", "/dev/ttyNOPE9")
    out = p.stdout + p.stderr
    assert "sim only" in out                     # test_sim skipped with its reason
    assert "no such serial port" in out or "ttyNOPE9" in out, out
