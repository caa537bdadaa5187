"""`cyphy deploy` and cyphy.deploy against sim nodes: only what changed goes over the
wire, atomically; the node boots the deployed firmware; user errors are one line; and the
transfer beats `mpremote fs cp` at least 2x at an emulated 115200 baud."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from helpers import cyphy, run, tool, wait_for_log  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

from cyphy import firmware  # noqa: E402
from cyphy.deploy import deploy  # noqa: E402
from cyphy.device import Device  # noqa: E402

BOOTED = b"running 1 loop(s)"


def deploy_json(port: str, *args: str) -> dict:
    return json.loads(cyphy("deploy", "--port", port, "--json", *args).stdout)


def boot_with_config(n, config=CONFIG) -> bytes:
    """Write /config.json and hard-reset the node; what it printed while booting."""
    with Device.open(n.port) as dev:
        dev.write_atomic("/config.json", json.dumps(config).encode())
        return dev.reset().encode()


def no_traceback(p) -> None:
    assert "Traceback" not in p.stdout + p.stderr, p.stderr


def test_first_deploy_sends_everything_and_the_node_boots_it(sim_nodes):
    n = sim_nodes("dep", bench=THERMAL)
    url = f"sim://{n.name}"
    r = deploy_json(url)
    tree = firmware.files("sim")
    assert r["target"] == "sim"
    assert r["sent"] == len(tree) and r["skipped"] == 0 and r["deleted"] == 0
    assert {f["path"] for f in r["files"] if f["action"] == "send"} == {f.dst for f in tree}
    assert r["bytes"] == sum(len(b.data) for b in firmware.build("sim"))
    assert 0 < r["wire_bytes"] < r["bytes"]  # compressed
    # exactly the built bytes are on the node
    with Device.open(url) as dev:
        have = dev.hashes(paths=[f.dst for f in tree])
        assert {p: h for p, (_, h) in have.items()} == {b.dst: b.sha256 for b in firmware.build("sim")}
        assert not [p for p in dev.hashes(dirs=["/lib"]) if p.endswith(".tmp")]
    out = boot_with_config(n)
    assert b"cyphy: node oven-1 " + BOOTED in out, out
    assert b"Traceback" not in out, out


def test_second_deploy_sends_nothing_and_one_change_sends_one_file(sim_nodes):
    n = sim_nodes("dep2", bench=THERMAL)
    url = f"sim://{n.name}"
    cyphy("deploy", "--port", url)
    r = deploy_json(url)
    assert r["sent"] == 0 and r["deleted"] == 0 and r["bytes"] == 0
    assert all(f["action"] == "skip" for f in r["files"])
    # one module differs on the node, a module the tree no longer has, a source that
    # would shadow a .mpy, and a leftover from an interrupted transfer
    with Device.open(url) as dev:
        dev.write_atomic("/lib/cyphy_node/pid.mpy", b"not the right bytes")
        dev.mkdirs(["/lib/boards/old"])
        for p in ("/lib/cyphy_node/gone.mpy", "/lib/board.py", "/lib/boards/old/x.mpy", "/main.py.tmp"):
            dev.send(p, b"x")
    dry = deploy_json(url, "--dry-run")
    r = deploy_json(url)
    assert dry["files"] == r["files"] and dry["dry_run"]
    acts = {f["path"]: (f["action"], f["reason"]) for f in r["files"] if f["action"] != "skip"}
    assert acts == {"/lib/cyphy_node/pid.mpy": ("send", "changed"),
                    "/lib/cyphy_node/gone.mpy": ("delete", "stale"),
                    "/lib/board.py": ("delete", "shadows"),
                    "/lib/boards/old/x.mpy": ("delete", "stale"),
                    "/main.py.tmp": ("delete", "leftover")}
    assert r["removed_dirs"] == ["/lib/boards/old"]
    assert r["sent"] == 1 and r["bytes"] == len(firmware.compile_mpy(REPO / "firmware/lib/cyphy_node/pid.py"))
    r3 = deploy_json(url)
    assert r3["sent"] == 0 and r3["deleted"] == 0 and r3["removed_dirs"] == []
    out = boot_with_config(n)
    assert BOOTED in out, out


def test_deploy_to_a_running_node_keeps_its_loops_running_until_reset(sim_nodes):
    n = sim_nodes("live", bench=THERMAL)
    cyphy("deploy", "--port", n.port)  # a bare device path works too
    assert BOOTED in boot_with_config(n)
    with Device.open(n.port) as dev:
        t0 = int(dev.exec("print(node.loop('oven').ticks)"))
        dev.write_atomic("/lib/cyphy_node/io.mpy", b"stale")  # something to send
        r = deploy(dev)
        assert r["sent"] == 1
        t1 = int(dev.exec("print(node.loop('oven').ticks)"))
        assert t1 > t0  # no soft reset: the loop kept ticking through the deploy
    log = n.node.console_log
    start = log.stat().st_size
    p = cyphy("deploy", "--port", f"sim://{n.name}", "--force", "--reset")
    assert "node reset" in p.stdout and "cyphy: node oven-1 running 1 loop(s)" in p.stdout, p.stdout
    assert BOOTED in wait_for_log(log, BOOTED, after=start, timeout=60)


def test_soft_reset_option_restarts_the_loops_from_the_files(sim_nodes):
    # A soft reset (as mpremote does) rebuilds the node from its files in boot.py: the
    # operator's manual output is gone (outputs at fail-safe, then the config's mode) and
    # the loops run again at once.
    n = sim_nodes("soft", bench=THERMAL)
    cyphy("deploy", "--port", n.port)
    assert BOOTED in boot_with_config(n)
    with Device.open(n.port) as dev:
        dev.exec("node.set('oven.output', 40.0)")  # manual: the heater is on
        assert dev.exec("print(node.loop('oven').mode)").strip() == "manual"
    r = deploy_json(f"sim://{n.name}", "--soft-reset")
    assert r["sent"] == 0
    with Device.open(n.port) as dev:
        out = dev.exec("import time\nt = node.loop('oven').ticks\ntime.sleep_ms(300)\n"
                       "print(node.running(), node.loop('oven').mode, node.loop('oven').ticks > t)")
    assert out.split() == ["True", "auto", "True"]


def test_user_errors_are_one_line_without_traceback(sim_nodes, tmp_path):
    p = cyphy("deploy", "--port", "/dev/ttyDOESNOTEXIST", ok=False)
    assert p.returncode == 1 and "no such serial port" in p.stderr
    no_traceback(p)
    p = cyphy("deploy", "--port", "sim://nobody", ok=False)
    assert p.returncode == 1 and "no sim node 'nobody'" in p.stderr
    no_traceback(p)
    n = sim_nodes("busy")
    import serial

    with serial.Serial(n.port, exclusive=True):
        p = cyphy("deploy", "--port", f"sim://{n.name}", ok=False)
    assert p.returncode == 1 and "busy" in p.stderr, p.stderr
    no_traceback(p)
    n.stop()
    p = cyphy("deploy", "--port", f"sim://{n.name}", ok=False)
    assert p.returncode == 1 and "not running" in p.stderr
    p = cyphy("deploy", "--port", "sim://x", "--target", "avr", ok=False)
    assert p.returncode == 2  # usage
    # a serial port where no MicroPython answers
    master, slave = os.openpty()
    try:
        t0 = time.monotonic()
        p = cyphy("deploy", "--port", os.ttyname(slave), ok=False)
        assert p.returncode == 1 and "no MicroPython raw REPL answered" in p.stderr, p.stderr
        no_traceback(p)
        assert time.monotonic() - t0 < 60
    finally:
        os.close(master)
        os.close(slave)


def test_help_on_every_command():
    for cmd in (["deploy"], ["provision"]):
        p = cyphy(*cmd, "--help")
        assert "--port" in p.stdout and "--json" in p.stdout


def test_transfer_survives_binary_content_and_sizes(sim_nodes):
    """Every byte value (Ctrl-C, Ctrl-D, NUL...), empty files, chunk boundaries, files that
    do not compress; each read back and hashed on the node."""
    n = sim_nodes("bin", baud=0)
    import random

    rnd = random.Random(5)
    cases = [b"", bytes(range(256)) * 9, b"\x03" * 300, b"\x04\x03\x00\x01\x02\x05" * 700,
             rnd.randbytes(2048), rnd.randbytes(2049), rnd.randbytes(5000), b"a" * 10000]
    with Device.open(n.port) as dev:
        for i, data in enumerate(cases):
            dev.write_atomic(f"/f{i}", data)
        have = dev.hashes(paths=[f"/f{i}" for i in range(len(cases))])
        import hashlib

        assert [have[f"/f{i}"] for i in range(len(cases))] == [(len(d), hashlib.sha256(d).hexdigest()) for d in cases]
        for compress in (False, True):
            dev.send("/g", cases[4], compress=compress)
        assert dev.read("/f1") == cases[1]
        assert dev.exec("print(1 + 1)").strip() == "2"  # the REPL is fine afterwards (Ctrl-C is back)


def _stage(tmp: Path) -> Path:
    """The built firmware tree as local files, laid out as on the node (for mpremote)."""
    for b in firmware.build("sim"):
        p = tmp / b.dst.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b.data)
    return tmp


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_deploy_is_at_least_twice_as_fast_as_mpremote_at_115200(sim_nodes, tmp_path):
    """The same files, the same node, one run: `mpremote fs cp -f` onto the fresh node,
    then `cyphy deploy --force` (both without a soft reset), one timing each (make bench
    times more: bench/transfer.py; measured 2.4x, so one run's noise leaves a margin)."""
    n = sim_nodes("speed", baud=115200)
    url = f"sim://{n.name}"
    stage = _stage(tmp_path / "tree")
    size = sum(len(b.data) for b in firmware.build("sim"))
    mp = [tool("mpremote"), "connect", n.port, "resume", "fs", "cp", "-r", "-f", "lib", ":",
          "+", "fs", "cp", "-f", "main.py", "boot.py", ":"]
    t0 = time.monotonic()
    run(mp, timeout=180, cwd=stage)
    theirs = [time.monotonic() - t0]
    # mpremote wrote the same bytes (and cyphy's compile cache is warm)
    r = deploy_json(url, "--dry-run")
    assert r["sent"] == 0, r
    t0 = time.monotonic()
    reports = [deploy_json(url, "--force")]
    ours = [time.monotonic() - t0]
    assert reports[0]["sent"] == len(firmware.files("sim")), reports[0]
    kb_ours = size / min(ours) / 1000
    kb_theirs = size / min(theirs) / 1000
    rep = reports[ours.index(min(ours))]
    print(f"\n{size} B at 115200 baud (line 11.52 KB/s): cyphy deploy {min(ours):.2f} s = {kb_ours:.2f} KB/s "
          f"(transfer alone {rep['kb_per_s']} KB/s, {rep['wire_bytes']} B on the wire); "
          f"mpremote fs cp {min(theirs):.2f} s = {kb_theirs:.2f} KB/s; ratio {kb_ours / kb_theirs:.2f}")
    assert kb_ours / kb_theirs >= 2.0
