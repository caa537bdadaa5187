"""Wi-Fi and UDP on sim nodes: each node's own loopback IP, the ROM's ESP32-style `network`
module, the HAL's wifi_* running ESP32's code path against it, and board.udp() talking to
host programs and to other nodes (unicast and broadcast).

Nodes of different $CYPHY_HOMEs (parallel test workers) may share IPs, so every test
uses a UDP port of its own, picked free on the host.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import pytest

from cyphy.sim.nodes import ip_prefix
from helpers import cyphy
from serial_console import Console
from test_node_runtime import FILES, compiled, put

HAL = [(src, dst) for src, dst in FILES if dst.startswith("/lib/board")]
SETUP = "from boards.esp32.board import detect\nb = detect()\n"


def install_hal(con: Console) -> None:
    """The board files as on a deployed node (/lib/board.py, /lib/boards/...), compiled."""
    con.run("import os\nfor d in ('/lib', '/lib/boards', '/lib/boards/esp32', '/lib/boards/sim'):\n"
            "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n")
    with tempfile.TemporaryDirectory() as tmp:
        for src, dst in HAL:
            put(con, dst[:-3] + ".mpy", compiled(src, Path(tmp)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def host_socket(broadcast: bool = False) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if broadcast:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


@pytest.fixture
def udp_node(sim_nodes):
    """Factory: a running node with the HAL installed, Wi-Fi connected, `d = b.udp(port)`."""
    cons = []

    def make(name: str, port: int):
        n = sim_nodes(name, baud=0)
        con = Console(n.port)
        cons.append(con)
        con.raw()
        install_hal(con)
        con.run(SETUP + "import json\nassert b.wifi_connect('lab', 'secret')\n"
                f"d = b.udp({port})\nbuf = bytearray(64)\n")
        return n, con

    yield make
    for con in cons:
        con.close()


def test_each_node_has_its_own_ip(sim_nodes, cyphy_home):
    a, b = sim_nodes("a"), sim_nodes("b")
    ips = [a.node.config()["ip"], b.node.config()["ip"]]
    pre = ip_prefix(cyphy_home / "sim")
    assert ips == [pre + "0.1", pre + "0.2"]
    rows = {r["name"]: r for r in json.loads(cyphy("sim", "list", "--json").stdout)}
    assert [rows["a"]["ip"], rows["b"]["ip"]] == ips
    with Console(b.port) as con:
        con.raw()
        out = con.run("import network, time\nw = network.WLAN(network.STA_IF)\nw.active(True)\n"
                      "w.connect('lab', 'secret')\n"
                      "while not w.isconnected():\n    time.sleep_ms(20)\n"  # ESP32: ~1 s to GOT_IP
                      "print(w.ifconfig()[0])\n")
    assert out.strip() == pre + "0.2"

    # a node made before nodes had IPs gets a free one at its next start, written back
    a.stop()
    cfg = a.node.config()
    del cfg["ip"]
    a.node.config_path.write_text(json.dumps(cfg))
    c = sim_nodes("c")
    assert c.node.config()["ip"] == pre + "0.1"  # free while a has none
    a.restart()
    assert a.node.config()["ip"] == pre + "0.3"
    assert {k: v for k, v in a.node.config().items() if k != "ip"} == cfg


WLAN = r"""
import network, machine, json
out = []
def attempt(f, *a):
    try:
        return f(*a)
    except OSError as e:
        return 'OSError: %s' % e
w = network.WLAN(network.STA_IF)
out.append([w.active(), w.isconnected(), w.status(), w.ifconfig()])
out.append(attempt(w.connect, 'lab', 'secret'))
out.append([w.active(True), w.active(), w.status()])
import time
def settle(ms, until):
    # ESP32's connect() only starts the driver: the status comes later (scan, auth)
    t0 = time.ticks_ms()
    while not until() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        time.sleep_ms(20)
w.connect('cyphy-sim-noap', 'secret')
settle(4000, lambda: w.status() == network.STAT_NO_AP_FOUND)
out.append([w.isconnected(), w.status(), w.status() == network.STAT_NO_AP_FOUND])
w.connect('lab', 'wrong-password')
settle(8000, lambda: w.status() == network.STAT_WRONG_PASSWORD)
out.append([w.isconnected(), w.status(), w.status() == network.STAT_WRONG_PASSWORD])
w.connect('lab', 'secret')
settle(4000, w.isconnected)
out.append([w.isconnected(), w.status(), w.ifconfig(), w.ipconfig('addr4'), w.config('essid')])
out.append([w.config('mac') == machine.unique_id(), len(w.config('mac')), w.config('hostname'),
            network.WLAN(network.STA_IF).isconnected(), w.status('rssi') < 0])
w.disconnect()
out.append([w.isconnected(), w.status(), w.ifconfig()[0]])
w.active(False)
out.append([w.active(), attempt(w.disconnect), network.WLAN(network.AP_IF).status()])
out.append([network.STA_IF, network.AP_IF, network.STAT_IDLE, network.STAT_CONNECTING, network.STAT_GOT_IP,
            network.STAT_NO_AP_FOUND, network.STAT_WRONG_PASSWORD, network.STAT_ASSOC_FAIL])
print(json.dumps(out))
"""


def test_network_wlan_is_esp32s(sim_node):
    ip = sim_node.node.config()["ip"]
    with Console(sim_node.port) as con:
        con.raw()
        r = json.loads(con.run(WLAN))
    assert r[0] == [False, False, 1000, ["0.0.0.0"] * 4]
    assert r[1] == "OSError: Wifi Not Started"
    assert r[2] == [True, True, 1000]
    assert r[3] == [False, 201, True]
    assert r[4] == [False, 202, True]
    assert r[5] == [True, 1010, [ip, "255.0.0.0", "127.0.0.1", "127.0.0.1"], [ip, "255.0.0.0"], "lab"]
    assert r[6] == [True, 6, "mpy-esp32", True, True]
    assert r[7] == [False, 1000, "0.0.0.0"]
    assert r[8] == [False, "OSError: Wifi Not Started", None]
    assert r[9] == [0, 1, 1000, 1001, 1010, 201, 202, 203]


def test_hal_wifi_runs_esp32_code_on_the_sim(sim_node):
    ip = sim_node.node.config()["ip"]
    with Console(sim_node.port) as con:
        con.raw()
        install_hal(con)
        out = con.run(
            "import json\nfrom boards.sim.board import Board\nout = []\n"
            "def udp_error(b):\n"
            "    try:\n        b.udp(5477)\n    except OSError as e:\n        return str(e)\n"
            "b = Board()\n"
            "out.append([b.wifi_status(), b.wifi_ip(), udp_error(b)])\n"
            # ESP32 reports a wrong password only after its first retries (~5 s) and a
            # missing AP after a scan (~2.5 s): the timeouts leave room for that
            "out.append([b.wifi_connect('lab', 'wrong-password', 8000), b.wifi_status(), b.wifi_ip()])\n"
            "b = Board()\n"
            "out.append([b.wifi_connect('cyphy-sim-noap', 'secret', 4000), b.wifi_status()])\n"
            "b = Board()\n"
            "out.append([b.wifi_connect('lab', 'secret'), b.wifi_status(), b.wifi_ip(), b.caps(4)])\n"
            "print(json.dumps(out))\n")
    r = json.loads(out)
    assert r[0][:2] == ["off", None]
    assert "Wi-Fi is not connected" in r[0][2] and "wifi_connect" in r[0][2]
    assert r[1] == [False, "wrong_password", None]
    assert r[2] == [False, "no_ap_found"]
    assert r[3] == [True, "connected", ip, ["din", "dout", "pwm"]]  # ADC2 pin 4: no "adc" with Wi-Fi


def test_udp_unicast_with_a_host_program(udp_node):
    port = free_port()
    n, con = udp_node("u", port)
    ip = n.node.config()["ip"]
    with host_socket() as h:
        assert json.loads(con.run("import json\nprint(json.dumps([d.local, d.recv_into(buf)]))")) == [[ip, port], None]
        h.sendto(b"ping", (ip, port))
        h.sendto(b"x" * 100, (ip, port))  # longer than the node's 64-byte buffer
        out = con.run(
            RECV +
            "sent = d.sendto(b'pong:' + buf[:n], addr)\n"
            "r2 = d.recv_into(buf)\n"
            "print(json.dumps([n, addr, sent, r2[0], bytes(buf[:r2[0]]).decode(), d.recv_into(buf)]))\n")
        n1, addr, sent, n2, data2, none = json.loads(out)
        assert (n1, tuple(addr), sent) == (4, h.getsockname(), True)
        assert (n2, data2, none) == (64, "x" * 64, None)  # truncated to the buffer, rest dropped
        data, src = h.recvfrom(100)
        assert (data, src) == (b"pong:ping", (ip, port))  # from the node's own address

        # the node starts a conversation; then port bookkeeping and address checks
        hp = h.getsockname()[1]
        out = con.run(
            f"print(d.sendto(b'hello', ('127.0.0.1', {hp})))\n"
            "def err(f, *a):\n"
            "    try:\n        f(*a)\n    except (OSError, ValueError) as e:\n        return '%s: %s' % (type(e).__name__, e)\n"
            f"print(json.dumps([err(b.udp, {port}), err(d.sendto, b'x', ('localhost', 1)), err(b.udp, 0)]))\n"
            f"d.close()\nd.close()\nd = b.udp({port})\nprint(d.local[1])\n")
        first, errs, reopened = out.splitlines()
        assert first == "True"
        assert h.recvfrom(100) == (b"hello", (ip, port))
        e_twice, e_name, e_zero = json.loads(errs)
        assert e_twice.startswith("ValueError") and f"port {port} is already open" in e_twice
        assert e_name.startswith("ValueError") and "dotted IPv4" in e_name
        assert e_zero.startswith("ValueError") and "1..65535" in e_zero
        assert reopened == str(port)


# node code: wait (up to 1 s) for a datagram into buf: n, addr
RECV = ("import time\n"
        "r = None\n"
        "for _ in range(200):\n"
        "    r = d.recv_into(buf)\n"
        "    if r:\n        break\n"
        "    time.sleep_ms(5)\n"
        "n, addr = r\n")


def test_udp_broadcast_reaches_every_node(udp_node):
    port = free_port()
    (na, a), (nb, b) = udp_node("a", port), udp_node("b", port)
    ips = {"a": na.node.config()["ip"], "b": nb.node.config()["ip"]}
    assert ips["a"] != ips["b"]
    answer = (
        RECV +
        "print(d.sendto(b'%s:' + buf[:n], addr))\n"
    )
    with host_socket(broadcast=True) as h:
        h.sendto(b"who", ("127.255.255.255", port))
        assert a.run(answer % "a").strip() == "True"
        assert b.run(answer % "b").strip() == "True"
        replies = {h.recvfrom(100) for _ in range(2)}
        assert replies == {(b"a:who", (ips["a"], port)), (b"b:who", (ips["b"], port))}

    # node to node: a's broadcast reaches b (from a's address), and not a itself
    assert a.run("print(d.broadcast(b'hi from a', %d))" % port).strip() == "True"
    out = b.run("import time\ntime.sleep_ms(50)\nr = d.recv_into(buf)\n"
                "print(json.dumps([bytes(buf[:r[0]]).decode(), r[1]]))\n")
    assert json.loads(out) == ["hi from a", [ips["a"], port]]
    assert a.run("import time\ntime.sleep_ms(50)\nprint(d.recv_into(buf))").strip() == "None"
