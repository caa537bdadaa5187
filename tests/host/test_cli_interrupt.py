"""Ctrl-C at any moment of a cyphy command, from the first milliseconds (Python still
importing the command line) to the middle of its work: one line, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CYPHY = str(Path(sys.executable).with_name("cyphy"))


# From 60 ms: the first ~10 ms (idle; several times that on a loaded machine) are CPython
# starting the console script, where a Ctrl-C gets CPython's own traceback before any line
# of ours runs; `make` installs the package as plain paths (no import hook at start) to
# keep that short. From cyphy.main on, the first statement, it is ours.
@pytest.mark.parametrize("delay", [0.06, 0.08, 0.15, 0.3, 0.6])
def test_ctrl_c_at_any_moment_is_one_line(delay, tmp_path):
    # `cyphy check` works for several seconds (a 32-bit MicroPython measures the firmware)
    p = subprocess.Popen([CYPHY, "check", str(REPO / "firmware" / "config.example.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={"CYPHY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    # before Python installs its handler the signal just ends the process (no output)
    assert p.returncode in (130, -signal.SIGINT), (p.returncode, err)
    assert len(lines) <= 1 and (not lines or lines[0].startswith("Error: interrupted")), err
