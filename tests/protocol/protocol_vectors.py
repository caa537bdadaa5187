"""What the protocol test modules share: the vectors, and MicroPython runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VECTORS = Path(__file__).with_name("vectors.json")
ALL = json.loads(VECTORS.read_text(encoding="utf-8"))


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# run_micropython (MICROPYPATH=firmware/lib, a small heap, a timeout) from the firmware tests
run_micropython = load_module("_cyphy_fw_conftest", REPO / "tests" / "firmware" / "conftest.py").run_micropython
