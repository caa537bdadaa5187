"""Firmware outside boards/ talks to hardware only through the board HAL (issue 3)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HARDWARE = re.compile(r"^\s*(import|from)\s+(machine|network|esp32|esp)\b", re.M)


def test_firmware_never_imports_machine_or_network():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "firmware").rglob("*.py")
                 if HARDWARE.search(p.read_text())]
    assert offenders == []


def test_the_check_can_fail():
    assert HARDWARE.search("import os\nfrom machine import Pin\n")
