"""pytest-embedded's serial service drives a sim node the way it drives a real board."""

from __future__ import annotations

import os
import sys

import pytest

from helpers import run

INNER_BODY = '''
def test_repl(dut):
    # dut.write() appends "\\n", which the REPL ignores after "\\r" (as on ESP32)
    dut.write("\\r\\x03\\x02")
    dut.expect_exact("MicroPython v", timeout=T)
    dut.expect_exact('Type "help()" for more information.\\r\\n>>> ', timeout=T)
    dut.write("print(6*7)\\r")
    dut.expect_exact("\\r\\n" + ANSWER + "\\r\\n", timeout=T)
    dut.expect_exact(">>> ", timeout=T)
'''


def run_inner(tmp_path, port: str, answer: str = "42", timeout: int = 10):
    inner = tmp_path / "test_inner.py"
    inner.write_text(f"ANSWER, T = {answer!r}, {timeout}\n" + INNER_BODY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ESPPORT"))}
    return run(
        [sys.executable, "-m", "pytest", inner, "--embedded-services", "serial", "--port", port,
         "--baud", "115200", "--root-logdir", tmp_path / "logs", "-p", "no:cacheprovider", "-q"],
        ok=False, cwd=tmp_path, env=env,
    )


@pytest.mark.parametrize("baud", [0, 115200])
def test_dut_over_serial_service(sim_nodes, tmp_path, baud):
    node = sim_nodes("dut", baud=baud)
    p = run_inner(tmp_path, node.port)
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr


def test_wrong_expectation_fails(sim_node, tmp_path):
    """The harness can fail: output the node never prints makes the inner test fail."""
    p = run_inner(tmp_path, sim_node.port, answer="43", timeout=1)
    assert p.returncode == 1 and "1 failed" in p.stdout and "TIMEOUT" in p.stdout, p.stdout + p.stderr
