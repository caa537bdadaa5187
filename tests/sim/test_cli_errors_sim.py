"""No traceback for a user's mistake, the cases that need a running node (issue 14): one
sim node running the real firmware with a key, every command that talks to it given a
wrong key, no key, a wrong file, a wrong loop or parameter, or a node in the wrong state.
Exit 1 or 2 (3 when the node itself refuses), exactly one line on stderr, no traceback.

tests/host/test_cli_errors.py has the cases that need no node."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
sys.path.insert(0, str(REPO / "tests" / "host"))
from protonode import KEY_HEX, boot  # noqa: E402
from test_cli_errors import problem, run  # noqa: E402

CONFIG = REPO / "firmware" / "config.example.json"


def test_no_traceback_for_a_users_mistake_with_a_node(sim_nodes, tmp_path):
    boot(sim_nodes, "errs")
    url = "sim://errs"
    env = {**os.environ, "CYPHY_KEY": KEY_HEX}
    env.pop("CYPHY_DEBUG", None)
    no_key = {k: v for k, v in env.items() if k != "CYPHY_KEY"}
    wrong_key = {**env, "CYPHY_KEY": "77" * 32}
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"plant": {"type": "fotd"}, "wiring": [
        {"pin": 34, "kind": "adc", "signal": "temperature"}]}))
    wrong_key_file = tmp_path / "wrong.key"
    wrong_key_file.write_text("77" * 32 + "\n")
    cases = [
        # (id, argv, env, exit codes, a word the line must contain)
        ("set-no-such-loop", ["set", url, "nope.setpoint=50"], env, (3,), "nope"),
        ("set-no-such-key", ["set", url, "oven.colour=5"], env, (3,), "colour"),
        ("set-out-of-range", ["set", url, "oven.setpoint=1000"], env, (3,), "out of range"),
        ("set-half", ["set", url, "oven.setpoint=50", "oven.kp=-5"], env, (3,), "nothing was applied"),
        ("set-wrong-key", ["set", url, "oven.setpoint=50"], wrong_key, (1,), "key"),
        ("set-no-key", ["set", url, "oven.setpoint=50"], no_key, (1,), "key"),
        ("get-no-such-path", ["get", url, "oven.colour"], env, (3,), "oven.colour"),
        ("get-no-such-loop", ["get", url, "nope"], env, (3,), "nope"),
        ("get-wrong-key-file", ["get", url, "oven", "--key-file", wrong_key_file], no_key, (1,), "key"),
        ("get-key-file-binary", ["get", url, "oven", "--key-file", binary], no_key, (2,), "binary"),
        ("monitor-wrong-key", ["monitor", url, "--seconds", "1"], wrong_key, (1,), "key"),
        ("monitor-csv-nodir", ["monitor", url, "--seconds", "1", "--csv", "/nonexistent/d/x.csv"],
         env, (1,), "/nonexistent/d/x.csv"),
        ("repl-baud", ["repl", url, "--baud", "abc"], env, (2,), "--baud"),
        ("sim-erase-running", ["sim", "erase", "errs"], env, (1,), "running"),
        ("sim-delete-running", ["sim", "delete", "errs"], env, (1,), "--force"),
        ("sim-start-other-chip", ["sim", "start", "errs", "--chip", "esp32c3"], env, (1,), "stop it first"),
        ("sim-start-download", ["sim", "start", "errs", "--download"], env, (1,), "stop it first"),
        ("flash-config-a-bench", ["flash", "--port", url, "--config", bench], env, (1, 2), "bench.json"),
        ("flash-config-binary", ["flash", "--port", url, "--config", binary], env, (1, 2), "binary.bin"),
        ("deploy-target", ["deploy", "--port", url, "--target", "esp8266"], env, (2,), "esp8266"),
        ("provision-config-a-bench", ["provision", "--port", url, "--config", bench], env, (1, 2), "bench.json"),
        ("provision-config-binary", ["provision", "--port", url, "--config", binary], env, (1, 2), "binary.bin"),
        ("provision-bad-name", ["provision", "--port", url, "--name", "bad name!"], env, (1, 2), "name"),
        ("provision-password-missing", ["provision", "--port", url, "--wifi-ssid", "lab",
                                        "--wifi-password-file", "/nonexistent/pw"], env, (1, 2), "/nonexistent/pw"),
    ]
    failed = []
    for cid, argv, e, codes, word in cases:  # one at a time: they share the node's console
        why = problem(run(argv, env=e), codes, word)
        if why is not None:
            failed.append(f"{cid}: cyphy {' '.join(map(str, argv))}\n    {why}")
    # the node is still there, untouched by every refusal
    p = run(["get", url, "oven", "--json"], env=env)
    assert p.returncode == 0, p.stderr
    state = json.loads(p.stdout)
    assert state["setpoint"] == 60.0 and state["kp"] != -5
    assert not failed, f"{len(failed)} of {len(cases)} cases:\n" + "\n".join(failed)
