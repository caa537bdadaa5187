"""The protocol over UDP (the sim's Wi-Fi is the host's loopback, each node on its own
address): sessions, telemetry, commands, discovery by broadcast and announce."""

from __future__ import annotations

import copy
import socket
import time
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

from cyphy.client import Session  # noqa: E402
from cyphy.discovery import discover_udp, listen_announces  # noqa: E402
from cyphy.links import UdpLink  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402
from cyphy import codec as P  # noqa: E402

KEY = P.key_from_hex(KEY_HEX)
WIFI = {"wifi": {"ssid": "lab", "password": "not-printed-anywhere"}}


def udp_config(name: str, port: int) -> dict:
    c = copy.deepcopy(CONFIG)
    c["name"] = name
    c["comms"] = {"udp": True, "udp_port": port}
    return c


def free_udp_port() -> int:
    # Parallel test runs may share loopback addresses: each test takes its own port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_online(ips: list[str], port: int, timeout: float = 15.0) -> None:
    """Until every node answers on UDP: a node joins Wi-Fi in the background after boot
    (ESP32 takes about a second to get an address) and opens its UDP port then."""
    end = time.monotonic() + timeout
    while True:
        found = {f.ip for f in discover_udp(timeout=0.3, port=port, key=KEY)}
        if set(ips) <= found:
            return
        assert time.monotonic() < end, f"nodes {sorted(set(ips) - found)} not on UDP after {timeout} s"


@pytest.fixture
def udp_nodes(sim_nodes):
    port = free_udp_port()

    def make(*names: str) -> list[str]:
        for name in names:
            boot(sim_nodes, name, config=udp_config(name, port), secrets=WIFI)
        ips = [Node.named(name).config()["ip"] for name in names]
        wait_online(ips, port)
        return ips

    make.port = port
    return make


def test_session_over_udp(udp_nodes):
    (ip,) = udp_nodes("oven-a")
    with Session(UdpLink(ip, udp_nodes.port), KEY) as s:
        h = s.open()
        assert h.name == "oven-a" and h.caps & P.CAP_UDP
        s.subscribe(50)
        samples = [next(s.samples()) for _ in range(10)]
        assert samples[-1]["loops"]["oven"]["setpoint"] == 60.0
        s.set("oven", "setpoint", 30.0)
        assert s.read("oven.setpoint") == 30.0
        ticks = s.sync_time()
        assert 0 <= ticks < 1 << 30
        assert s.stats.lost == 0 and s.stats.bad_tag == 0


@pytest.mark.slow
def test_discovery_by_broadcast_and_announce(udp_nodes):
    port = udp_nodes.port
    ips = udp_nodes("oven-a", "oven-b")
    found = discover_udp(timeout=1.0, port=port, key=KEY)
    assert [(f.ip, f.name, f.how, f.verified) for f in found] == [
        (ips[0], "oven-a", "answer", True), (ips[1], "oven-b", "answer", True)]
    assert discover_udp(timeout=0.5, port=port, key=P.Key(b"w" * 32))[0].verified is False
    # both announce themselves every 10 s
    heard = listen_announces(11.0, port=port, key=KEY, address="127.255.255.255")
    assert sorted(f.name for f in heard) == ["oven-a", "oven-b"]
    assert all(f.how == "announce" and f.verified for f in heard)


def test_log_events_while_a_person_uses_the_repl(udp_nodes):
    # UDP carries the session while the serial console is a person's REPL, in which user
    # code sends a log line to every host in session.
    from serial_console import Console

    (ip,) = udp_nodes("oven-a")
    with Session(UdpLink(ip, udp_nodes.port), KEY) as s:
        s.open()
        s.subscribe(100)
        next(s.samples())
        with Console(str(Node.named("oven-a").tty)) as con:
            con.raw()
            con.run("node.comms.log('hello from the REPL', 2)")
        deadline = time.monotonic() + 3
        while not s.events and time.monotonic() < deadline:
            time.sleep(0.05)
        (ev,) = list(s.events)
        assert ev["kind"] == P.EV_LOG and ev["code"] == 2 and ev["text"] == "hello from the REPL"


def test_a_loop_follows_another_node(udp_nodes, sim_nodes):
    # Node b's oven setpoint follows node a's oven measurement + 5 degC, node to node over
    # UDP, authenticated with a's key; a is a fast oven heated from 20 degC, so its
    # measurement moves within seconds of real time.
    port = udp_nodes.port
    fast = copy.deepcopy(THERMAL)
    fast["plant"].update(tau_s=3, dead_time_s=0.2)
    boot(sim_nodes, "oven-a", config=udp_config("oven-a", port), secrets=WIFI, bench=fast)
    ip_a = Node.named("oven-a").config()["ip"]
    cfg = udp_config("oven-b", port)
    cfg["comms"]["follow"] = [{"loop": "oven", "peer": ip_a, "port": port, "peer_loop": "oven",
                               "value": "measurement", "offset": 5.0, "period_ms": 100}]
    boot(sim_nodes, "oven-b", config=cfg, secrets={**WIFI, "peer_keys": {ip_a: KEY_HEX}})
    ip_b = Node.named("oven-b").config()["ip"]
    with Session(UdpLink(ip_a, port), KEY) as a, Session(UdpLink(ip_b, port), KEY) as b:
        a.open()
        b.open()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ya = a.read("oven.measurement")
            spb = b.read("oven.setpoint")
            if ya > 25 and abs(spb - (ya + 5)) < 1.0:
                break
            time.sleep(0.3)
        assert ya > 25 and abs(spb - (ya + 5)) < 1.0, (ya, spb)


def test_python_api_over_udp(udp_nodes):
    import cyphy

    (ip,) = udp_nodes("oven-a")
    with cyphy.connect(f"udp://{ip}:{udp_nodes.port}", key=KEY_HEX) as n:
        assert n.name == "oven-a"
        n.set("oven.setpoint", 33.0)
        assert n.get("oven.setpoint") == 33.0
        assert next(n.telemetry(period_ms=50))["loops"]["oven"]["setpoint"] == 33.0
        with pytest.raises(cyphy.api.LinkError, match="exec needs the node's serial console"):
            n.exec("print(1)")


def test_the_node_rejoins_wifi_by_itself_after_a_drop(udp_nodes):
    # The firmware keeps Wi-Fi up from its service (cyphy_node/net.py, the board's
    # WifiKeeper): the access point goes away, then comes back; without anyone touching
    # the node, its UDP port answers again.
    from cyphy.sim.bench_control import SimWifi

    (ip,) = udp_nodes("oven-w")
    with Session(UdpLink(ip, udp_nodes.port), KEY) as s:
        s.open()
        assert s.read("info")["net"]["state"] == "connected"
    with SimWifi.connect("oven-w") as air:
        air.drop(mode="deauth")
        time.sleep(3)
        assert ip not in {f.ip for f in discover_udp(timeout=0.5, port=udp_nodes.port, key=KEY)}
        air.restore()
    wait_online([ip], udp_nodes.port, timeout=40)  # back-off 1 s, doubling while it is down
    with Session(UdpLink(ip, udp_nodes.port), KEY) as s:
        s.open()
        net = s.read("info")["net"]
        assert net["state"] == "connected" and net["drops"] >= 1 and net["connects"] >= 2, net
        s.set("oven", "setpoint", 42.0)
        assert s.read("oven.setpoint") == 42.0
