"""WROOM sim nodes (`cyphy sim start --wroom`): an ESP32-WROOM without PSRAM, as issue 12
has it. The node runs on the 32-bit MicroPython with the sim's ROM and the firmware frozen
in (cyphy.frozen), and the firmware finds the chip's free heap, split into its areas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
sys.path.insert(0, str(REPO / "bench"))
import ram  # noqa: E402  (bench/ram.py: the configs of issue 12's budget)
from serial_console import Console  # noqa: E402
from test_protocol_udp import free_udp_port  # noqa: E402

from cyphy import check, frozen  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402
from cyphy.sim.supervisor import CHIP_BARE  # noqa: E402

WROOM_FREE = check.heap_for("esp32", False).bytes - CHIP_BARE
AREA = check.heap_for("esp32", False).area


@pytest.fixture(autouse=True)
def _built():
    why = frozen.unavailable()
    if why:
        pytest.fail(f"the frozen 32-bit MicroPython cannot be built here: {why}")


def wroom(sim_nodes, name: str):
    node = Node.named(name)
    node.create()
    node.set_ram("wroom")
    return sim_nodes(name, ram="wroom")


def cyphy(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cyphy")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_wroom_node_is_32_bit_with_the_chips_free_heap_in_two_areas(sim_nodes):
    n = wroom(sim_nodes, "w1")
    assert Node.named("w1").ram() == "wroom"
    con = Console(n.port)
    con.raw()
    out = con.run("import gc, sys\ngc.collect()\nprint(gc.mem_free(), sys.maxsize, type(1 << 30).__name__)\n"
                  "import cyphy_node.pid\nprint(cyphy_node.pid.__file__)\n"
                  f"b = bytearray({AREA - 4096})\nb = None\ngc.collect()\n"
                  f"try:\n    bytearray({AREA + 1024})\n    print('one block')\nexcept MemoryError:\n"
                  "    print('no block larger than an area')\n")
    con.close()
    free, maxsize, big = out.split()[:3]
    # the chip's free heap, less what this REPL session made
    assert WROOM_FREE - 6 * 1024 < int(free) <= WROOM_FREE, out
    assert maxsize == str(2 ** 31 - 1) and big == "int"
    assert "cyphy_node/pid.py" in out                   # frozen (a file would be /lib/...)
    assert out.strip().endswith("no block larger than an area")


def test_issue_12s_node_runs_on_a_wroom_node_through_the_readme_commands(sim_nodes, tmp_path):
    # Two PID loops, the serial protocol and UDP, flashed and provisioned as a user does;
    # then sets, gets and telemetry over UDP, and the node's own account of its heap.
    import cyphy as api

    wroom(sim_nodes, "w2")
    port = free_udp_port()
    cfg = ram.loops_config(2)
    cfg["comms"] = {"udp": True, "udp_port": port}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(cfg))
    p = cyphy("flash", "--port", "sim://w2", "--config", str(path), "--name", "w2")
    assert p.returncode == 0, p.stderr
    pw = tmp_path / "wifi"
    pw.write_text("not-printed-anywhere")
    p = cyphy("provision", "--port", "sim://w2", "--reset", "--wifi-ssid", "lab",
              "--wifi-password-file", str(pw))
    assert p.returncode == 0, p.stderr
    assert "running 2 loop(s)" in p.stdout + p.stderr, p.stdout + p.stderr
    ip = Node.named("w2").config()["ip"]
    with api.connect("sim://w2") as s:
        # Wi-Fi joins in the background after boot (about a second on ESP32; longer here
        # when the machine is busy)
        out = s.exec("import gc, time\nt0 = time.ticks_ms()\n"
                     "while node.comms.net.udp is None and time.ticks_diff(time.ticks_ms(), t0) < 30000:\n"
                     "    time.sleep_ms(100)\ngc.collect()\n"
                     "print(gc.mem_free(), node.dropped, node.running())\nprint(node.comms.net.info())",
                     timeout=40)
    free, dropped, running = out.splitlines()[0].split()
    assert dropped == "[]" and running == "True", out
    assert "'connected'" in out, out
    assert int(free) >= 32 * 1024, out
    with api.connect(f"udp://{ip}:{port}") as u:
        u.set("loop0.setpoint", 42.0)
        assert u.get("loop0.setpoint") == 42.0
        assert set(next(u.telemetry(period_ms=100))["loops"]) == {"loop0", "loop1"}


@pytest.mark.slow
def test_deploy_mpremote_the_repl_and_autotune_work_on_a_wroom_node(sim_nodes):
    # The rest of issue 12's "in that state": on a WROOM node with a plant, `cyphy deploy`
    # and mpremote work, the REPL answers, and a relay autotune runs and applies its result
    # over the serial protocol, with no MemoryError and the node whole.
    import cyphy as api
    from helpers import cyphy as cli, mpremote
    from protonode import KEY_HEX, boot
    from test_tune import BENCH, FAST, settle

    port = boot(sim_nodes, "wt", config=FAST, bench=BENCH, ram="wroom")
    url = f"serial://{port}"
    with api.connect(url, key=KEY_HEX) as n:
        settle(n)
        r = n.tune("oven", amplitude=20.0, poll_s=0.25)
        assert r["stable"] and r["applied"], r
        out = n.exec("import gc\ngc.collect()\nprint(gc.mem_free(), node.dropped, node.comms_errors)")
    free, dropped, errors = out.split()
    assert int(free) >= 32 * 1024 and dropped == "[]" and errors == "0", out
    assert "42" in mpremote(port, "exec", "print(6 * 7)")
    cli("deploy", "--port", url)             # writes /lib (the frozen copy runs: docs/boards.md)
    with api.connect(url, key=KEY_HEX) as n:
        assert n.get("oven")["mode"] == "auto"


def test_the_default_sim_node_refuses_what_cyphy_check_says_does_not_fit(cyphy_home, tmp_path):
    # Issue 12 item 4: a node started with no options is an ESP32-WROOM; a config that
    # `cyphy check` says does not fit fails to start there, with the same message in the
    # boot output and /config_error.txt, and one that fits runs. cyphy flash writes a config
    # without checking it (the node has the last word); cyphy provision checks first.
    from test_node_runtime import reset

    fit, big = ram.loops_config(2), ram.loops_config(8)
    # eight loops fit (largest free block 35 KB); eight more blocks in a task of their own do not
    big["blocks"] = [{"name": f"x{i}", "type": "ratio", "input": "t0", "ratio": 2} for i in range(8)]
    big["tasks"] = [{"name": "calc", "rate_hz": 10, "order": [b["name"] for b in big["blocks"]]}]
    paths = {}
    for name, cfg in (("fit", fit), ("big", big)):
        cfg["name"] = "wd"
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(cfg))
    ok, no = cyphy("check", str(paths["fit"]), "--json"), cyphy("check", str(paths["big"]), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["fits"] is True, ok.stdout + ok.stderr
    assert no.returncode == 1 and json.loads(no.stdout)["fits"] is False, no.stdout + no.stderr
    assert json.loads(no.stdout)["frozen"] is True          # as a WROOM runs the firmware

    try:
        assert cyphy("sim", "start", "wd", "--baud", "0").returncode == 0
        assert Node.named("wd").ram() == "wroom"
        p = cyphy("flash", "--port", "sim://wd", "--config", str(paths["big"]), "--name", "wd")
        assert p.returncode == 0, p.stderr
        con = Console(str(Node.named("wd").tty))
        con.raw()
        boot = reset(con)
        said = [ln.strip() for ln in boot.splitlines() if ln.startswith("cyphy: config does not fit")]
        assert len(said) == 1 and "no free block of 32768 bytes" in said[0], boot
        assert "running" not in boot and "Traceback" not in boot, boot
        kept = con.run("print(repr(open('/config_error.txt').read()))\nprint(node)").strip().splitlines()
        assert kept == [repr(said[0] + "\n"), "None"], kept
        con.close()

        p = cyphy("provision", "--port", "sim://wd", "--config", str(paths["big"]))
        assert p.returncode == 1 and "does not fit ESP32 without PSRAM" in p.stderr, p.stderr
        p = cyphy("provision", "--port", "sim://wd", "--config", str(paths["fit"]), "--reset")
        assert p.returncode == 0, p.stderr
        assert "running 2 loop(s)" in p.stdout + p.stderr, p.stdout + p.stderr
        # provisioned with --force, the node runs what fits (and says it does not fit)
        p = cyphy("provision", "--port", "sim://wd", "--config", str(paths["big"]), "--reset", "--force")
        assert p.returncode == 0, p.stderr
        out = p.stdout + p.stderr
        assert "running 8 loop(s)" in out and "provisioned with --force: running what fits" in out, out
        # and stays forced while the config stays the same (here a reset through provision)
        p = cyphy("provision", "--port", "sim://wd", "--reset")
        assert p.returncode == 0 and "running 8 loop(s)" in p.stdout + p.stderr, p.stdout + p.stderr
    finally:
        cyphy("sim", "stop", "wd")
