"""Sim Wi-Fi behaves like ESP32's network.WLAN (ports/esp32/network_wlan.c): connecting
takes time, a wrong password and a missing access point show as the port reports them
(after a while, the driver retrying meanwhile), the link drops and comes back under the
test equipment's control (wifi.ap / wifi.drop / wifi.restore), and UDP carries nothing
while it is down. boards/esp32/wifi.py's WifiKeeper keeps a node connected by itself."""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import pytest

from cyphy.sim.bench_control import BenchControlError, SimWifi
from serial_console import Console
from test_network import free_port, host_socket, install_hal
from test_node_runtime import compiled, put

ROOT = Path(__file__).resolve().parents[2]

# node code: sample status() every 50 ms for `secs` seconds after connect(ssid, key); the
# first time (ms) each status was seen, and when isconnected() became True
TIMELINE = r"""
import network, time, json
w = network.WLAN(network.STA_IF)
w.active(True)
t0 = time.ticks_ms()
w.connect(%r, %r)
seen = {}
up = None
while time.ticks_diff(time.ticks_ms(), t0) < %d:
    t = time.ticks_diff(time.ticks_ms(), t0)
    s = w.status()
    if s not in seen:
        seen[s] = t
    if up is None and w.isconnected():
        up = t
        break
    time.sleep_ms(50)
w.disconnect()
print(json.dumps([sorted([[v, k] for k, v in seen.items()]), up]))
"""


def timeline(con: Console, ssid: str, key: str, ms: int) -> tuple[list, int | None]:
    seen, up = json.loads(con.run(TIMELINE % (ssid, key, ms)))
    return [s for _, s in seen], ({s: t for t, s in seen}, up)


def test_connect_takes_time_and_failures_show_as_on_esp32(sim_node):
    with Console(sim_node.port) as con, SimWifi.connect(sim_node.name, sim_node.home) as air:
        con.raw()
        order, (at, up) = timeline(con, "lab", "secret", 5000)
        assert order == [1001, 1010]                     # CONNECTING, then GOT_IP
        assert 1000 <= up <= 3000 and at[1010] == up      # about 1.25 s, not at once

        assert air.ap("lab", "secret")["wifi"] == {"ssid": "lab", "up": True, "drop": "beacon",
                                                   "password_set": True}
        order, (at, up) = timeline(con, "lab", "wrong", 6000)
        # after disconnect() + connect() status() says IDLE (reason ASSOC_LEAVE stays until
        # the next event), then CONNECTING (reason 15, unnamed), then WRONG_PASSWORD (205)
        assert order == [1000, 1001, 202] and up is None
        assert 2000 <= at[1001] and 4000 <= at[202] <= 5500

        order, (at, up) = timeline(con, "elsewhere", "secret", 3500)
        assert order == [1000, 201] and up is None and 2000 <= at[201] <= 3000

        with pytest.raises(BenchControlError, match="mode"):
            air.drop(mode="sideways")


KEEPER = r"""
import network, time, json
from boards.esp32.wifi import WifiKeeper
k = WifiKeeper(network.WLAN(network.STA_IF), %r, %r)
def run(ms, until=None):
    t0 = time.ticks_ms()
    log = []
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        a = time.ticks_ms()
        k.poll()
        took = time.ticks_diff(time.ticks_ms(), a)
        t = time.ticks_diff(time.ticks_ms(), t0)
        if not log or log[-1][1] != k.state:
            log.append([t, k.state, k.attempts, took])
        if until and until(k):
            break
        time.sleep_ms(20)
    return log
"""


def install_keeper(con: Console, ssid: str, key: str) -> None:
    install_hal(con)
    with tempfile.TemporaryDirectory() as tmp:
        put(con, "/lib/boards/esp32/wifi.mpy", compiled(ROOT / "boards/esp32/wifi.py", Path(tmp)))
    con.run(KEEPER % (ssid, key))


def test_keeper_backs_off_on_a_wrong_password(sim_node):
    with Console(sim_node.port) as con, SimWifi.connect(sim_node.name, sim_node.home) as air:
        con.raw()
        air.ap("lab", "secret")
        install_keeper(con, "lab", "not-it")
        log = json.loads(con.run("print(json.dumps(run(14000, lambda k: k.failures >= 2 and "
                                 "k.state == 'connecting')))", timeout=30))
        info = json.loads(con.run("print(json.dumps(k.info()))"))
        assert "not-it" not in con.run("print(repr(k), k.info())")  # never the password
    states = [s for _, s, _, _ in log]
    assert states == ["connecting", "wrong password", "connecting", "wrong password", "connecting"]
    t = [t for t, _, _, _ in log]
    assert 4000 <= t[1] <= 6000                     # ESP32 names it only after the driver's 2nd try
    assert 900 <= t[2] - t[1] <= 1300               # back-off 1 s
    assert 1900 <= t[4] - t[3] <= 2300              # then 2 s
    assert info["failures"] == 2 and info["attempts"] == 3 and info["backoff_ms"] == 4000
    assert info["connects"] == 0 and info["reason"] == "wrong password"
    assert max(took for _, _, _, took in log) < 20   # poll() never blocks


def test_keeper_reconnects_after_a_drop_and_udp_works_again(sim_node):
    port = free_port()
    ip = sim_node.node.config()["ip"]
    with Console(sim_node.port) as con, SimWifi.connect(sim_node.name, sim_node.home) as air, \
            host_socket() as h:
        con.raw()
        air.ap("lab", "secret")
        install_keeper(con, "lab", "secret")
        log = json.loads(con.run("print(json.dumps(run(5000, lambda k: k.state == 'connected')))"))
        assert log[-1][1] == "connected"
        # the HAL's UDP on the keeper's interface (the board.py change: wifi_keeper())
        con.run("from boards.sim.board import Board\nb = Board()\nb._wlan = k.wlan\nb._radio_on()\n"
                f"d = b.udp({port})\nbuf = bytearray(64)\n"
                "def recv(ms=1000):\n    t0 = time.ticks_ms()\n"
                "    while time.ticks_diff(time.ticks_ms(), t0) < ms:\n        k.poll()\n"
                "        r = d.recv_into(buf)\n        if r:\n            return [bytes(buf[:r[0]]).decode(), r[1]]\n"
                "        time.sleep_ms(10)\n"
                "def send(data, addr):\n    try:\n        return d.sendto(data, addr)\n"
                "    except OSError as e:\n        return 'OSError %d' % e.errno\n")
        hp = h.getsockname()[1]
        h.sendto(b"before", (ip, port))
        assert json.loads(con.run("print(json.dumps(recv()))"))[0] == "before"

        air.drop(mode="deauth")  # the AP goes away and says so
        out = json.loads(con.run("log = run(3000, lambda k: k.state == 'no access point')\n"
                                 "import errno\n"
                                 f"print(json.dumps([log, k.drops, k.wlan.isconnected(), send(b'lost', ('127.0.0.1', {hp})),"
                                 " errno.EHOSTUNREACH]))"))
        log, drops, connected, sent, unreach = out
        assert [s for _, s, _, _ in log] == ["connecting", "no access point"]  # the drop, then ESP32's 201
        # the socket says EHOSTUNREACH; the HAL's Datagram counts it as a lost datagram
        # (sendto -> False) rather than raising into the node's service
        assert drops == 1 and connected is False and sent is False
        h.sendto(b"while down", (ip, port))  # lost: the node is off the air
        assert json.loads(con.run("print(json.dumps(recv(300)))")) is None

        air.restore()
        log = json.loads(con.run("print(json.dumps(run(15000, lambda k: k.state == 'connected')))", timeout=30))
        assert log[-1][1] == "connected"
        info = json.loads(con.run("print(json.dumps(k.info()))"))
        assert info["connects"] == 2 and info["drops"] == 1 and info["ip"] == ip
        h.sendto(b"after", (ip, port))
        got = json.loads(con.run(f"r = recv()\nprint(json.dumps([r, send(b'pong', ('127.0.0.1', {hp}))]))"))
        assert got[0][0] == "after"                 # "while down" was never delivered
        assert got[1] is True
        h.settimeout(5)
        assert h.recvfrom(100) == (b"pong", (ip, port))


def test_a_vanished_ap_is_noticed_after_the_beacon_timeout(sim_node):
    """mode "beacon": the station still thinks it is connected for 6 s, and what it sends
    meanwhile is lost (ESP-IDF: station inactive time, default 6 s)."""
    port = free_port()
    with Console(sim_node.port) as con, SimWifi.connect(sim_node.name, sim_node.home) as air, \
            host_socket() as h:
        con.raw()
        hp = h.getsockname()[1]
        con.run("import network, time, socket, json\nw = network.WLAN(network.STA_IF)\nw.active(True)\n"
                "w.connect('lab', 'secret')\nwhile not w.isconnected():\n    time.sleep_ms(20)\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"a = socket.getaddrinfo('127.0.0.1', {hp})[0][-1]\n")
        air.drop()
        out = json.loads(con.run(
            "t0 = time.ticks_ms()\nsent = s.sendto(b'into the void', a)\n"
            "while w.isconnected():\n    time.sleep_ms(20)\n"
            "print(json.dumps([sent, time.ticks_diff(time.ticks_ms(), t0), w.status()]))", timeout=20))
        sent, lost_after, status = out
        assert sent == len(b"into the void") and 5500 <= lost_after <= 7000
        assert status == 1001  # reason 200 BEACON_TIMEOUT, unnamed: still "connecting"
        h.settimeout(0.3)
        with pytest.raises(socket.timeout):
            h.recvfrom(100)
