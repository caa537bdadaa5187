"""One thread for every session of a process (cyphy.hub; issue 16 item 2).

Real sessions (cyphy.client.Session over UdpLink) with the swarm's nodes (the firmware's
own endpoint on real UDP sockets): many sessions add no threads, each gets its telemetry
and its answers, and a link closed behind the hub's back does not blind the next one."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from cyphy import codec as P
from cyphy.client import Session
from cyphy.hub import Hub
from cyphy.links import UdpLink
from cyphy.sim.swarm import Swarm

KEY = bytes(range(7, 39))


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYPHY_HOME", str(tmp_path / "home"))


def _open_all(urls: list[str], hub: Hub) -> list[Session]:
    out = []
    for url in urls:
        host, port = url.removeprefix("udp://").rsplit(":", 1) if url.count(":") > 1 \
            else (url.removeprefix("udp://"), str(P.UDP_PORT))
        s = Session(UdpLink(host, int(port)), P.Key(KEY), hub=hub)
        out.append(s)
    for s in out:
        s.open()
    return out


def test_300_sessions_in_one_process_add_no_threads_and_lose_nothing() -> None:
    hub = Hub()
    with Swarm(300, key=KEY) as sw:
        threads0 = threading.active_count()
        sessions = _open_all(sw.urls, hub)
        try:
            # heartbeats and reading: the hub's one thread (its pool is for work that may
            # block, e.g. a serial link's send; UDP sessions need none of it)
            assert threading.active_count() <= threads0 + 1, threading.enumerate()
            for s in sessions:
                s.subscribe(100)
            time.sleep(0.5)
            for s in sessions:
                while not s.telemetry.empty():
                    s.telemetry.get_nowait()
            f0 = {id(s): s.stats.frames for s in sessions}
            time.sleep(3.0)
            got = [s.telemetry.qsize() for s in sessions]
            assert sum(s.stats.lost for s in sessions) == 0
            assert sum(s.stats.malformed + s.stats.bad_tag for s in sessions) == 0
            # 10 Hz for 3 s: 30 samples each (a busy host can make the swarm skip a pass)
            assert min(got) >= 27 - sw.skipped, (min(got), sw.skipped)
            assert all(s.stats.frames > f0[id(s)] for s in sessions)
            # requests still get their answers among 3000 frames/s
            assert all(s.read("oven.setpoint") is not None for s in sessions[::30])
        finally:
            for s in sessions:
                s.close()
        assert not hub._sel.get_map().keys() - {hub._wake_r.fileno()}   # all unwatched


def test_a_link_closed_behind_the_hubs_back_does_not_blind_the_next_one() -> None:
    # A caller closed a link without closing its session: the kernel gives the fd number
    # to the next socket, which the hub must then watch (it used to find the number taken).
    hub = Hub()
    with Swarm(1, key=KEY) as sw:
        host = sw.nodes[0].addr[0]
        first = Session(UdpLink(host, sw.nodes[0].addr[1]), P.Key(KEY), hub=hub)
        first.open()
        fd = first.link.fileno()
        first.link.close()                       # no first.close(): the hub still has it
        link = UdpLink(host, sw.nodes[0].addr[1])
        if link.fileno() != fd:                  # make the reuse happen for sure
            link.sock.close()
            s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            assert s2.fileno() == fd
            s2.close()
            link = UdpLink(host, sw.nodes[0].addr[1])
        assert link.fileno() == fd
        with Session(link, P.Key(KEY), hub=hub) as second:
            assert second.open().name == sw.nodes[0].name
            assert second.read("oven.setpoint") is not None
        first.close()


def test_a_callback_that_raises_does_not_stop_the_hub() -> None:
    hub = Hub()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    class Pair:
        def fileno(self) -> int:
            return a.fileno()

        def poll(self) -> list[bytes]:
            out = []
            while True:
                try:
                    out.append(a.recv(100, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    return out

        def describe(self) -> str:
            return "socketpair"

    got: list[bytes] = []

    def on_frame(data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("a bug in a listener")
        got.append(data)

    w = hub.watch(Pair(), on_frame)
    for d in (b"one", b"boom", b"two"):
        b.send(d)
    fired = threading.Event()
    hub.call_later(0.05, fired.set)
    assert fired.wait(2)
    end = time.monotonic() + 2
    while len(got) < 2 and time.monotonic() < end:
        time.sleep(0.01)
    assert got == [b"one", b"two"]
    w.close()
    a.close()
    b.close()
