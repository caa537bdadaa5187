"""Firmware tests: node code runs on the real MicroPython runtime (the Unix port).

`mpy(script)` runs a MicroPython script with firmware/lib on the import path and returns
its stdout; a non-zero exit (an uncaught exception) fails the test with MicroPython's
traceback. Scripts print results (e.g. as JSON) for the CPython side to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_LIB = REPO / "firmware" / "lib"
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))


def run_micropython(script: str, heap: str = "192K", timeout: float = 120.0) -> str:
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE_LIB}:.frozen")
    r = subprocess.run([MICROPYTHON, "-X", f"heapsize={heap}", "-c", script],
                       capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        pytest.fail(f"MicroPython exited with {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
    return r.stdout


def run_cpython(script: str, timeout: float = 120.0) -> str:
    """The same script on CPython (firmware modules are plain Python that runs on both)."""
    env = dict(os.environ, PYTHONPATH=str(FIRMWARE_LIB))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def mpy():
    return run_micropython


@pytest.fixture
def cpy():
    return run_cpython


@pytest.fixture
def both():
    """both(script): run on MicroPython and CPython; the JSON they print must be identical."""

    def run(script: str):
        a, b = json.loads(run_micropython(script)), json.loads(run_cpython(script))
        assert a == b, (a, b)
        return a

    return run
