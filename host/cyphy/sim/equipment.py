"""The sim board's test equipment, supervisor side: the control socket and the serial line's faults.

A running node's supervisor listens on `$CYPHY_HOME/sim/NAME/control.sock` (a Unix socket,
mode 0600). Clients send one JSON object per line and get one JSON object per line back,
in order: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`; a request's "id", if
any, comes back in its answer. docs/boards.md ("Test equipment") describes the requests;
`cyphy.sim.bench_control` is the Python API on top.

* `plant.*` requests go to the node process, where the plant lives (so they act at the
  node's own, possibly virtual, time): as a `00 'P' LEN16 json` command on its stdin,
  answered with a `'Q'` frame on its stdout (boards/sim/rom/_link.py, _gear.py).
* `link.*` requests configure `Wire`s: the serial line between the PTY and the node
  process, one per direction, which drop, corrupt and delay bytes with a seeded PRNG.
* `wifi.*` requests set the radio environment the node sees (the access point: its SSID
  and password, whether it is on the air), `flash.stall` whether flash writes stall the
  node (boards/sim/rom/_flashdev.py). They belong to the board's surroundings, not to the
  node process: the supervisor keeps them, answers at once, and sends them to the node
  (a `sim.config` 'P' command, served by boards/sim/rom/_network.py) now and after every
  reset. The node applies them when it next touches Wi-Fi or reads its console.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from cyphy.sim.supervisor import Child, Supervisor

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024  # a longer request line closes the connection
MAX_REQUEST = 4000  # bytes of JSON sent to the node (one atomic pipe write)
MAX_DELAY_MS = 60_000
WIRE_MAX = 64 * 1024  # bytes a delaying wire holds before the line stops taking more
DIRECTIONS = ("to_node", "from_node")
# The access point a node sees until wifi.ap says otherwise: any SSID and key join it, but
# for the test names "cyphy-sim-noap" and "wrong-password" (boards/sim/rom/_network.py).
DEFAULT_WIFI = {"ssid": None, "password": None, "up": True, "drop": "beacon"}


def socket_path(node_root: Path) -> Path:
    return node_root / SOCKET_NAME


def unix_address(path: Path) -> tuple[str, int | None]:
    """An address for bind()/connect() short enough for AF_UNIX (108 bytes): the path
    itself, or /proc/self/fd/N/NAME through a directory fd (close it after the call)."""
    s = str(path)
    if len(s.encode()) < 100:
        return s, None
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def command(kind: bytes, payload: bytes) -> bytes:
    """A supervisor -> node command on the link: 00 T LEN16 payload."""
    assert len(payload) <= MAX_REQUEST
    return b"\x00" + kind + len(payload).to_bytes(2, "little") + payload


class Wire:
    """One direction of the serial line: bytes pass through in order, each one dropped with
    probability `drop` or, if kept, one random bit flipped with probability `corrupt`; then
    held `delay_ms`. Every byte consumes the same PRNG draws whatever happens to it, so a
    seed gives the same faults for the same byte sequence on every run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.drop = 0.0
        self.corrupt = 0.0
        self.delay_s = 0.0
        self.seed = 1
        self.rng = random.Random(self._seed_value())
        self.queue: deque[list] = deque()  # [due, bytearray], in order
        self.pending = 0  # bytes in the queue
        self.last_due = 0.0
        self.stats = {"bytes": 0, "dropped": 0, "corrupted": 0, "delayed": 0, "delivered": 0}

    def _seed_value(self) -> str:
        return f"cyphy-serial:{self.seed}:{self.name}"

    def configure(self, drop: float, corrupt: float, delay_ms: float, seed: int) -> None:
        self.drop, self.corrupt, self.delay_s = drop, corrupt, delay_ms / 1000.0
        self.seed = seed
        self.rng = random.Random(self._seed_value())

    def settings(self) -> dict:
        return {"drop": self.drop, "corrupt": self.corrupt, "delay_ms": self.delay_s * 1000.0, "seed": self.seed}

    @property
    def active(self) -> bool:
        """Bytes must go through this wire: faults are set, or bytes are still on it."""
        return bool(self.drop or self.corrupt or self.delay_s or self.queue)

    def push(self, data: bytes, now: float) -> None:
        if not data:
            return
        self.stats["bytes"] += len(data)
        if self.drop or self.corrupt:
            out = bytearray()
            rnd = self.rng.random
            for b in data:
                u_drop, u_bad, u_bit = rnd(), rnd(), rnd()
                if u_drop < self.drop:
                    self.stats["dropped"] += 1
                    continue
                if u_bad < self.corrupt:
                    b ^= 1 << int(u_bit * 8)
                    self.stats["corrupted"] += 1
                out.append(b)
        else:
            out = bytearray(data)
        if not out:
            return
        due = max(now + self.delay_s, self.last_due)  # never reorders
        self.last_due = due
        if self.delay_s:
            self.stats["delayed"] += len(out)
        if self.queue and self.queue[-1][0] == due:
            self.queue[-1][1] += out
        else:
            self.queue.append([due, out])
        self.pending += len(out)

    def room(self) -> int:
        """How many more bytes the line may take now (a long delay must not buffer without bound)."""
        return max(0, WIRE_MAX - self.pending)

    def ready(self, now: float) -> bytes:
        """The bytes due now (still on the wire until consume())."""
        parts = []
        for due, data in self.queue:
            if due > now:
                break
            parts.append(bytes(data))
        return b"".join(parts)

    def consume(self, n: int) -> None:
        self.stats["delivered"] += n
        self.pending -= n
        while n > 0 and self.queue:
            data = self.queue[0][1]
            if len(data) <= n:
                n -= len(data)
                self.queue.popleft()
            else:
                del data[:n]
                n = 0

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def take(self, data: bytes, now: float) -> bytes:
        """push() then everything due now, delivered (for a receiver that takes it all)."""
        self.push(data, now)
        out = self.ready(now)
        self.consume(len(out))
        return out


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.closing = False


class Equipment:
    """The control socket of one supervisor and the serial line's faults."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup
        self.path = socket_path(sup.node.root)
        self.listener: socket.socket | None = None
        self.clients: dict[int, _Client] = {}
        self.wires = {d: Wire(d) for d in DIRECTIONS}
        self.to_node, self.from_node = self.wires["to_node"], self.wires["from_node"]
        self.next_id = 1
        self.outbox: deque[tuple[int, bytes]] = deque()  # (id, command) not yet written to the node
        self.waiting: dict[int, tuple[_Client, object]] = {}  # id -> (client, the client's own id)
        self.sent: deque[int] = deque()  # ids written to the node, oldest first
        self.failed = False
        # the node's surroundings (wifi.*, flash.stall): survive resets, pushed to each process
        self.wifi = dict(DEFAULT_WIFI)
        self.flash_stall = True
        self.pushes: set[int] = set()  # ids of sim.config pushes not answered yet
        self.pushed_to: object = None  # the node process that has the current config

    # ------------------------------------------------------------------ socket
    def open(self) -> None:
        if self.listener is not None or self.failed:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr, fd = unix_address(self.path)
        old = os.umask(0o177)  # 0600 from the start: only this user may drive the bench
        try:
            try:
                os.unlink(addr)
            except FileNotFoundError:
                pass
            s.bind(addr)
        except OSError as e:
            self.failed = True
            s.close()
            self.sup.log(f"control socket {self.path}: {e}")
            return
        finally:
            os.umask(old)
            if fd is not None:
                os.close(fd)
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
        s.listen(8)
        s.setblocking(False)
        self.listener = s
        self.sup.log(f"control socket {self.path}")

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._drop(c)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                self.path.unlink()
            except OSError:
                pass

    def register(self, poll, child: "Child | None") -> None:
        """Add our fds to the supervisor's poll (the socket opens on the first call)."""
        import select

        self.open()
        if child is not None and child is not self.pushed_to:
            self.pushed_to = child
            if self.wifi != DEFAULT_WIFI or not self.flash_stall:
                self._push()  # a new node process starts with the defaults
        if self.listener is not None:
            poll.register(self.listener.fileno(), select.POLLIN)
        for fd, c in self.clients.items():
            poll.register(fd, select.POLLIN | (select.POLLOUT if c.wbuf else 0))
        if self.outbox and child is not None and child.reboot is None:
            poll.register(child.stdin_w, select.POLLOUT)

    def owns(self, fd: int) -> bool:
        return fd in self.clients or (self.listener is not None and fd == self.listener.fileno())

    def timeout(self, now: float) -> float:
        """Seconds until a delayed byte is due (1.0 if none)."""
        t = 1.0
        for w in self.wires.values():
            due = w.next_due()
            if due is not None:
                t = min(t, max(due - now, 0.0005))
        return t

    def handle(self, fd: int, ev: int) -> None:
        import select

        if self.listener is not None and fd == self.listener.fileno():
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.clients[conn.fileno()] = _Client(conn)
            return
        c = self.clients.get(fd)
        if c is None:
            return
        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(c)
                return
            if data:
                c.rbuf += data
                self._lines(c)
        if ev & select.POLLOUT:
            self._send(c)

    def _drop(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        for rid, (owner, _) in list(self.waiting.items()):
            if owner is c:
                self.waiting[rid] = (None, None)  # the answer will be dropped
        c.sock.close()

    def _lines(self, c: _Client) -> None:
        while not c.closing:
            i = c.rbuf.find(b"\n")
            if i < 0:
                if len(c.rbuf) > MAX_LINE:
                    self._answer(c, {"ok": False, "error": f"request line longer than {MAX_LINE} bytes"})
                    c.closing = True
                return
            line = bytes(c.rbuf[:i]).strip()
            del c.rbuf[: i + 1]
            if line:
                self.request(c, line)

    def _answer(self, c: _Client | None, ans: dict, cid: object = None) -> None:
        if c is None or c.sock.fileno() < 0:
            return
        ans = dict(ans)
        ans.pop("id", None)
        if cid is not None:
            ans["id"] = cid
        c.wbuf += json.dumps(ans).encode() + b"\n"
        self._send(c)

    def _send(self, c: _Client) -> None:
        try:
            n = c.sock.send(c.wbuf)
            del c.wbuf[:n]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        if c.closing and not c.wbuf:
            self._drop(c)

    # ------------------------------------------------------------------ requests
    def request(self, c: _Client, line: bytes) -> None:
        cid = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
            cid = req.get("id")
            op = req.get("op")
            if not isinstance(op, str):
                raise ValueError('a request needs "op" (plant.state, plant.set, plant.sensor, '
                                 'plant.clear, link.set, link.clear, link.stats, ping)')
            if op.startswith("plant."):
                self._plant(c, cid, req)
                return
            if op.startswith("wifi.") or op.startswith("flash."):
                ans = self._surroundings(op, req)
            else:
                ans = self._local(op, req)
        except ValueError as e:
            ans = {"ok": False, "error": str(e)}
        self._answer(c, ans, cid)

    def _local(self, op: str, req: dict) -> dict:
        sup = self.sup
        if op == "ping":
            return {"ok": True, "node": sup.node.name, "bench": sup.bench is not None,
                    "virtual_time": sup.virtual_time, "pid": os.getpid()}
        if op == "link.set":
            return self._link_set(req)
        if op == "link.clear":
            for w in self.wires.values():
                w.configure(0.0, 0.0, 0, w.seed)
            return {"ok": True}
        if op == "link.stats":
            ans = {"ok": True}
            for d, w in self.wires.items():
                ans[d] = dict(w.stats, **w.settings())
                if req.get("reset"):
                    w.stats = dict.fromkeys(w.stats, 0)
            return ans
        raise ValueError(f"unknown op {op!r}")

    def _surroundings(self, op: str, req: dict) -> dict:
        """wifi.ap / wifi.drop / wifi.restore / wifi.state / flash.stall."""
        def keys(*known: str) -> None:
            extra = sorted(set(req) - {"op", "id", *known})
            if extra:
                raise ValueError(f"{op}: unknown key {extra[0]!r}" + (f" (known: {', '.join(known)})" if known else ""))

        w = dict(self.wifi)
        if op == "wifi.ap":
            keys("ssid", "password")
            ssid, pw = req.get("ssid"), req.get("password", "")
            if ssid is None and "password" not in req:
                w.update(ssid=None, password=None)  # back to the default AP
            else:
                if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
                    raise ValueError("wifi.ap: 'ssid' must be a string of 1 to 32 bytes (802.11)")
                if not isinstance(pw, str) or len(pw.encode()) > 64:
                    raise ValueError("wifi.ap: 'password' must be a string of at most 64 bytes")
                w.update(ssid=ssid, password=pw)
            w["up"] = True
        elif op == "wifi.drop":
            keys("mode")
            mode = req.get("mode", "beacon")
            if mode not in ("beacon", "deauth"):
                raise ValueError("wifi.drop: 'mode' must be beacon (the AP vanishes: the node notices "
                                 f"after its 6 s beacon timeout) or deauth (at once), not {mode!r}")
            w.update(up=False, drop=mode)
        elif op == "wifi.restore":
            keys()
            w["up"] = True
        elif op == "flash.stall":
            keys("on")
            on = req.get("on")
            if not isinstance(on, bool):
                raise ValueError("flash.stall: 'on' must be true or false")
            self.flash_stall = on
        elif op != "wifi.state":
            raise ValueError(f"unknown op {op!r} (wifi.ap, wifi.drop, wifi.restore, wifi.state, flash.stall)")
        if w != self.wifi or op == "flash.stall":
            self.wifi = w
            self._push()
        pub = {k: v for k, v in self.wifi.items() if k != "password"}  # never echo a secret
        pub["password_set"] = self.wifi["password"] is not None
        return {"ok": True, "wifi": pub, "flash_stall": self.flash_stall}

    def _push(self) -> None:
        """Send the surroundings to the node process (answered there, the answer dropped)."""
        rid = self.next_id
        self.next_id += 1
        body = {"op": "sim.config", "id": rid, "wifi": self.wifi, "flash_stall": self.flash_stall}
        self.waiting[rid] = (None, None)
        self.pushes.add(rid)
        self.outbox.append((rid, command(b"P", json.dumps(body, ensure_ascii=True).encode())))
        if self.sup.child is not None:
            self.flush(self.sup.child)

    def _link_set(self, req: dict) -> dict:
        known = {"op", "id", "drop", "corrupt", "delay_ms", "seed", "direction"}
        extra = sorted(set(req) - known)
        if extra:
            raise ValueError(f"link.set: unknown key {extra[0]!r} (known: {', '.join(sorted(known - {'op', 'id'}))})")

        def prob(k: str) -> float:
            v = req.get(k, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"link.set: {k!r} must be a probability from 0 to 1 (got {v!r})")
            return float(v)

        drop, corrupt = prob("drop"), prob("corrupt")
        delay = req.get("delay_ms", 0)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY_MS:
            raise ValueError(f"link.set: 'delay_ms' must be from 0 to {MAX_DELAY_MS} (got {delay!r})")
        seed = req.get("seed", 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"link.set: 'seed' must be an integer (got {seed!r})")
        direction = req.get("direction", "both")
        if direction not in ("both", *DIRECTIONS):
            raise ValueError(f"link.set: 'direction' must be both, to_node or from_node (got {direction!r})")
        for d in DIRECTIONS if direction == "both" else (direction,):
            self.wires[d].configure(drop, corrupt, float(delay), seed)
        return {"ok": True, **{d: w.settings() for d, w in self.wires.items()}}

    def _plant(self, c: _Client, cid: object, req: dict) -> None:
        sup = self.sup
        if sup.bench is None:
            raise ValueError(f"node {sup.node.name} has no bench: start it with --bench FILE "
                             "(docs/plants.md) to have a plant")
        rid = self.next_id
        self.next_id += 1
        body = dict(req, id=rid)
        payload = json.dumps(body, ensure_ascii=True, allow_nan=False).encode()
        if len(payload) > MAX_REQUEST:
            raise ValueError(f"request too large for the node ({len(payload)} > {MAX_REQUEST} bytes)")
        self.waiting[rid] = (c, cid)
        self.outbox.append((rid, command(b"P", payload)))
        if sup.child is not None:
            self.flush(sup.child)

    def flush(self, child: "Child") -> None:
        """Write queued requests to the node once its console input has gone: each command in
        one write, which a pipe makes atomic (it is under PIPE_BUF), so never torn."""
        if child.reboot is not None:
            return
        while self.outbox and not child.to_stdin:
            rid, cmd = self.outbox[0]
            try:
                os.write(child.stdin_w, cmd)
            except (BlockingIOError, BrokenPipeError):
                return
            self.outbox.popleft()
            self.sent.append(rid)

    def reply(self, payload: bytes) -> None:
        """A 'Q' frame from the node: route the answer to whoever asked."""
        try:
            ans = json.loads(payload)
            if not isinstance(ans, dict):
                raise ValueError
        except ValueError:
            ans = {"ok": False, "error": "the node sent an unreadable answer: %r" % payload[:100]}
        rid = ans.get("id")
        if rid is None and self.sent:
            rid = self.sent[0]  # an answer without id is for the oldest request
        if rid in self.sent:
            self.sent.remove(rid)
        if rid in self.pushes:
            self.pushes.discard(rid)
            if not ans.get("ok"):  # e.g. "the node is booting": send it again
                self.sup.log(f"sim.config not taken ({ans.get('error')}); sending it again")
                self.waiting.pop(rid, None)
                self._push()
                return
        c, cid = self.waiting.pop(rid, (None, None))
        self._answer(c, ans, cid)

    def child_gone(self) -> None:
        """The node process ended (a reset): requests it had were never answered. Those
        not yet written go to the next process."""
        while self.sent:
            rid = self.sent.popleft()
            c, cid = self.waiting.pop(rid, (None, None))
            self._answer(c, {"ok": False, "error": "the node reset before answering (its plant "
                                                   "starts over at every reset)"}, cid)


def skip_command(data: bytes, i: int) -> int:
    """Length of the link escape at data[i] (00 X ...): 2, or 4 + LEN for a command."""
    if i + 1 < len(data) and 65 <= data[i + 1] <= 90:
        if i + 4 > len(data):
            return len(data) - i
        return 4 + (data[i + 2] | data[i + 3] << 8)
    return 2
