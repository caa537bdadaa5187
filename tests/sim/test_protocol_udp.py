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
from protonode import KEY_HEX, boot  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

from cyphy.client import Session  # noqa: E402
from cyphy.discovery import discover_udp, listen_announces  # noqa: E402
from cyphy.links import UdpLink  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402
from cyphy_node import proto as P  # noqa: E402

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


@pytest.fixture
def udp_nodes(sim_nodes):
    port = free_udp_port()

    def make(*names: str) -> list[str]:
        for name in names:
            boot(sim_nodes, name, config=udp_config(name, port), secrets=WIFI)
        return [Node.named(name).config()["ip"] for name in names]

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
