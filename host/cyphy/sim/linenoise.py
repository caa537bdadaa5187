"""A noisy serial line between a host program and a device: a new PTY whose other side
copies bytes to and from the device (a sim node's PTY, or any serial port), dropping and
corrupting bytes at random with a seeded RNG, each direction on its own.

    with NoisyLine(node_port, drop=0.05, corrupt=0.05, seed=1) as line:
        link = SerialLink(line.port)          # real serial I/O through the noise
        line.inject(b"\\x05junk")              # bytes to the device, past the noise
        line.set_noise(0, 0)                   # a clean line again

Each byte is dropped with probability `drop`, else replaced by a different random byte
with probability `corrupt`. A direction's RNG is seeded from `seed` alone, so the n-th byte
in a direction always meets the same fate. `python -m cyphy.sim.linenoise PORT` runs one
from the shell and prints its port (docs/hil.md, "A noisy serial line").
"""

from __future__ import annotations

import os
import random
import select
import threading
import tty
from dataclasses import dataclass, field


@dataclass
class Direction:
    drop: float
    corrupt: float
    rng: random.Random
    bytes: int = 0
    dropped: int = 0
    corrupted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, data: bytes) -> bytes:
        out = bytearray()
        with self.lock:
            for b in data:
                self.bytes += 1
                r = self.rng.random()
                if r < self.drop:
                    self.dropped += 1
                    continue
                if r < self.drop + self.corrupt:
                    self.corrupted += 1
                    b ^= self.rng.randrange(1, 256)
                out.append(b)
        return bytes(out)


class NoisyLine:
    """See the module docstring. `port` is the path a host program opens."""

    def __init__(self, device: str, drop: float = 0.0, corrupt: float = 0.0, seed: int = 0) -> None:
        import serial

        self.dev = serial.Serial(device, 115200, timeout=0)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self.master)
        self.port = os.ttyname(self._slave)
        self.to_device = Direction(drop, corrupt, random.Random(f"{seed}:to-device"))
        self.to_host = Direction(drop, corrupt, random.Random(f"{seed}:to-host"))
        self._wlock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="linenoise")
        self._thread.start()

    def set_noise(self, drop: float, corrupt: float) -> None:
        for d in (self.to_device, self.to_host):
            with d.lock:
                d.drop, d.corrupt = drop, corrupt

    def inject(self, data: bytes) -> None:
        """Bytes to the device as they are (stray bytes, garbage, an oversize frame)."""
        with self._wlock:
            self.dev.write(data)

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: {"bytes": d.bytes, "dropped": d.dropped, "corrupted": d.corrupted}
                for name, d in (("to_device", self.to_device), ("to_host", self.to_host))}

    def _run(self) -> None:
        dev = self.dev.fileno()
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([dev, self.master], [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the host side closed (EIO): wait for it to open again
                    data = b""
                if not data:
                    continue
                if fd == dev:
                    out = self.to_host.apply(data)
                    if out:
                        os.write(self.master, out)
                else:
                    out = self.to_device.apply(data)
                    if out:
                        with self._wlock:
                            self.dev.write(out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.dev.close()

    def __enter__(self) -> "NoisyLine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m cyphy.sim.linenoise",
                                 description="A noisy PTY in front of a serial port (prints its path).")
    ap.add_argument("device", help="the serial port behind it, e.g. a sim node's port")
    ap.add_argument("--drop", type=float, default=0.05, help="probability a byte is lost (default 0.05)")
    ap.add_argument("--corrupt", type=float, default=0.05, help="probability a byte is changed (default 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    with NoisyLine(a.device, a.drop, a.corrupt, a.seed) as line:
        print(line.port, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
