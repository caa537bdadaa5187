"""A UDP relay that loses, damages, delays and duplicates datagrams: link faults for
anything that talks UDP (sim nodes, real nodes, host programs).

    from cyphy.sim.udp_proxy import UdpFaultProxy

    with UdpFaultProxy(target=(node_ip, 5477), drop=0.1, delay_ms=30, seed=1) as proxy:
        sock.sendto(request, proxy.address)     # instead of (node_ip, 5477)
        reply, src = sock.recvfrom(1500)        # src is proxy.address
        proxy.set(drop=0.0)                     # change the faults while it runs
        proxy.stats()["to_target"]["dropped"]

The proxy listens on 127.0.0.1 (an ephemeral port by default). Each client address gets
its own upstream socket, connected to the target, so the target answers the proxy and the
proxy relays the answer to that client. Datagrams are bytes in, bytes out: nothing is
parsed.

Faults are per datagram and per direction ("to_target": client -> target, "from_target"),
each decided by one seeded PRNG per direction that draws the same numbers for every
datagram whatever happens to it, so the n-th datagram of a direction meets the same fate
on every run with the same seed:
    drop        probability that the datagram is lost
    corrupt     probability that one random bit of it is flipped
    duplicate   probability that it is delivered twice
    delay_ms    added latency, plus a uniform 0..jitter_ms (jitter can reorder datagrams)
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from typing import Any

DIRECTIONS = ("to_target", "from_target")
MAX_DATAGRAM = 65535
MAX_CLIENTS = 256


class _Faults:
    def __init__(self, name: str) -> None:
        self.name = name
        self.drop = self.corrupt = self.duplicate = 0.0
        self.delay_s = self.jitter_s = 0.0
        self.seed = 1
        self.rng = random.Random(f"cyphy-udp:1:{name}")
        self.stats = {"datagrams": 0, "bytes": 0, "dropped": 0, "corrupted": 0, "duplicated": 0,
                      "delayed": 0, "delivered": 0}

    def configure(self, drop: float, corrupt: float, duplicate: float, delay_ms: float, jitter_ms: float,
                  seed: int) -> None:
        for k, v in (("drop", drop), ("corrupt", corrupt), ("duplicate", duplicate)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be a probability from 0 to 1 (got {v!r})")
        for k, v in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 60_000:
                raise ValueError(f"{k} must be from 0 to 60000 (got {v!r})")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer (got {seed!r})")
        self.drop, self.corrupt, self.duplicate = float(drop), float(corrupt), float(duplicate)
        self.delay_s, self.jitter_s = delay_ms / 1000.0, jitter_ms / 1000.0
        self.seed = seed
        self.rng = random.Random(f"cyphy-udp:{seed}:{self.name}")

    def settings(self) -> dict:
        return {"drop": self.drop, "corrupt": self.corrupt, "duplicate": self.duplicate,
                "delay_ms": self.delay_s * 1000.0, "jitter_ms": self.jitter_s * 1000.0, "seed": self.seed}

    def apply(self, data: bytes) -> tuple[list[bytes], float]:
        """The copies to deliver (none, one or two) and their delay in s."""
        rnd = self.rng.random
        u_drop, u_bad, u_pos, u_bit, u_dup, u_jit = rnd(), rnd(), rnd(), rnd(), rnd(), rnd()
        self.stats["datagrams"] += 1
        self.stats["bytes"] += len(data)
        if u_drop < self.drop:
            self.stats["dropped"] += 1
            return [], 0.0
        if u_bad < self.corrupt and data:
            b = bytearray(data)
            b[int(u_pos * len(b))] ^= 1 << int(u_bit * 8)
            data = bytes(b)
            self.stats["corrupted"] += 1
        copies = [data]
        if u_dup < self.duplicate:
            copies.append(data)
            self.stats["duplicated"] += 1
        delay = self.delay_s + self.jitter_s * u_jit
        if delay > 0:
            self.stats["delayed"] += 1
        return copies, delay


class UdpFaultProxy:
    """Relays datagrams between clients and `target`, with faults; runs in a thread."""

    def __init__(self, target: tuple[str, int], drop: float = 0.0, corrupt: float = 0.0, delay_ms: float = 0.0,
                 duplicate: float = 0.0, seed: int = 1, jitter_ms: float = 0.0,
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target = (socket.gethostbyname(target[0]), int(target[1]))
        self.faults = {d: _Faults(d) for d in DIRECTIONS}
        self._lock = threading.Lock()
        self.set(drop=drop, corrupt=corrupt, delay_ms=delay_ms, duplicate=duplicate, seed=seed, jitter_ms=jitter_ms)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(listen)
        self.front.setblocking(False)
        self.address: tuple[str, int] = self.front.getsockname()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.front, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._clients: dict[tuple[str, int], socket.socket] = {}  # client address -> upstream socket
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int] | None]] = []
        self._seq = 0
        self._closed = False
        self.errors = 0  # sends that failed (e.g. nobody listening at the target)
        self._thread = threading.Thread(target=self._run, name=f"udp-proxy-{self.address[1]}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def set(self, drop: float = 0.0, corrupt: float = 0.0, delay_ms: float = 0.0, duplicate: float = 0.0,
            seed: int = 1, jitter_ms: float = 0.0, direction: str = "both") -> None:
        """Replace the faults of one direction ("to_target", "from_target") or both, and
        restart its PRNG from seed. Datagrams already delayed keep their delivery time."""
        if direction not in ("both", *DIRECTIONS):
            raise ValueError(f"direction must be both, to_target or from_target (got {direction!r})")
        with self._lock:
            for d in DIRECTIONS if direction == "both" else (direction,):
                self.faults[d].configure(drop, corrupt, duplicate, delay_ms, jitter_ms, seed)

    def clear(self) -> None:
        self.set()

    def stats(self, reset: bool = False) -> dict:
        """{"to_target": {...}, "from_target": {...}}: counters "datagrams" and "bytes"
        received, "dropped", "corrupted", "duplicated", "delayed", "delivered" (datagrams
        sent on, duplicates included), and the settings; plus "errors" (failed sends)."""
        with self._lock:
            out: dict[str, Any] = {d: dict(f.stats, **f.settings()) for d, f in self.faults.items()}
            out["errors"] = self.errors
            if reset:
                for f in self.faults.values():
                    f.stats = dict.fromkeys(f.stats, 0)
                self.errors = 0
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(5)
        for s in (self.front, self._wake_r, self._wake_w, *self._clients.values()):
            s.close()
        self._sel.close()

    def __enter__(self) -> "UdpFaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ relay
    def _upstream(self, client: tuple[str, int]) -> socket.socket | None:
        s = self._clients.get(client)
        if s is None:
            if len(self._clients) >= MAX_CLIENTS:
                return None
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.connect(self.target)  # only the target's answers come back on it
            self._clients[client] = s
            self._sel.register(s, selectors.EVENT_READ, client)
        return s

    def _relay(self, direction: str, data: bytes, sock: socket.socket, dest: tuple[str, int] | None) -> None:
        with self._lock:
            copies, delay = self.faults[direction].apply(data)
        due = time.monotonic() + delay
        for c in copies:
            if delay > 0:
                self._seq += 1
                heapq.heappush(self._queue, (due, self._seq, sock, c, dest))
            else:
                self._send(direction, sock, c, dest)

    def _send(self, direction: str, sock: socket.socket, data: bytes, dest: tuple[str, int] | None) -> None:
        with self._lock:  # counted first: a receiver may look at stats() as soon as it has it
            self.faults[direction].stats["delivered"] += 1
        try:
            if dest is None:
                sock.send(data)
            else:
                sock.sendto(data, dest)
        except OSError:
            with self._lock:
                self.faults[direction].stats["delivered"] -= 1
                self.errors += 1

    def _run(self) -> None:
        while not self._closed:
            timeout = None
            if self._queue:
                timeout = max(0.0, self._queue[0][0] - time.monotonic())
            for key, _ in self._sel.select(timeout):
                if key.data == "wake":
                    return
                sock = key.fileobj
                while True:
                    try:
                        data, src = sock.recvfrom(MAX_DATAGRAM)  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # e.g. ICMP port unreachable from the target
                        with self._lock:
                            self.errors += 1
                        break
                    if key.data is None:  # from a client, for the target
                        up = self._upstream(src)
                        if up is not None:
                            self._relay("to_target", data, up, None)
                    else:  # from the target, for the client this socket serves
                        self._relay("from_target", data, self.front, key.data)
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sock, data, dest = heapq.heappop(self._queue)
                direction = "to_target" if dest is None else "from_target"
                self._send(direction, sock, data, dest)
