"""`cyphy provision` and cyphy.provision against sim nodes: name, config, key and Wi-Fi
credentials, written atomically and verified; idempotent; secrets never shown; a config
error names the field and writes nothing; a power loss mid-way keeps the old state."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from helpers import OnTerminal, cyphy, firmware_files, wait_for_log  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

from cyphy import keys  # noqa: E402
from cyphy.device import Device, DeviceError  # noqa: E402
from cyphy.provision import provision  # noqa: E402

PASSWORD = "correct-horse-battery-staple-7731"
KEY_HEX = "a7" * 16 + "3c" * 16


def node_with_firmware(sim_nodes, name, **kw):
    return sim_nodes(name, bench=THERMAL, files=firmware_files(), **kw)


def logs(n) -> str:
    return "".join(p.read_bytes().decode(errors="replace") for p in n.node.root.glob("*.log*"))


def reset_and_boot(n) -> bytes:
    with Device.open(n.port) as dev:
        return dev.reset().encode()


@pytest.fixture
def config_file(tmp_path):
    p = tmp_path / "oven.json"
    p.write_text(json.dumps(CONFIG, indent=1))
    return p


def test_provision_writes_verified_files_and_twice_changes_nothing(sim_nodes, config_file, tmp_path,
                                                                   cyphy_home):
    n = node_with_firmware(sim_nodes, "prov")
    url = f"sim://{n.name}"
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    args = ["provision", "--port", url, "--name", "oven-7", "--config", str(config_file),
            "--wifi-ssid", "lab-net", "--wifi-password-file", str(pw)]
    p1 = cyphy(*args, "--json")
    r1 = json.loads(p1.stdout)
    assert r1["name"] == "oven-7"
    assert r1["config"]["action"] == "written" and r1["secrets"]["action"] == "written"
    assert r1["key"] == {"source": "generated", "changed": True, "host_file_changed": True,
                         "host_file": str(cyphy_home / "keys" / "oven-7.key")}
    assert r1["wifi"] == {"ssid": "lab-net", "changed": True, "password_set": True}
    # the host keeps the key, private
    kf = cyphy_home / "keys" / "oven-7.key"
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    key_hex = kf.read_text().strip()
    assert len(key_hex) == 64 and keys.load_key("oven-7") is not None
    # the node has exactly that
    with Device.open(url) as dev:
        cfg = json.loads(dev.read("/config.json"))
        assert cfg == dict(CONFIG, name="oven-7")
        assert dev.exec("import json\nprint(json.load(open('/secrets.json')) == "
                        f"{{'key': {key_hex!r}, 'wifi': {{'ssid': 'lab-net', 'password': {PASSWORD!r}}}}})").strip() == "True"
        assert not [p for p in dev.hashes(dirs=["/"]) if p.endswith(".tmp")]
    # twice: nothing changes, nothing is written
    p2 = cyphy(*args, "--json")
    r2 = json.loads(p2.stdout)
    assert r2["config"]["action"] == "unchanged" and r2["secrets"]["action"] == "unchanged"
    assert r2["key"]["changed"] is False and r2["key"]["host_file_changed"] is False
    assert r2["wifi"]["changed"] is False and r2["warnings"] == []
    assert kf.read_text().strip() == key_hex
    p3 = cyphy("provision", "--port", url)  # nothing given: keep everything
    assert "already provisioned, nothing written" in p3.stdout
    # the node boots with it, and the host's tools find its key by name
    out = reset_and_boot(n)
    assert b"cyphy: node oven-7 running 1 loop(s)" in out, out
    assert b"no key" not in out
    import cyphy as api

    with api.connect(url) as node:
        assert node.name == "oven-7"
        assert node.get("oven.setpoint") == 60.0
    # secrets: in no output, no --json, no node log
    shown = p1.stdout + p1.stderr + p2.stdout + p2.stderr + p3.stdout + p3.stderr + logs(n)
    for secret in (PASSWORD, key_hex, key_hex.upper()):
        assert secret not in shown


def test_key_and_password_from_the_environment_and_rotation(sim_nodes, cyphy_home, monkeypatch):
    n = node_with_firmware(sim_nodes, "envkey")
    url = f"sim://{n.name}"
    monkeypatch.setenv("CYPHY_KEY", KEY_HEX)
    monkeypatch.setenv("CYPHY_WIFI_PASSWORD", PASSWORD)
    p = cyphy("provision", "--port", url, "--name", "fan-1", "--wifi-ssid", "lab", "--json")
    r = json.loads(p.stdout)
    assert r["key"]["source"] == "env" and r["key"]["changed"]
    assert r["config"]["action"] == "written"  # the node had none: a config without loops
    assert keys.load_key_hex("fan-1") == KEY_HEX
    shown = p.stdout + p.stderr
    monkeypatch.delenv("CYPHY_KEY")
    monkeypatch.delenv("CYPHY_WIFI_PASSWORD")
    # keep everything, then a new key for node and host
    r = json.loads(cyphy("provision", "--port", url, "--json").stdout)
    assert r["key"]["source"] == "node" and not r["key"]["changed"] and r["warnings"] == []
    p = cyphy("provision", "--port", url, "--new-key", "--json")
    shown += p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["key"]["source"] == "generated" and r["key"]["changed"] and r["key"]["host_file_changed"]
    assert r["config"]["action"] == "unchanged" and r["wifi"] == {"ssid": "lab", "changed": False, "password_set": True}
    new = keys.load_key_hex("fan-1")
    assert new != KEY_HEX
    # renamed: the host's copy of the key follows the new name
    r = json.loads(cyphy("provision", "--port", url, "--name", "fan-2", "--json").stdout)
    assert r["config"]["action"] == "written" and r["secrets"]["action"] == "unchanged"
    assert r["key"]["source"] == "host" and r["key"]["host_file_changed"] and not r["key"]["changed"]
    assert keys.load_key_hex("fan-2") == new
    # a host without the node's key is told so (the key itself never travels back)
    keys.key_path("fan-2").unlink()
    p = cyphy("provision", "--port", url, "--json")
    shown += p.stdout + p.stderr
    assert "has no copy" in p.stderr and json.loads(p.stdout)["secrets"]["action"] == "unchanged"
    for secret in (KEY_HEX, new, PASSWORD):
        assert secret not in shown + logs(n)


def test_a_config_error_names_the_field_and_writes_nothing(sim_nodes, config_file, tmp_path):
    n = node_with_firmware(sim_nodes, "bad")
    url = f"sim://{n.name}"
    cyphy("provision", "--port", url, "--config", str(config_file))
    with Device.open(url) as dev:
        before = dev.hashes(dirs=["/"])
    bad = json.loads(json.dumps(CONFIG))
    bad["loops"][0]["controller"]["kp"] = "abc"
    bf = tmp_path / "bad.json"
    bf.write_text(json.dumps(bad))
    p = cyphy("provision", "--port", url, "--config", str(bf), ok=False)
    assert p.returncode == 1
    assert 'loops[0].controller.kp: must be a number, got "abc"' in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    p = cyphy("provision", "--port", url, "--name", "9lives", ok=False)
    assert p.returncode == 1 and "name:" in p.stderr
    bf.write_text("{not json")
    p = cyphy("provision", "--port", url, "--config", str(bf), ok=False)
    assert p.returncode == 1 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr
    with Device.open(url) as dev:
        assert dev.hashes(dirs=["/"]) == before


def big_config(name: str) -> dict:
    """The oven, four more loops and a long plant schedule: a config of several KB."""
    cfg = json.loads(json.dumps(CONFIG))
    cfg["name"] = name
    for i, (adc, pwm) in enumerate([(32, 26), (33, 27), (35, 18), (36, 19)]):
        cfg["channels"] += [
            {"name": f"temp{i}", "pin": adc, "kind": "adc",
             "scale": {"mv_min": 0, "mv_max": 2450, "eng_min": 0, "eng_max": 150 + i},
             "units": "degC", "valid": [10, 149]},
            {"name": f"heat{i}", "pin": pwm, "kind": "pwm", "range": [0, 100], "units": "%", "failsafe": 0}]
        cfg["loops"].append(
            {"name": f"zone{i}", "rate_hz": 5, "sensor": f"temp{i}", "actuator": f"heat{i}",
             "filter": {"type": "lowpass", "tau_s": 1.5 + i},
             "controller": {"type": "pid", "kp": 2.0 + i, "ki": 0.01 * (i + 1), "setpoint": 40.0 + i},
             "alarms": {"high": 95, "low": 12, "hysteresis": 0.5}})
    cfg["plant"] = {"type": "fotd", "seed": 7,
                    "disturbances": [{"at_s": 60 * k, "input": "ambient", "value": 15 + k % 9}
                                     for k in range(1, 60)]}
    return cfg


@pytest.mark.slow
def test_power_loss_mid_provision_keeps_the_previous_config(sim_nodes, config_file):
    n = node_with_firmware(sim_nodes, "pwr", baud=115200)
    url = f"sim://{n.name}"
    cyphy("provision", "--port", url, "--config", str(config_file), "--reset")
    with Device.open(url) as dev:
        old = dev.read("/config.json")
        old_secrets = dev.sha256("/secrets.json")
    assert json.loads(old)["name"] == "oven-1"
    big = big_config("oven-2")
    from cyphy.provision import check_config, config_bytes

    assert len(config_bytes(check_config(big, None))) > 4000
    pid = n.node.state()["pid"]
    seen = []

    def pull_the_plug(done: int, total: int, path: str) -> None:
        seen.append((done, total, path))
        if 0 < done < total and n.node.state() is not None:
            os.kill(pid, signal.SIGKILL)  # the supervisor: the board loses power at once

    with pytest.raises(DeviceError):
        with Device.open(url) as dev:
            provision(dev, None, big, progress=pull_the_plug)
    assert any(0 < d < t and p == "/config.json" for d, t, p in seen), seen
    deadline = time.monotonic() + 10
    while n.node.state() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    log = n.node.console_log
    start = log.stat().st_size
    n.restart(baud=115200)  # power on again: main.py boots from flash
    out = wait_for_log(log, b"running 1 loop(s)", after=start, timeout=60)
    assert b"POWERON_RESET" in out and b"cyphy: node oven-1 running 1 loop(s)" in out, out
    with Device.open(url) as dev:
        assert dev.read("/config.json") == old  # the old config, whole
        assert dev.sha256("/secrets.json") == old_secrets
        # and provisioning again completes, the leftover .tmp replaced
        r = provision(dev, None, big)
        assert r["config"]["action"] == "written"
        assert json.loads(dev.read("/config.json"))["name"] == "oven-2"
        assert dev.sha256("/config.json.tmp") is None


def test_wifi_password_prompt_is_hidden(sim_nodes, cyphy_home):
    """On a terminal the password is asked for twice and never echoed."""
    n = node_with_firmware(sim_nodes, "tty")
    t = OnTerminal("provision", "--port", f"sim://{n.name}", "--name", "tty-1", "--wifi-ssid", "lab")
    t.until(b"Wi-Fi password")
    t.write(PASSWORD.encode() + b"\r")
    t.until(b"Repeat for confirmation")
    t.write(PASSWORD.encode() + b"\r")
    t.until(b"provisioned")
    seen = t.seen
    assert t.wait() == 0, seen
    assert PASSWORD.encode() not in seen
    with Device.open(f"sim://{n.name}") as dev:
        assert dev.exec(f"import json\nprint(json.load(open('/secrets.json'))['wifi'] == "
                        f"{{'ssid': 'lab', 'password': {PASSWORD!r}}})").strip() == "True"


def test_a_config_that_does_not_fit_is_refused_unless_forced(sim_nodes, tmp_path, cyphy_home):
    # Eight PID loops at 1 kHz: more than an ESP32's CPU (cyphy check), whatever its heap.
    n = sim_nodes("fit")
    url = f"sim://{n.name}"
    cfg = json.loads((REPO / "firmware" / "config.example.json").read_text())
    cfg["channels"] = [cfg["channels"][0]] + [
        {"name": f"h{i}", "pin": pin, "kind": "pwm", "freq_hz": 1000, "range": [0, 100], "failsafe": 0}
        for i, pin in enumerate([16, 17, 18, 19, 21, 22, 23, 25])]
    cfg["loops"] = [dict(cfg["loops"][0], name=f"zone{i}", rate_hz=1000, actuator=f"h{i}") for i in range(8)]
    f = tmp_path / "busy.json"
    f.write_text(json.dumps(cfg))
    p = cyphy("provision", "--port", url, "--config", str(f), ok=False)
    assert p.returncode == 1 and p.stdout == "" and "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("Error: does not fit ESP32") and "% of the CPU" in line
    assert f"cyphy check {f} --chip esp32" in line and "--force" in line
    with Device.open(url) as dev:
        assert dev.read("/config.json") is None             # nothing written
    p = cyphy("provision", "--port", url, "--config", str(f), "--force", "--json")
    assert json.loads(p.stdout)["config"]["action"] == "written"
    with Device.open(url) as dev:
        assert json.loads(dev.read("/config.json"))["loops"][7]["name"] == "zone7"
