"""Run real third-party tools (mpremote, ampy, the cyphy CLI) as subprocesses against sim nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TIMEOUT_S = 60


def tool(name: str) -> str:
    """A command installed in the project's venv (mpremote, ampy, micropython, cyphy...)."""
    return str(Path(sys.executable).parent / name)


def run(args: list[str], timeout: float = TIMEOUT_S, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command; with ok=True the test fails (showing its output) unless it exits 0."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if ok:
        assert p.returncode == 0, f"{args} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def mpremote(port: str, *args: str | Path, timeout: float = TIMEOUT_S) -> str:
    """`mpremote connect PORT ARGS...`; its stdout. When mpremote cannot open the port (it
    says "failed to access" whatever the reason), the failure adds what opening it again
    here, as mpremote does (exclusive), gives: the error, or that it opens now."""
    p = run([tool("mpremote"), "connect", port, *args], timeout, ok=False)
    if p.returncode and "failed to access" in p.stderr:
        import serial

        try:
            serial.Serial(port, 115200, exclusive=True, timeout=0).close()
            again = "it opens now (a transient failure)"
        except (serial.SerialException, OSError) as e:
            again = f"{type(e).__name__}: {e}"
        raise AssertionError(f"mpremote {' '.join(map(str, args))}: {p.stderr.strip()}; "
                             f"opened again here: {again}")
    assert p.returncode == 0, f"mpremote {args} exited {p.returncode}\nstdout: {p.stdout}\n" \
                              f"stderr: {p.stderr}"
    return p.stdout


def ampy(port: str, *args: str | Path, timeout: float = TIMEOUT_S) -> str:
    """`ampy --port PORT ARGS...`; its stdout."""
    return run([tool("ampy"), "--port", port, *args], timeout).stdout


def cyphy(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The real `cyphy` CLI (CYPHY_HOME comes from the cyphy_home fixture's environment)."""
    return run([tool("cyphy"), *args], ok=ok)


def wait_for_log(path: Path, marker: bytes, after: int = 0, timeout: float = 10.0) -> bytes:
    """Wait until marker shows in the file past offset `after` (e.g. a node's console.log)."""
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_bytes()[after:] if path.exists() else b""
        if marker in data:
            return data
        assert time.monotonic() < deadline, f"{marker!r} not in {path} after {timeout} s; got {data[-500:]!r}"
        time.sleep(0.02)


class OnTerminal:
    """`cyphy ARGS...` run on a terminal of its own (a PTY), as a person runs it: read what
    it prints with until(), type with write(), and wait() for its exit code."""

    def __init__(self, *args: str) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            try:
                os.execv(tool("cyphy"), [tool("cyphy"), *args])
            finally:
                os._exit(127)
        self.seen = b""

    def until(self, marker: bytes, timeout: float = 60) -> None:
        import select

        end = time.monotonic() + timeout
        while marker not in self.seen:
            assert time.monotonic() < end, self.seen
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def power_on(name: str, home: Path, files: dict[str, bytes] | None = None, **kw) -> dict:
    """control.start(name, home=home, **kw); with files, the node's flash holds them from
    power-on (its vfs partition as `cyphy flash` writes it, cyphy.flashimage), as if the
    board had been flashed with them: see firmware_files."""
    from cyphy import flashimage
    from cyphy.sim import control
    from cyphy.sim.nodes import Node

    if files is not None:
        node = Node.named(name, home)
        node.create()
        flashimage.write_vfs(node.image, files)
    return control.start(name, home=home, **kw)


def firmware_files(config: dict | str | None = None, main: bool = True) -> dict[str, bytes]:
    """The firmware tree (and /config.json) as `cyphy flash` puts it on a board's flash,
    for sim_nodes(files=...): a node that has it from power-on, where a test is about
    something else than getting it there (a deploy over the REPL costs each node about 5 s
    of the emulated chip's time; `cyphy deploy` and `cyphy flash` have their own tests)."""
    import json

    from cyphy import firmware

    files = {b.dst: b.data for b in firmware.build("sim") if main or b.dst != "/main.py"}
    if config is not None:
        files["/config.json"] = (config if isinstance(config, str) else json.dumps(config)).encode()
    return files
