"""Issue 13, finding 3: the host refuses an unauthenticated node whenever it holds a key for
that node's name, from any source (a key given, $CYPHY_KEY, --key-file, the key store), unless
the user asks for an unprovisioned node (--unprovisioned / unprovisioned=True); a malformed
READ answer is one clear line, never a traceback. Against a fake node on a real UDP socket."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

import cyphy
from cyphy import codec as P
from cyphy import keys
from cyphy.api import ProtocolError

KEY_HEX = "3e" * 32
KEY = P.key_from_hex(KEY_HEX)


class FakeNode:
    """A fake cyphy node on a real UDP socket: it answers HELLO_REQ with a HELLO (plain CRC,
    or authenticated with a key), ACKs requests with what on_request returns, and records
    every frame a host sent it, with the time it arrived."""

    def __init__(self, name: str = "oven1", key: P.Key | None = None, loops: tuple[str, ...] = ("oven",),
                 comms_timeout_ms: int | None = 0,
                 on_request: Callable[[int, bytes], bytes | None] | None = None,
                 time_answer: bytes = struct.pack("<I", 1234)) -> None:
        self.name = name
        self.time_answer = time_answer  # what TIME gets (cyphy.connect() sends it at once)
        self.key = key
        self.loops = list(loops)
        self.comms_timeout_ms = comms_timeout_ms
        self.on_request = on_request or (lambda ftype, payload: b"")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = f"udp://127.0.0.1:{self.port}"
        self.received: list[tuple[float, P.Frame]] = []
        self.epoch = os.urandom(4)
        self.seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __enter__(self) -> "FakeNode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def types(self) -> list[int]:
        return [f.type for _, f in self.received]

    def _send(self, ftype: int, payload: bytes, to: tuple[str, int]) -> None:
        self.seq += 1
        self.sock.sendto(P.build(0, ftype, 7, self.seq & 0xFFFF, payload, key=self.key,
                                 epoch=self.epoch, roc=self.seq >> 16), to)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            try:
                f = P.parse(data)
            except P.ProtoError:
                continue
            self.received.append((time.monotonic(), f))
            if f.type == P.HELLO_REQ:
                nonce = P.parse_payload(P.HELLO_REQ, f.payload)["nonce"]
                self.epoch = os.urandom(4)
                self.seq = 0
                caps = P.CAP_UDP | (P.CAP_AUTH if self.key is not None else 0)
                body = P.hello(self.epoch, nonce, 0, caps, b"\x01\x02\x03\x04\x05\x06", self.loops,
                               self.name, "fake", "0.0", self.comms_timeout_ms or 0)
                if self.comms_timeout_ms is None:
                    body = body[:-4]  # a node older than protocol 1.1: no comms timeout
                self.sock.sendto(P.build(0, P.HELLO, 7, 0, body, key=self.key, epoch=self.epoch), src)
            elif f.type in (P.COMMAND, P.READ, P.TIME):
                result = (self.time_answer if f.type == P.TIME
                          else self.on_request(f.type, bytes(f.payload)))
                if result is not None:
                    self._send(P.ACK, P.ack(P.u48(f.seq), result), src)


def read_answer(text: bytes, total: int | None = None, piece: int = 200) -> Callable[[int, bytes], bytes]:
    """on_request for READ: the pieces of `text`, with `total` as the length it announces."""
    def on(ftype: int, payload: bytes) -> bytes:
        if ftype != P.READ:
            return b""
        off = struct.unpack_from("<H", payload)[0]
        return struct.pack("<H", len(text) if total is None else total) + text[off:off + piece]
    return on


def cyphy_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cyphy")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def one_line(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture
def home(cyphy_home, monkeypatch):
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)
    return cyphy_home


def test_the_store_key_refuses_an_unauthenticated_impostor(home):
    """The finding: a fake "oven1" without a key, while the key store holds oven1's key."""
    keys.save_key("oven1", KEY_HEX)
    with FakeNode("oven1", on_request=read_answer(b"60.0")) as fake:
        with pytest.raises(ProtocolError, match="unauthenticated.*holds a key.*--unprovisioned"):
            cyphy.connect(fake.url)
        p = cyphy_cli("set", fake.url, "oven.setpoint=60")
        assert p.returncode == 1
        line = one_line(p)
        assert "oven1" in line and "--unprovisioned" in line, line
        p = cyphy_cli("get", fake.url, "oven.setpoint")
        assert p.returncode == 1 and "--unprovisioned" in one_line(p) and p.stdout == ""
        assert P.COMMAND not in fake.types() and P.READ not in fake.types()
        assert KEY_HEX not in p.stderr


def test_every_key_source_refuses_it(home, tmp_path):
    kf = tmp_path / "k.hex"
    kf.write_text(KEY_HEX + "\n")
    with FakeNode("oven1") as fake:
        for kw in ({"key": KEY_HEX}, {"key_file": str(kf)}):
            with pytest.raises(ProtocolError, match="--unprovisioned"):
                cyphy.connect(fake.url, **kw)
        assert cyphy_cli("set", fake.url, "oven.setpoint=60", "--key-file", str(kf)).returncode == 1
        assert cyphy_cli("set", fake.url, "oven.setpoint=60", env={"CYPHY_KEY": KEY_HEX}).returncode == 1
        assert cyphy_cli("set", fake.url, "oven.setpoint=60", env={"CYPHY_KEY_FILE": str(kf)}).returncode == 1
        assert P.COMMAND not in fake.types()


def test_unprovisioned_is_asked_for_explicitly(home):
    keys.save_key("oven1", KEY_HEX)
    with FakeNode("oven1", on_request=read_answer(b"60.0")) as fake:
        with cyphy.connect(fake.url, unprovisioned=True) as n:
            assert n.name == "oven1" and not n.hello.authenticated
            n.set("oven.setpoint", 60)
            assert n.get("oven.setpoint") == 60.0
        p = cyphy_cli("get", fake.url, "oven.setpoint", "--unprovisioned")
        assert p.returncode == 0 and p.stdout.strip() == "60", p.stderr   # (no units: a fake node)
        p = cyphy_cli("set", fake.url, "oven.setpoint=61", "--unprovisioned")
        assert p.returncode == 0, p.stderr
    # a node whose name this host holds no key for is an unprovisioned node: no option needed
    with FakeNode("fresh-node", on_request=read_answer(b"1")) as fake:
        with cyphy.connect(fake.url) as n:
            assert n.get("oven.setpoint") == 1


def test_an_authenticated_node_still_works_with_the_store_key(home):
    keys.save_key("oven1", KEY_HEX)
    with FakeNode("oven1", key=KEY, on_request=read_answer(b'{"a": 1}')) as fake:
        with cyphy.connect(fake.url) as n:
            assert n.hello.authenticated and n.get("oven") == {"a": 1}
        # --unprovisioned only allows an unauthenticated node: an authenticated one still
        # has to prove it holds the key
        with cyphy.connect(fake.url, unprovisioned=True) as n:
            assert n.hello.authenticated
    with FakeNode("oven1", key=P.key_from_hex("77" * 32)) as fake:
        with pytest.raises(ProtocolError, match="does not verify"):
            cyphy.connect(fake.url, unprovisioned=True)


@pytest.mark.parametrize("on_request, what", [
    (read_answer(b"{not json"), "not valid JSON"),
    (read_answer(b"\xff\xfe\xfd"), "not valid JSON"),
    (read_answer(b"[1, 2, 3]", total=500), "truncated"),        # stops short of its total
    (read_answer(b"[1, 2, 3]", total=4), "longer than"),        # more text than its total
    (lambda t, p: b"\x05", "too short"),                         # no total at all
    (lambda t, p: b"", "too short"),
], ids=["not-json", "not-utf8", "truncated", "over-total", "one-byte", "empty"])
def test_a_malformed_read_answer_is_one_clear_line(home, on_request, what):
    keys.save_key("oven1", KEY_HEX)
    with FakeNode("oven1", key=KEY, on_request=on_request) as fake:
        with cyphy.connect(fake.url) as n:
            with pytest.raises(ProtocolError, match=what):
                n.get("oven")
        p = cyphy_cli("get", fake.url, "oven")
        assert p.returncode == 1 and p.stdout == ""
        line = one_line(p)
        assert "READ" in line and "'oven'" in line and what in line, line


def test_a_total_that_changes_between_pieces_is_refused(home):
    text = json.dumps(list(range(200))).encode()
    calls = []

    def on(ftype: int, payload: bytes) -> bytes:
        off = struct.unpack_from("<H", payload)[0]
        calls.append(off)
        return struct.pack("<H", len(text) + len(calls)) + text[off:off + 200]

    keys.save_key("oven1", KEY_HEX)
    with FakeNode("oven1", key=KEY, on_request=on) as fake, cyphy.connect(fake.url) as n:
        with pytest.raises(ProtocolError, match="total changed"):
            n.get("stats")


def test_discovery_judges_nodes_by_the_store_keys_too(home):
    from cyphy.discovery import discover_udp

    def found(fake: FakeNode):
        (f,) = discover_udp(timeout=0.3, port=fake.port, broadcasts=("127.0.0.1",))
        return f

    with FakeNode("oven1") as fake:
        assert found(fake).verified is None           # no key held for oven1
        keys.save_key("oven1", KEY_HEX)
        f = found(fake)
        assert f.verified is False and not f.authenticated   # an impostor, or a node that lost its key
    with FakeNode("oven1", key=KEY) as fake:
        assert found(fake).verified is True
    with FakeNode("oven1", key=P.key_from_hex("99" * 32)) as fake:
        assert found(fake).verified is False


def test_malformed_subscribe_and_time_answers_are_one_line(home):
    keys.save_key("oven1", KEY_HEX)
    with FakeNode("oven1", key=KEY, on_request=lambda t, p: b"\x01") as fake:
        with cyphy.connect(fake.url) as n:
            with pytest.raises(ProtocolError, match="SUBSCRIBE is malformed"):
                n.telemetry(period_ms=100)
        p = cyphy_cli("monitor", fake.url, "--seconds", "1")
        assert p.returncode == 1 and "SUBSCRIBE is malformed" in one_line(p)
    # connect() tells the node the time at once: a malformed answer is one clear line
    with FakeNode("oven1", key=KEY, time_answer=b"\x01") as fake:
        with pytest.raises(ProtocolError, match="TIME is malformed"):
            cyphy.connect(fake.url)
        p = cyphy_cli("get", fake.url, "info")
        assert p.returncode == 1 and "TIME is malformed" in one_line(p)
