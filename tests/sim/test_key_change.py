"""Issue 13, finding 7 / requirement 5, "Keys never strand": `cyphy provision --new-key` is
two-phase (cyphy.keys: the host keeps the new key before the node can use it, and drops the
old one only once a session verifies the new one), so a power cut of the node, or a killed
host, at any moment leaves a node that a host can reach with a key it holds.

Here: a cut right after the node's /secrets.json is written (what stranded 3 of 50 nodes),
and a handful of cuts at random moments of the real CLI, alternately the node's power and
the host process. (A longer run belongs in the bench.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from helpers import firmware_files, tool, wait_for_log  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

import cyphy  # noqa: E402
from cyphy import keys  # noqa: E402
from cyphy import provision as prov  # noqa: E402
from cyphy.device import Device, DeviceError  # noqa: E402

NAME = CONFIG["name"]  # oven-1
CUTS = int(os.environ.get("CYPHY_KEY_CUTS", "6"))  # random cuts; the bench may ask for 100


@pytest.fixture
def node(sim_nodes, cyphy_home, monkeypatch):
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)
    n = sim_nodes("keys", bench=THERMAL, files=firmware_files())
    with Device.open(n.port) as dev:
        prov.provision(dev, None, CONFIG, force=True)
    power_cycle(n)
    assert reachable(n) == NAME
    return n


def power_cycle(n) -> None:
    """Off (the supervisor killed: the board loses power at once, if it is still on) and on;
    back when the node's loops run."""
    st = n.node.state()
    if st is not None:
        os.kill(st["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while n.node.state() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    log = n.node.console_log
    start = log.stat().st_size if log.exists() else 0
    n.restart(baud=0)
    wait_for_log(log, b"running 1 loop(s)", after=start, timeout=60)


def reachable(n) -> str:
    """The node's name, over the protocol, with the keys the host's store holds (none given)."""
    with cyphy.connect(f"sim://{n.name}", timeout=4.0) as c:
        assert c.hello.authenticated
        return c.name


def node_key_is_held(n) -> bool:
    with Device.open(n.port) as dev:
        out = dev.exec("import json\nprint(json.load(open('/secrets.json'))['key'])").split()[-1]
    return out in keys.load_key_hexes(NAME)


def test_a_cut_right_after_the_node_gets_its_new_key(node, monkeypatch):
    """The node has the new key, the host process is gone before it did anything else."""
    real_sec = prov._sec
    cut = []

    def sec_then_cut(dev, key, wifi, cand, write):
        r = real_sec(dev, key, wifi, cand, write)
        if write and key is not None:
            os.kill(node.node.state()["pid"], signal.SIGKILL)  # power lost just after
            cut.append(True)
        return r

    monkeypatch.setattr(prov, "_sec", sec_then_cut)
    with pytest.raises(DeviceError):
        with Device.open(node.port) as dev:
            prov.provision(dev, None, new_key=True)
    assert cut
    power_cycle(node)
    assert node_key_is_held(node)
    assert reachable(node) == NAME
    # the session confirmed the new key: the host dropped the old one
    assert len(keys.load_key_hexes(NAME)) == 1


def test_a_cut_right_before_the_node_gets_its_new_key(node, monkeypatch):
    real_sec = prov._sec

    def cut_then_sec(dev, key, wifi, cand, write):
        if write and key is not None:
            os.kill(node.node.state()["pid"], signal.SIGKILL)
        return real_sec(dev, key, wifi, cand, write)

    monkeypatch.setattr(prov, "_sec", cut_then_sec)
    old = keys.load_key_hexes(NAME)
    with pytest.raises(DeviceError):
        with Device.open(node.port) as dev:
            prov.provision(dev, None, new_key=True)
    assert len(keys.load_key_hexes(NAME)) == 2  # the new key was kept first
    power_cycle(node)
    assert reachable(node) == NAME
    # the node runs the old key, still the primary; the new one, staged later than it, stays
    # pending (harmless: a later provision may yet write it)
    held = keys.load_key_hexes(NAME)
    assert held[0] == old[0] and len(held) == 2


def test_a_cut_after_every_exchange_with_the_node(node, monkeypatch):
    """provision --new-key talks to the node's REPL in a few exchanges (read the config,
    query and write /secrets.json, verify...): the node loses power right after each one
    in turn, and comes back reachable every time."""
    from cyphy.device import Device as D

    real = D._exec
    calls = {"n": 0, "cut_at": None}

    def counting(self, *a, **kw):
        r = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == calls["cut_at"]:
            os.kill(node.node.state()["pid"], signal.SIGKILL)
        return r

    monkeypatch.setattr(D, "_exec", counting)
    with Device.open(node.port) as dev:
        calls["n"] = 0
        prov.provision(dev, None, new_key=True)
        total = calls["n"]
    assert 3 <= total <= 20, total
    power_cycle(node)
    assert reachable(node) == NAME
    stranded = []
    for k in range(1, total + 1):
        try:
            with Device.open(node.port) as dev:
                calls.update(n=0, cut_at=k)
                prov.provision(dev, None, new_key=True)
        except DeviceError:
            pass
        calls["cut_at"] = None
        power_cycle(node)
        if not node_key_is_held(node):
            stranded.append(k)
        else:
            assert reachable(node) == NAME
    assert not stranded, f"cut after exchange {stranded} of {total}: the node's key is not held"


def provision_cmd(n) -> list[str]:
    return [tool("cyphy"), "provision", "--port", f"sim://{n.name}", "--new-key", "--json"]


def test_random_cuts_during_provision_new_key(node):
    rng = random.Random(1307)
    t0 = time.monotonic()
    p = subprocess.run(provision_cmd(node), capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["key"]["changed"]
    unreachable = []
    for i in range(CUTS):
        at = rng.uniform(0, took)
        proc = subprocess.Popen(provision_cmd(node), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(at)
        if i % 2 == 0:
            st = node.node.state()
            if st is not None:
                os.kill(st["pid"], signal.SIGKILL)   # the node loses power
        else:
            proc.kill()                               # the host process dies
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        # (what the killed provision printed is not judged here: a serial port that vanishes
        # under pyserial is cyphy.device's business)
        power_cycle(node)
        try:
            assert node_key_is_held(node)
            assert reachable(node) == NAME
        except Exception as e:  # noqa: BLE001 - counted, then reported all at once
            unreachable.append((i, round(at, 2), "node" if i % 2 == 0 else "host", repr(e)[:200]))
    report = os.environ.get("CYPHY_KEY_CUTS_REPORT")   # make bench's attack section reads it
    if report:
        Path(report).write_text(json.dumps({"cuts": CUTS, "unreachable": len(unreachable),
                                            "details": unreachable}))
    assert not unreachable, unreachable


def test_new_key_with_reset_is_confirmed_at_once(node):
    p = subprocess.run(provision_cmd(node) + ["--reset"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["key"]["changed"] and r["reset"]
    assert r["host_keys_held"] == 1            # a session verified the new key: the old one is gone
    assert reachable(node) == NAME
    p = subprocess.run(provision_cmd(node), capture_output=True, text=True, timeout=120)
    assert json.loads(p.stdout)["host_keys_held"] == 2   # not reset: the node runs the old key
    assert reachable(node) == NAME
    assert len(keys.load_key_hexes(NAME)) == 2
    for secret in keys.load_key_hexes(NAME):
        assert secret not in p.stdout + p.stderr


def test_provision_again_settles_an_unconfirmed_change(node, monkeypatch):
    """After a cut that left the node with the new (pending) key, a plain `cyphy provision`
    recognises it among the host's keys and makes it the primary: no warning."""
    real_sec = prov._sec

    def sec_then_cut(dev, key, wifi, cand, write):
        r = real_sec(dev, key, wifi, cand, write)
        if write and key is not None:
            os.kill(node.node.state()["pid"], signal.SIGKILL)
        return r

    monkeypatch.setattr(prov, "_sec", sec_then_cut)
    old = keys.load_key_hex(NAME)
    with pytest.raises(DeviceError):
        with Device.open(node.port) as dev:
            prov.provision(dev, None, new_key=True)
    monkeypatch.setattr(prov, "_sec", real_sec)
    power_cycle(node)
    assert keys.load_key_hex(NAME) == old
    with Device.open(node.port) as dev:
        r = prov.provision(dev, None)
    assert r["warnings"] == [] and r["key"]["source"] == "host" and not r["key"]["changed"]
    assert keys.load_key_hex(NAME) != old and node_key_is_held(node)
    assert reachable(node) == NAME
    assert keys.load_key_hexes(NAME) == [keys.load_key_hex(NAME)]
