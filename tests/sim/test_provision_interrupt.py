"""Issue 14, items 1 and 4 for `cyphy provision` on a sim node.

1. Ctrl-C at any moment ends it within 2 s with one line saying what the node holds
   (untouched; its previous files; the new config and which key), and the node's console
   answers the next command.
4. A key or config change says exactly when it takes effect: without --reset the node runs
   its previous key (or none) and config until it resets, and this host accepts both keys
   meanwhile; with --reset the node answers with the new key."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from helpers import OnTerminal, cyphy, firmware_files, tool, wait_for_log  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402
from test_provision import big_config  # noqa: E402

from cyphy import keys  # noqa: E402
from cyphy.device import Device  # noqa: E402
from cyphy.provision import check_config, config_bytes  # noqa: E402

NAME = CONFIG["name"]  # oven-1


@pytest.fixture
def node(sim_nodes, cyphy_home, monkeypatch, tmp_path):
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)
    n = sim_nodes("pi", baud=0, bench=THERMAL, files=firmware_files())
    n.restart(baud=115200)  # provision at a real line rate: its transfer takes a while
    cfg = tmp_path / "oven.json"
    cfg.write_text(json.dumps(CONFIG))
    cyphy("provision", "--port", "sim://pi", "--config", str(cfg), "--force", "--reset")
    n.url = "sim://pi"
    return n


def effect(p: subprocess.CompletedProcess) -> str:
    return [ln for ln in p.stdout.splitlines() if ln.startswith("takes effect: ")][0]


def test_a_key_change_says_when_it_takes_effect(node, tmp_path):
    url = node.url
    p = cyphy("provision", "--port", url, "--new-key")
    assert effect(p) == ("takes effect: the node runs its previous key until it resets; this host "
                         f"accepts both keys until then: `cyphy provision --port {url} --reset`, "
                         "or power it off and on"), p.stdout
    assert cyphy("get", url, "oven.setpoint").returncode == 0   # the old key, still accepted
    assert len(keys.load_key_hexes(NAME)) == 2
    p = cyphy("provision", "--port", url)                       # nothing to write: says it still
    assert "the node still runs its previous key until it resets" in effect(p), p.stdout
    p = cyphy("provision", "--port", url, "--reset")            # told: it switches
    assert effect(p) == ("takes effect: reset: the node runs the key in its /secrets.json "
                         "(it answered with it)"), p.stdout
    assert len(keys.load_key_hexes(NAME)) == 1
    assert cyphy("get", url, "oven.setpoint").returncode == 0
    p = cyphy("provision", "--port", url, "--new-key", "--reset")
    assert effect(p) == "takes effect: reset: the node runs the new key (it answered with the new key)"
    # a config written without --reset
    cfg = tmp_path / "oven2.json"
    cfg.write_text(json.dumps({**CONFIG, "comms_timeout_ms": 4000}))
    p = cyphy("provision", "--port", url, "--config", str(cfg), "--force")
    assert effect(p).startswith("takes effect: the node runs its previous config until it resets: "), p.stdout
    p = cyphy("provision", "--port", url, "--config", str(cfg), "--force", "--reset")
    assert effect(p) == "takes effect: reset: the node runs these settings", p.stdout


def test_a_first_key_without_reset_says_the_node_has_none_until_then(sim_nodes, cyphy_home):
    sim_nodes("pk", baud=0, bench=THERMAL, files=firmware_files(CONFIG))
    p = cyphy("provision", "--port", "sim://pk")
    assert effect(p).startswith("takes effect: the node runs without a key until it resets "
                                "(meanwhile cyphy get/set refuse it unless --unprovisioned)"), p.stdout
    p = cyphy("provision", "--port", "sim://pk", "--reset")
    assert cyphy("get", "sim://pk", "oven.setpoint").returncode == 0, p.stdout


# when each Ctrl-C comes, seen on the node's console (console.log): once the command has
# the port open; at the node's first acknowledgement of /config.json's bytes (the transfer
# under way); when the node reports /config.json.tmp written and verified (its size and
# SHA-256: the rename follows); when it reports the compiled config's (the secrets follow)
MOMENTS = ("open", "transfer", "sent", "compiled")
SENT = re.compile(rb"\x06\d+ [0-9a-f]{64}\r\n")


def wait_sent(log: Path, after: int, n: int) -> None:
    end = time.monotonic() + 30
    while len(SENT.findall(log.read_bytes()[after:])) < n:
        assert time.monotonic() < end, "the transfer never ended"
        time.sleep(0.001)


def wait_port_open(proc: subprocess.Popen, port: str, timeout: float = 30) -> None:
    """Until proc has the node's serial port open: the command is running (a Ctrl-C during
    Python's own start-up is before any of cyphy's code)."""
    dev = os.path.realpath(port)
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            if any(os.path.realpath(f"/proc/{proc.pid}/fd/{fd}") == dev
                   for fd in os.listdir(f"/proc/{proc.pid}/fd")):
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError("the command never opened the port")


def test_ctrl_c_at_any_moment_of_provision(node, tmp_path):
    url = node.url
    cfgs = []
    for i in range(len(MOMENTS) + 1):
        big = big_config(NAME)
        big["loops"][0]["controller"]["setpoint"] = 30.0 + i   # a new config each time
        f = tmp_path / f"big{i}.json"
        f.write_text(json.dumps(big))
        cfgs.append((f, config_bytes(check_config(big, None))))

    def cmd(i: int) -> list[str]:
        return [tool("cyphy"), "provision", "--port", url, "--config", str(cfgs[i][0]), "--force",
                "--new-key"]

    seen = []
    log = node.node.console_log
    for i, frac in enumerate(MOMENTS, start=1):
        with Device.open(url) as dev:
            before = dev.read("/config.json")
        at = log.stat().st_size
        proc = subprocess.Popen(cmd(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_port_open(proc, node.port)
        if frac == "transfer":
            wait_for_log(log, b"\x06", after=at, timeout=30)
        elif frac == "sent":
            wait_sent(log, at, 1)
        elif frac == "compiled":
            wait_sent(log, at, 2)
        t1 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        ended = time.monotonic() - t1
        if proc.returncode == 0:
            continue  # it had finished
        lines = err.strip().splitlines()
        assert proc.returncode == 130 and ended < 2.0, (frac, proc.returncode, ended, err)
        assert len(lines) == 1 and lines[0].startswith("Error: interrupted: "), (frac, err)
        msg = lines[0]
        seen.append(msg)
        # the next command: the console answers
        with Device.open(url, timeout=20) as dev:
            assert dev.exec("print(6 * 7)").strip() == "42", msg
            now = dev.read("/config.json")
        if frac == "open":
            assert "nothing was written to sim://pi: the node is untouched" in msg, msg
        if frac == "transfer":
            assert "sim://pi keeps its previous files" in msg, msg
        if frac == "compiled":
            assert "sim://pi has its new /config.json and its previous" in msg, msg
        if "untouched" in msg or "keeps its previous files" in msg:
            assert now == before, msg
        elif "has its new /config.json" in msg or "is provisioned" in msg:
            assert now == cfgs[i][1], msg
        else:
            assert "has its previous /config.json or the new one" in msg, msg
            assert now in (before, cfgs[i][1]), msg
        if "run `" in msg:
            assert f"run `cyphy provision --port {url} --config {cfgs[i][0]} --force --new-key` again" in msg
    assert seen, "every run finished before its Ctrl-C"
    # and provisioning completes afterwards, the node reachable with a key this host holds
    p = subprocess.run(cmd(0) + ["--reset"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert cyphy("get", url, "oven.setpoint").returncode == 0


def test_ctrl_c_at_the_password_prompt(cyphy_home):
    """Ctrl-C on a terminal while provision asks for the Wi-Fi password: nothing written."""
    t = OnTerminal("provision", "--port", "sim://nobody", "--name", "tty-1", "--wifi-ssid", "lab")
    t.until(b"Wi-Fi password", 30)
    t.write(b"\x03")                          # the terminal's Ctrl-C
    t.until(b"untouched", 30)
    seen = t.seen
    assert t.wait() == 130, seen
    assert b"Error: interrupted: nothing was written to sim://nobody: the node is untouched" in seen
    assert b"Traceback" not in seen and b"Aborted" not in seen
