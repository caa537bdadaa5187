"""Host tools over the broker (issue 16, item 2): `cyphy get/set/monitor/plot` and
`cyphy.connect()` with mqtt://HOST:PORT/GROUP/EDGE/DEVICE, and `cyphy discover --broker`,
against a real gateway (cyphy.gateway, in this process) serving a real sim node (the real
firmware, with a key) through a real broker of each kind. No key is given to the tools:
the gateway holds it.

The sim node boots once for the module (about 6 s); one broker and gateway per broker
kind serve every test of that kind."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import power_on  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

import cyphy  # noqa: E402
from cyphy import codec as P  # noqa: E402
from cyphy.broker import Broker, mosquitto_path  # noqa: E402
from cyphy.client import CommandRejected, status_names  # noqa: E402
from cyphy.fleet import MqttNode, discover  # noqa: E402
from cyphy.gateway import Gateway  # noqa: E402
from cyphy.links import LinkError, open_link  # noqa: E402
from cyphy.mqtt import MqttError  # noqa: E402
from cyphy.sim import control  # noqa: E402

CYPHY = str(Path(sys.executable).parent / "cyphy")
SIM = "mqt"         # the sim node's name on this host
NAME = "oven-1"     # the node's own name: the Sparkplug device_id
GROUP, EDGE = "plant", "gw1"
KINDS = [pytest.param("embedded", id="embedded"),
         pytest.param("mosquitto", id="mosquitto", marks=pytest.mark.skipif(
             mosquitto_path() is None, reason="Mosquitto not installed (tools/install-debian-packages)"))]


@dataclass
class Fleet:
    broker: Broker
    gateway: Gateway
    home: Path
    url: str          # the node's mqtt:// URL

    def env(self, **extra: str) -> dict[str, str]:
        """The tools' environment: no key anywhere (the gateway has it)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CYPHY_KEY", "CYPHY_MQTT", "CYPHY_DEBUG"))}
        return {**env, "CYPHY_HOME": str(self.home), **extra}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sim node, booted once with KEY_HEX; CYPHY_KEY set for the module (the gateway
    in this process finds the key there)."""
    home = tmp_path_factory.mktemp("mqtt-tools-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CYPHY_HOME", str(home))
    mp.setenv("CYPHY_KEY", KEY_HEX)
    for k in [k for k in os.environ if k.startswith("CYPHY_MQTT")]:
        mp.delenv(k)

    class Started:
        def __init__(self, port: str) -> None:
            self.port = port

    def start(name: str, baud: int = 0, files: dict[str, bytes] | None = None, **kw) -> Started:
        return Started(power_on(name, home, files, baud=baud, **kw)["port"])

    try:
        boot(start, SIM, config=copy.deepcopy(CONFIG))
        yield home
    finally:
        control.stop(SIM, home=home)
        mp.undo()


@pytest.fixture(scope="module", params=KINDS)
def fleet(request: pytest.FixtureRequest, home: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    broker = Broker(request.param, workdir=tmp_path_factory.mktemp(f"broker-{request.param}"))
    broker.start()
    gw = Gateway(broker.url, GROUP, EDGE, [f"sim://{SIM}"], period_ms=100, report_s=1.0)
    fl = None
    try:
        gw.start()
        url = f"{broker.url}/{GROUP}/{EDGE}/{NAME}"
        end = time.monotonic() + 20
        while not any(d.born for d in gw.devices):   # the gateway's session with the node
            assert time.monotonic() < end, "the gateway did not birth the node within 20 s"
            time.sleep(0.1)
        fl = Fleet(broker, gw, home, url)
        yield fl
    finally:
        (fl.gateway if fl is not None else gw).stop()   # a test may have started another
        broker.close()


def run(fleet: Fleet, *args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([CYPHY, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or fleet.env(), stdin=subprocess.DEVNULL)


def one_error_line(p: subprocess.CompletedProcess, code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    return lines[0]


def test_get_set_monitor_plot_through_the_broker(fleet: Fleet, tmp_path: Path) -> None:
    p = run(fleet, "get", fleet.url, "oven", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["mode"] == "auto" and st["alarms"] == [] and st["faults"] == []
    assert isinstance(st["measurement"], float) and st["kp"] > 0

    p = run(fleet, "set", fleet.url, "oven.setpoint=55", "oven.kd=0.25")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["oven.setpoint = 55.0: acknowledged",
                                     "oven.kd = 0.25: acknowledged"]
    # the node has them: read back through the gateway's metrics
    p = run(fleet, "get", fleet.url, "state", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)["oven"]
    assert st["setpoint"] == 55.0 and st["kd"] == 0.25
    p = run(fleet, "get", fleet.url, "oven.setpoint")
    assert (p.returncode, p.stdout.strip()) == (0, "55"), p.stderr

    rec = tmp_path / "run.csv"
    p = run(fleet, "monitor", fleet.url, "--seconds", "1.5", "--csv", str(rec))
    assert p.returncode == 0, p.stderr
    assert "oven: sp 55" in p.stdout, p.stdout       # not a terminal: one line per loop
    rows = list(csv.DictReader(rec.open()))
    assert len(rows) >= 2 and {r["loop"] for r in rows} == {"oven"}, rows  # a DDATA >= 1/s
    assert all(r["setpoint"] == "55.0" and r["mode"] == "auto" for r in rows)
    t = [int(r["t_ms"]) for r in rows]                 # the gateway's timestamps (epoch ms)
    assert t == sorted(t) and abs(t[-1] / 1000 - time.time()) < 60
    p = run(fleet, "plot", str(rec))
    assert p.returncode == 0 and "1 loop(s): oven" in p.stdout, p.stderr
    p = run(fleet, "set", fleet.url, "oven.kd=0")
    assert p.returncode == 0, p.stderr


def test_a_nack_is_reported_with_the_nodes_reason(fleet: Fleet) -> None:
    line = one_error_line(run(fleet, "set", fleet.url, "oven.setpoint=5000"), 3)
    # the node's own reason, as the gateway reports it in Command/last
    assert "oven/setpoint=5000" in line and "rejected by the node" in line and "outside" in line
    line = one_error_line(run(fleet, "set", fleet.url, "oven.kp=-1", "oven.setpoint=40"), 3)
    assert "oven/kp=-1" in line and "out of range" in line and "nothing was applied" in line
    line = one_error_line(run(fleet, "set", fleet.url, "oven.bogus=1"), 3)
    assert "oven/bogus: not a writable metric" in line
    line = one_error_line(run(fleet, "set", fleet.url, "oven.setpoint=40", "--save"), 1)
    assert "--save" in line
    line = one_error_line(run(fleet, "tune", fleet.url, "oven"), 1)
    assert "an autotune is not available through a gateway" in line
    # the Python API: the exception api.Node.set raises on a NACK, with its reason code
    with cyphy.connect(fleet.url) as n:
        assert isinstance(n, MqttNode) and n.name == NAME and n.loops == ["oven"]
        sp0 = n.get("oven.setpoint")
        with pytest.raises(CommandRejected) as e:
            n.set("oven.setpoint", 5000)
        assert e.value.reason == P.R_OUT_OF_RANGE and "outside" in str(e.value)
        assert n.get("oven.setpoint") == sp0        # nothing was applied


def test_the_api_get_set_and_telemetry(fleet: Fleet) -> None:
    with cyphy.connect(fleet.url, timeout=3.0) as n:
        info = n.get("info")
        assert info["firmware"] == "0.1.0" and info["board"] == "cyphy-sim"
        assert info["gateway"] == f"{GROUP}/{EDGE}" and info["gateway_link"] == f"sim://{SIM}"
        n.set_many([("oven.mode", "manual"), ("oven.output", 12.5)])
        got = []
        for s in n.telemetry(timeout=5):
            v = s["loops"]["oven"]
            got.append(v)
            if v["output"] == 12.5 and status_names(v["status"])["mode"] == "manual":
                break
            assert len(got) < 100, got[-3:]
        assert n.get("oven")["mode"] == "manual"
        n.set("oven.mode", "auto")
        assert n.get("oven.mode") == "auto"
        stats = n.get("stats")["oven"]
        assert stats["ticks"] > 0 and "jitter_p99_us" in stats
        assert n.link_stats.frames > 0 and n.link_stats.bad_tag == 0
        with pytest.raises(MqttError, match="'faults': not published through the gateway"):
            n.get("faults")
        with pytest.raises(MqttError, match="no loop 'boiler'"):
            n.get("boiler.setpoint")
        with pytest.raises(MqttError, match="running code on the node is not available"):
            n.exec("print(1)")
    # not a frame link: the registry says so when one is asked for
    with pytest.raises(LinkError, match="not a frame link"):
        open_link(fleet.url)


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)   # the broker plays no part
def test_an_unknown_device_or_edge_is_one_line(fleet: Fleet) -> None:
    b = fleet.broker.url
    line = one_error_line(run(fleet, "get", f"{b}/{GROUP}/{EDGE}/nobody", "oven"), 1)
    assert f"{GROUP}/{EDGE} on {b} has no device nobody online (its devices: {NAME})" in line
    assert f"cyphy discover --broker {b}" in line
    t = time.monotonic()
    with pytest.raises(MqttError) as e:
        MqttNode(f"{b}/{GROUP}/gw9/{NAME}", timeout=1.0)
    assert time.monotonic() - t < 3
    assert str(e.value) == (f"no device {NAME} under {GROUP}/gw9 on {b} within 1 s: is the "
                            f"gateway running? cyphy discover --broker {b} lists the devices")
    line = one_error_line(run(fleet, "get", f"mqtt://127.0.0.1:1/{GROUP}/{EDGE}/{NAME}", "oven"), 1)
    assert "connection refused" in line


def test_mqtts_to_a_plain_listener_says_tls(fleet: Fleet) -> None:
    # mqtts:// to a plain listener: the TLS handshake fails, and says so
    # (amqtt never answers the ClientHello, Mosquitto closes the connection)
    with pytest.raises(MqttError, match="TLS") as e:
        MqttNode(f"mqtts://127.0.0.1:{fleet.broker.port}/{GROUP}/{EDGE}/{NAME}", timeout=1.0,
                 connect_timeout=1.0, keepalive=1)
    assert str(e.value).startswith(f"broker mqtts://127.0.0.1:{fleet.broker.port}: ")


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)   # a subscription like any other
def test_discover_lists_the_device_from_its_birth(fleet: Fleet) -> None:
    p = run(fleet, "discover", "--broker", fleet.broker.url, "--group", GROUP)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:2] == ["mqtt", fleet.url], p.stdout
    assert "oven-1 (cyphy-sim, 0.1.0), loops oven, gateway plant/gw1" in p.stdout
    # what --json prints
    assert discover(fleet.broker.url, timeout=1.0) == [
        {"url": fleet.url, "group": GROUP, "edge": EDGE, "device": NAME, "loops": ["oven"],
         "firmware": "0.1.0", "board": "cyphy-sim", "link": f"sim://{SIM}"}]
    assert discover(fleet.broker.url, "other", timeout=0.3) == []


def test_credentials_come_from_the_environment_never_shown(fleet: Fleet, tmp_path: Path) -> None:
    """A broker that requires a user: refused without, connects with CYPHY_MQTT_*; the
    password never appears in any output."""
    secret = "s3cret-not-printed"
    b = Broker(fleet.broker.kind, users={"tool": secret}, workdir=tmp_path / "auth").start()
    host = b.url.split("://", 1)[1]
    out = []
    try:
        p = run(fleet, "discover", "--broker", b.url)
        out.append(p)
        assert "refused the connection" in one_error_line(p, 1)
        with pytest.MonkeyPatch.context() as mp:   # accepted (in this process: quicker)
            mp.setenv("CYPHY_MQTT_PASSWORD", secret)
            assert discover(f"mqtt://tool@{host}", timeout=0.2) == []
        p = run(fleet, "discover", "--broker", b.url, env=fleet.env(
            CYPHY_MQTT_USERNAME="tool", CYPHY_MQTT_PASSWORD=secret + "-wrong"))
        out.append(p)
        assert "refused the connection" in one_error_line(p, 1)
        p = run(fleet, "get", f"mqtt://tool:{secret}@{host}/{GROUP}/{EDGE}/{NAME}", "oven")
        out.append(p)
        assert "a password in the URL is refused" in one_error_line(p, 1)
    finally:
        b.close()
    for p in out:
        assert secret not in p.stdout + p.stderr


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)
def test_monitor_waits_while_the_gateway_is_away(fleet: Fleet, tmp_path: Path) -> None:
    """The gateway stops (DDEATH, NDEATH) and starts again: monitor says so, waits, and
    goes on with a new session, appending to its CSV, as over any link."""
    import signal

    rec = tmp_path / "run.csv"
    p = subprocess.Popen([CYPHY, "monitor", fleet.url, "--csv", str(rec), "--seconds", "60"],
                         env=fleet.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    try:
        assert p.stdout is not None and p.stderr is not None
        first = p.stdout.readline()                 # a sample through the first gateway
        assert first.startswith("oven: sp "), first
        fleet.gateway.stop()
        time.sleep(0.5)
        gw = Gateway(fleet.broker.url, GROUP, EDGE, [f"sim://{SIM}"], period_ms=100, report_s=1.0)
        fleet.gateway = gw                          # the fixture stops this one
        gw.start()
        for line in p.stderr:                       # until it says it is back (or exits)
            err.append(line)
            if "is back" in line:
                break
        back = time.time()
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)                # Ctrl-C: the monitor's way to stop
        out, rest = p.communicate(timeout=10)
        err += rest.splitlines()
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert f"cyphy monitor: {NAME}: " in err[0] and "waiting for it to come back" in err[0], err
    assert any(f"cyphy monitor: {NAME} is back: new session (2)" in ln for ln in err), err
    rows = list(csv.DictReader(rec.open()))
    assert any(float(r["host_time"]) > back for r in rows), rows[-3:]   # appended after


def _tls_files(d: Path) -> dict[str, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it (PEM files in d)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(name: str, key, issuer: x509.Name, signer, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cyphy test CA")])
    out = {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}
    out["ca"].write_bytes(cert("cyphy test CA", ca_key, ca_name, ca_key, True)
                          .public_bytes(serialization.Encoding.PEM))
    out["cert"].write_bytes(cert("127.0.0.1", srv_key, ca_name, ca_key, False)
                            .public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(srv_key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return out


@pytest.mark.skipif(mosquitto_path() is None, reason="Mosquitto not installed (tools/install-debian-packages)")
def test_mqtts_verifies_the_broker_with_the_ca_from_the_environment(tmp_path: Path) -> None:
    """A real TLS listener (Mosquitto, a CA and certificate made here): refused while its CA
    is not trusted, accepted with CYPHY_MQTT_CA."""
    import pwd
    import socket

    from cyphy.broker import free_port

    f = _tls_files(tmp_path)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncafile {f['ca']}\ncertfile {f['cert']}\n"
                    f"keyfile {f['key']}\nallow_anonymous true\npersistence false\n"
                    f"log_dest file {tmp_path / 'broker.log'}\n"
                    f"user {pwd.getpwuid(os.geteuid()).pw_name}\n")
    proc = subprocess.Popen([mosquitto_path(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (tmp_path / "broker.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < end, "no TLS listener within 10 s"
                time.sleep(0.05)
        url = f"mqtts://127.0.0.1:{port}"
        with pytest.MonkeyPatch.context() as mp:
            for k in [k for k in os.environ if k.startswith("CYPHY_MQTT")]:
                mp.delenv(k)
            with pytest.raises(MqttError) as e:
                discover(url, timeout=0.2)
            assert str(e.value).startswith(f"broker {url}: TLS: the broker's certificate is not "
                                           f"trusted (") and "CYPHY_MQTT_CA" in str(e.value)
            mp.setenv("CYPHY_MQTT_CA", str(f["ca"]))
            assert discover(url, timeout=0.2) == []
            with pytest.raises(MqttError, match="has no device|no device oven-1 under"):
                MqttNode(f"{url}/{GROUP}/{EDGE}/{NAME}", timeout=0.5)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("fleet", ["embedded"], indirect=True)   # the broker plays no part
def test_telemetry_of_a_batching_gateway_gives_every_sample(fleet: Fleet) -> None:
    # --batch 5: one DDATA per 5 samples, the older 4 as historical values with the time
    # each was taken: the monitor still gets one sample per period, in order
    fleet.gateway.stop()
    gw = Gateway(fleet.broker.url, GROUP, EDGE, [f"sim://{SIM}"], period_ms=100, batch=5,
                 report_s=3600)
    fleet.gateway = gw
    gw.start()
    end = time.monotonic() + 20
    while not any(d.born for d in gw.devices):
        assert time.monotonic() < end, "the gateway did not birth the node within 20 s"
        time.sleep(0.1)
    with cyphy.connect(fleet.url, timeout=3.0) as n:
        it = n.telemetry(timeout=5)
        next(it)                                   # the birth
        stamps = [next(it)["t_ms"] for _ in range(15)]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(s > 0 for s in steps), stamps          # in order, none twice
    assert sum(60 <= s <= 140 for s in steps) >= len(steps) - 3, steps   # about one per 100 ms
