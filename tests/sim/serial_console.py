"""A serial console client for console-fidelity tests: byte-level access to the friendly
REPL (pyserial), and the raw REPL through cyphy.rawrepl's client (mpremote's transport)."""

from __future__ import annotations

import time

from cyphy.rawrepl import RawRepl, ReplError

BANNER_END = b'Type "help()" for more information.\r\n>>> '


class Console:
    def __init__(self, port: str, baud: int = 115200) -> None:
        self.port = port
        self.repl = RawRepl(port, baud, exclusive=False)
        self.s = self.repl.serial
        self.s.timeout = 0.05
        self.seen = bytearray()

    def close(self) -> None:
        self.repl.close(leave=False)  # the node stays where the test left it

    def __enter__(self) -> "Console":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        self.s.write(data)

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Everything up to and including marker; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {marker!r}; got {bytes(self.seen)!r}")
            self.seen += self.s.read(self.s.in_waiting or 1)
        i = self.seen.index(marker) + len(marker)
        out = bytes(self.seen[:i])
        del self.seen[:i]
        return out

    def read_for(self, seconds: float) -> bytes:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.seen += self.s.read(self.s.in_waiting or 1)
        out = bytes(self.seen)
        self.seen.clear()
        return out

    def friendly(self) -> None:
        """Get to a fresh friendly-REPL prompt whatever state the node is in."""
        self.write(b"\r\x03\x02")
        self.read_until(BANNER_END)

    def raw(self) -> None:
        """Into the raw REPL (no soft reset), its '>' prompt read."""
        self.seen.clear()
        try:
            self.repl.enter()
        except ReplError as e:
            raise AssertionError(str(e)) from None

    def raw_exec(self, src: bytes, timeout: float = 10.0) -> tuple[bytes, bytes]:
        """Run src in the raw REPL: (stdout, exception text)."""
        try:
            return self.repl.exec_raw(src, timeout)
        except ReplError as e:
            raise AssertionError(str(e)) from None

    def run(self, src: str, timeout: float = 60.0) -> str:
        """Run src in the raw REPL; the test fails with the node's traceback on an error."""
        out, err = self.raw_exec(src.encode(), timeout)
        assert err == b"", err.decode()
        return out.decode()

    def line(self, text: bytes, timeout: float = 10.0) -> bytes:
        """Type a line into the friendly REPL; returns the output up to the next prompt."""
        self.write(text + b"\r")
        return self.read_until(b">>> ", timeout)
