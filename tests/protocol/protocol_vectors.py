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
_run_fw = load_module("_cyphy_fw_conftest", REPO / "tests" / "firmware" / "conftest.py").run_micropython


def run_micropython(script: str, heap: str = "192K", timeout: float = 120.0) -> str:
    """The firmware tests' run_micropython with host/ on the import path too: the scripts
    use the host's codec (cyphy.codec, plain Python over cyphy_node.proto) on MicroPython."""
    return _run_fw("import sys\nsys.path.append(%r)\n" % str(REPO / "host") + script, heap, timeout)
