"""The swarm (cyphy.sim.swarm): synthetic nodes that speak the real protocol over UDP.

Real sockets throughout: the host's own client (cyphy.api.connect, cyphy.client.Session)
and, where a test needs frames by hand (a resend, a replay, a forgery) or many nodes at
once, `Host`: plain host sessions over one socket, made of cyphy_node.hostside (the host
side every cyphy host uses) and the codec."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import pytest

from cyphy import api
from cyphy import codec as P
from cyphy.client import ProtocolError, Session
from cyphy.links import open_link
from cyphy.sim.swarm import Swarm, SwarmError, _FastKey, _addresses
from cyphy_node import hostside

KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(101, 133))
SEQ_EPOCH = 1_420_070_400 * 100_000
F_COMMS_STATUS = 4 << P.ST_FAULT_SHIFT


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYPHY_HOME", str(tmp_path / "home"))   # an empty key store
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "swarm.key"
    p.write_text(KEY.hex() + "\n")
    return p


@pytest.fixture
def swarm() -> Iterator[Swarm]:
    with Swarm(3, key=KEY) as s:
        yield s


class Host:
    """Host sessions with many nodes over one UDP socket, frame by frame."""

    def __init__(self, addrs: list[tuple[str, int]], key: bytes | None = KEY) -> None:
        self.key = None if key is None else _FastKey(key)
        self.addrs = addrs
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.sides = {a: hostside.HostSide() for a in addrs}
        self.samples: dict = defaultdict(int)
        self.frames: dict = defaultdict(int)     # authentic, fresh frames of the nodes
        self.lost: dict = defaultdict(int)
        self.bad: dict = defaultdict(int)    # BAD_TAG or REPLAYED frames
        self.t_ms: dict = defaultdict(list)
        self.loop0: dict = defaultdict(list)    # (setpoint, measurement, output, status)
        self.answers: dict = {}              # (addr, request seq) -> [answer frames]
        self._last = 0

    def close(self) -> None:
        self.sel.close()
        self.sock.close()

    def seq(self) -> int:
        self._last = max(time.time_ns() // 10_000 - SEQ_EPOCH, self._last + 1)
        return self._last

    def open(self, timeout: float = 5.0) -> None:
        """HELLO with every node (resent to the ones that have not answered)."""
        waiting = {a: os.urandom(P.NONCE_LEN) for a in self.addrs}
        deadline = time.monotonic() + timeout
        while waiting:
            assert time.monotonic() < deadline, f"{len(waiting)} node(s) never said HELLO"
            for a, nonce in waiting.items():
                self.sock.sendto(P.build(P.HOST | P.LONG, P.HELLO_REQ, P.NODE_ANY, self.seq(),
                                         P.hello_req(nonce, P.HELLO_REQ_PAD)), a)
            end = time.monotonic() + 0.5
            while waiting and time.monotonic() < end:
                for data, a in self.recv(0.05):
                    f = P.parse(data)
                    if f.type != P.HELLO or a not in waiting:
                        continue
                    h = P.parse_hello(f.payload)
                    if h["nonce"] != waiting[a]:
                        continue
                    k, why = hostside.check_hello(f, h, [self.key] if self.key else [])
                    assert why is None, why
                    self.sides[a].start(f, h, k)
                    del waiting[a]

    def recv(self, timeout: float) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        if self.sel.select(timeout):
            while True:
                try:
                    out.append(self.sock.recvfrom(2048))
                except BlockingIOError:
                    break
        return out

    def send(self, a: tuple[str, int], ftype: int, payload: bytes, seq: int | None = None) -> bytes:
        frame = self.sides[a].frame(ftype, self.seq() if seq is None else seq, payload)
        self.sock.sendto(frame, a)
        return frame

    def request_all(self, ftype: int, payload: bytes, timeout: float = 5.0) -> dict:
        """Send one request to every node until each answers; {addr: (type, body)}."""
        seqs = {a: self.seq() for a in self.addrs}
        got: dict = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(seqs):
            assert time.monotonic() < deadline, f"{len(seqs) - len(got)} node(s) never answered"
            for a, s in seqs.items():
                if a not in got:
                    self.send(a, ftype, payload, s)
            end = time.monotonic() + 0.3
            while len(got) < len(seqs) and time.monotonic() < end:
                self.pump(0.05, got)
        return got

    def pump(self, timeout: float, got: dict | None = None) -> None:
        for data, a in self.recv(timeout):
            side = self.sides.get(a)
            if side is None:
                continue
            f = P.parse(data)
            gap = side.accept(f)
            if gap == hostside.NOT_OURS:
                continue
            if gap == hostside.REPLAYED and f.type in (P.ACK, P.NACK):
                ref = P.parse_payload(f.type, f.payload)["ref"]
                if data in self.answers.get((a, ref), ()):
                    self.answers[(a, ref)].append(data)   # a resent request's answer, again
                    continue
            if gap in (hostside.BAD_TAG, hostside.REPLAYED):
                self.bad[a] += 1
                continue
            if gap > 0:
                self.lost[a] += gap
            self.frames[a] += 1
            body = P.parse_payload(f.type, f.payload, len(side.loops))
            if f.type == P.TELEMETRY:
                n = len(body["samples"])
                self.samples[a] += n
                self.t_ms[a].append(body["t_ms"])
                self.loop0[a].extend(s[0] for s in body["samples"])
            elif f.type in (P.ACK, P.NACK):
                self.answers.setdefault((a, body["ref"]), []).append(data)
                if got is not None:
                    got[a] = (f.type, body)

    def run(self, seconds: float, heartbeat_s: float = 0.5) -> None:
        end = time.monotonic() + seconds
        beat = 0.0
        while (now := time.monotonic()) < end:
            if now >= beat:
                for a in self.addrs:
                    self.send(a, P.HEARTBEAT, b"")
                beat = now + heartbeat_s
            self.pump(min(0.05, end - now))


@pytest.fixture
def host_factory() -> Iterator:
    made: list[Host] = []

    def make(addrs: list[tuple[str, int]], key: bytes | None = KEY) -> Host:
        h = Host(addrs, key)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# ---------------------------------------------------------------- the host's own client

def test_a_session_opens_and_reads_info_state_and_stats(swarm: Swarm, key_file: Path) -> None:
    with api.connect(swarm.urls[1], key_file=str(key_file)) as node:
        assert node.name == swarm.names[1] == "swarm-0002"
        assert node.loops == ["oven"]
        assert node.hello.verified and node.hello.authenticated
        info = node.get("info")
        assert info["name"] == "swarm-0002" and info["node_id"] == 2
        assert info["units"] == {"oven": {"measurement": "degC", "output": "%"}}
        st = node.get("oven")
        assert st["mode"] == "auto" and st["kp"] == 4.9 and 40 <= st["setpoint"] <= 80
        assert 10 <= node.get("oven.measurement") <= 149
        time.sleep(0.3)
        stats = node.get("stats")["oven"]
        assert stats["rate_hz"] == 10 and stats["ticks"] >= 1
        assert stats["jitter_p99_us"] is not None
        assert node.get("faults") == []
    assert swarm.nodes[1].counters["bad_tag"] == 0


def test_telemetry_comes_at_the_period_asked_and_the_values_move(swarm: Swarm, key_file: Path) -> None:
    with api.connect(swarm.urls[0], key_file=str(key_file)) as node:
        assert node.session.subscribe(20) == 100        # never faster than the 10 Hz loop
        assert node.session.subscribe(200) == 200
        got = []
        t0 = time.monotonic()
        for sample in node.session.samples(timeout=2):
            got.append(sample)
            if time.monotonic() - t0 >= 2.0:
                break
        assert 9 <= len(got) <= 12                      # 5 a second
        steps = {(b["t_ms"] - a["t_ms"]) % (1 << 30) for a, b in zip(got, got[1:])}
        assert steps <= {200}, steps
        ys = [s["loops"]["oven"]["measurement"] for s in got]
        assert len(set(ys)) > 1                          # a live plant, not a constant
        assert node.link_stats.lost == 0


def test_set_is_applied_once_and_a_resend_is_answered_from_the_cache(
        swarm: Swarm, key_file: Path, host_factory) -> None:
    with api.connect(swarm.urls[2], key_file=str(key_file)) as node:
        node.set("oven.setpoint", 70)
        node.set_many([("oven.kp", 2.5), ("oven.ki", 0.1)], save=True)
        st = node.get("oven")
        assert (st["setpoint"], st["kp"], st["ki"]) == (70.0, 2.5, pytest.approx(0.1))
        assert st["sources"]["kp"] == "saved" and st["sources"]["setpoint"] == "runtime"
        with pytest.raises(api.CommandRejected, match="outside 10.0..149.0 degC"):
            node.set("oven.setpoint", 500)
        with pytest.raises(api.CommandRejected, match="mode is not persisted"):
            node.set_many([("oven.mode", "manual")], save=True)
    assert swarm.nodes[2].sets_applied == 2

    n = swarm.nodes[0]
    h = host_factory([n.addr])
    h.open()
    seq = h.seq()
    set_60 = P.cmd_set_many([(0, P.KEYS.index("setpoint"), 60.0)])
    for _ in range(3):                                  # the same frame, resent
        h.send(n.addr, P.COMMAND, set_60, seq)
        h.pump(0.2)
    answers = h.answers[(n.addr, seq)]
    assert len(answers) == 3 and len(set(answers)) == 1  # one answer, sent again as it was
    assert n.sets_applied == 1 and n.counters["duplicate"] == 2
    assert n.state()["oven"]["setpoint"] == 60.0


def test_replayed_and_forged_frames_change_nothing(swarm: Swarm, host_factory) -> None:
    n = swarm.nodes[0]
    h = host_factory([n.addr])
    h.open()
    old = h.send(n.addr, P.COMMAND, P.cmd_set_many([(0, 0, 55.0)]))
    h.pump(0.3)
    h.request_all(P.COMMAND, P.cmd_set_many([(0, 0, 45.0)]))
    assert n.sets_applied == 2 and n.state()["oven"]["setpoint"] == 45.0

    h.sock.sendto(old, n.addr)                           # a replay in the same session:
    h.pump(0.3)                                          # answered from the cache, not applied
    assert n.state()["oven"]["setpoint"] == 45.0 and n.sets_applied == 2
    assert n.counters["duplicate"] == 1

    h.open()                                             # a new session (new EPOCH) here,
    h.send(n.addr, P.HEARTBEAT, b"")                     # authenticated: the old one is over
    h.pump(0.1)
    before = dict(n.counters)
    h.sock.sendto(old, n.addr)                           # the old session's frame: bad tag
    forged = hostside.HostSide()
    forged.start(P.parse(old), {"epoch": h.sides[n.addr].epoch, "roc": 0, "loops": ["oven"]},
                 _FastKey(OTHER_KEY))
    h.sock.sendto(forged.frame(P.COMMAND, h.seq(), P.cmd_set_many([(0, 0, 99.0)])), n.addr)
    plain = P.build(P.HOST | P.LONG, P.COMMAND, n.node_id, h.seq(), P.cmd_set_many([(0, 0, 98.0)]))
    h.sock.sendto(plain, n.addr)                         # no tag at all (CRC)
    answered = len(h.answers)
    deadline = time.monotonic() + 10                     # all three seen (a loaded machine
    while n.counters["bad_tag"] < before["bad_tag"] + 3 and time.monotonic() < deadline:
        h.pump(0.05)                                     # may take a while), then time for
    h.pump(0.3)                                          # an answer to come, if any did
    assert len(h.answers) == answered                    # none of them answered
    assert n.state()["oven"]["setpoint"] == 45.0 and n.sets_applied == 2
    assert n.counters["bad_tag"] == before["bad_tag"] + 3
    assert n.counters["applied"] == before["applied"]


def test_a_wrong_key_or_no_key_is_refused(swarm: Swarm) -> None:
    for key, said in ((P.Key(OTHER_KEY), "does not verify with this key"),
                      (None, "authenticates its frames and no key for it was found")):
        session = Session(open_link(swarm.urls[0]), key)
        try:
            with pytest.raises(ProtocolError, match=said):
                session.open()
        finally:
            session.close()
    assert swarm.nodes[0].sets_applied == 0
    assert swarm.nodes[0].counters["applied"] == 0


def test_unprovisioned_nodes_use_crc_frames() -> None:
    with Swarm(1, key=None) as sw:
        with api.connect(sw.urls[0]) as node:
            assert not node.hello.authenticated
            node.set("oven.mode", "manual")
            node.set("oven.output", 30)
            time.sleep(0.25)
            st = node.get("oven")
            assert st["mode"] == "manual" and st["output"] == 30.0


def test_silence_trips_the_comms_timeout_and_ends_the_session(host_factory) -> None:
    with Swarm(1, key=KEY, comms_timeout_ms=300) as sw:
        n = sw.nodes[0]
        h = host_factory([n.addr])
        h.open()
        assert h.sides[n.addr].loops == ["oven"]
        h.request_all(P.COMMAND, P.cmd_subscribe(100, 1, 0))
        h.run(1.0, heartbeat_s=0.05)                     # heartbeats: no fault
        assert n.state()["oven"]["faults"] == []
        assert not any(st & F_COMMS_STATUS for *_, st in h.loop0[n.addr])
        start = len(h.loop0[n.addr])
        t_silent = time.monotonic()
        while time.monotonic() - t_silent < 1.0:         # silent: comms lost after 300 ms
            h.pump(0.05)
        assert n.state()["oven"]["mode"] == "failsafe"
        assert n.state()["oven"]["output"] == 0.0
        late = h.loop0[n.addr][start:]
        assert late and late[-1][3] & F_COMMS_STATUS and late[-1][2] == 0
        assert n.sessions == 1
        while n.sessions and time.monotonic() - t_silent < 7.0:
            h.pump(0.1)                                  # the session ends after 5 s
        waited = time.monotonic() - t_silent
        assert n.sessions == 0 and 4.5 <= waited <= 6.5, waited
        h.pump(0.2)                  # the frames of the session's last pass, sent before it ended
        count = h.samples[n.addr]
        h.pump(0.5)
        assert h.samples[n.addr] == count                # no telemetry for a gone host


# ---------------------------------------------------------------- scale and the command

def test_200_nodes_at_10_hz_for_3_s_lose_nothing(host_factory) -> None:
    with Swarm(200, key=KEY) as sw:
        h = host_factory([nd.addr for nd in sw.nodes])
        h.open()
        acks = h.request_all(P.COMMAND, P.cmd_subscribe(100, 1, 0))
        assert all(t == P.ACK for t, _ in acks.values())
        h.run(0.5)                                       # settle
        before = dict(h.samples)
        h.run(3.0)
        got = {a: h.samples[a] - before.get(a, 0) for a in h.addrs}
        assert sum(h.lost.values()) == 0 and sum(h.bad.values()) == 0   # every frame sent came
        # 30 samples a node in 3 s; a host that keeps the swarm's thread off the CPU for over
        # a period makes it skip passes (counted), never lose or repeat a sample. How many it
        # skips depends on the machine's load (make bench measures the rate): the test holds
        # the accounting, not a speed, and only asks that most passes ran.
        assert sw.skipped < 200 * 30 // 2, f"{sw.skipped} passes skipped: the test measured little"
        assert 15 <= min(got.values()) and max(got.values()) <= 32, (min(got.values()), max(got.values()))
        assert sum(got.values()) >= 200 * 30 - 200 - sw.skipped
        assert sum(nd.port.send_errors for nd in sw.nodes) == 0


def test_the_command_runs_until_sigterm(key_file: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "cyphy.sim.swarm", "--nodes", "3",
                          "--key-file", str(key_file), "--name-prefix", "cli"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(p.stdout.readline())
        assert ready["ready"] and ready["nodes"] == 3 and len(ready["urls"]) == 3
        assert ready["first"] == ready["urls"][0] and ready["names"] == ["cli-0001", "cli-0003"]
        with api.connect(ready["last"], key_file=str(key_file)) as node:
            node.set("oven.setpoint", 66)
            assert node.name == "cli-0003" and node.get("oven.setpoint") == 66.0
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    totals = json.loads(out.strip().splitlines()[-1])
    assert totals["stopped_by"] == "SIGTERM" and totals["sets_applied"] == 1


@pytest.mark.parametrize("args, said", [
    (["--nodes", "0", "--no-key"], "1 to 50000 nodes"),
    (["--nodes", "2"], "no key: give --key-file"),
    (["--nodes", "2", "--key-file", "/nonexistent/k"], "key file /nonexistent/k"),
    (["--nodes", "2", "--no-key", "--base-ip", "10.0.0.1"], "leave 127.0.0.0/8"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], said: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CYPHY_KEY", "CYPHY_KEY_FILE")}
    r = subprocess.run([sys.executable, "-m", "cyphy.sim.swarm", *args],
                       capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_two_swarms_cannot_share_addresses() -> None:
    with Swarm(2, key=KEY) as one:                       # a free block of its own
        second = one.nodes[1].addr[0]
        with pytest.raises(SwarmError, match=f"cannot bind 2 nodes' UDP port 5477 from "
                                             f"{second}: Address already in use"):
            Swarm(2, key=KEY, base_ip=second).start()
        with Swarm(2, key=KEY) as two:                   # no base given: another block
            assert not {n.addr for n in one.nodes} & {n.addr for n in two.nodes}


def test_the_fast_key_tags_as_the_firmware_key() -> None:
    fast, slow = _FastKey(KEY), P.Key(KEY)
    for roc in (0, 1, 0x1234, 0xFFFF):
        body = os.urandom(40)
        assert fast.tag(b"abcd", roc, body) == slow.tag(b"abcd", roc, body)
    assert repr(fast) == "<Key (secret)>"
    assert _addresses("127.252.0.254", 3) == ["127.252.0.254", "127.252.1.1", "127.252.1.2"]


def test_the_swarm_seals_and_samples_as_the_firmware_endpoint() -> None:
    """_Endpoint's struct writers give the bytes of comms.Endpoint's own, across a ROC
    rollover (the tag covers the ROC)."""
    from cyphy.sim import swarm as S

    with Swarm(1, key=KEY) as sw:
        pass                                             # stopped: nothing moves now
    ep = sw.nodes[0].endpoint
    firmware_seal = S._comms.Endpoint._seal
    a = S._comms.Session(None, None, bytes(8))
    b = S._comms.Session(None, None, bytes(8))
    b.epoch = a.epoch
    a.seq = b.seq = 0xFFFE
    for payload in (b"", b"x" * 40, bytes(range(200))):
        for _ in range(2):
            assert ep._seal(a, P.TELEMETRY, payload) == firmware_seal(ep, b, P.TELEMETRY, payload)
    assert (a.seq, a.roc) == (b.seq, b.roc) == (0x0004, 1)
    lp = ep.loops[0]
    S._comms.Endpoint._put_all(ep, 4)
    firmware_bytes = bytes(ep._fill[4:20])
    ep._fill[4:20] = bytes(16)
    ep._put_all(4)
    assert bytes(ep._fill[4:20]) == firmware_bytes
    assert P.get_i32(firmware_bytes, 0) == lp.pid.setpoint and P.get_i32(firmware_bytes, 4) == lp.y
