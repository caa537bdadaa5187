"""`make demo`: power on a sim node, watch it boot, talk to it the way host tools do.

    .venv/bin/python tools/demo.py --seconds 30

Everything lives under out/demo/ in the repository (CYPHY_HOME=out/demo/home), never in
the user's own cyphy data directory. The node is always powered off at the end. What
crossed the serial port is written to out/demo/record.txt; what the node printed is in
its console.log.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "demo"
HOME = OUT / "home"
RECORD = OUT / "record.txt"
NODE = "demo"
BAUD = 115200

BOOT_TIMEOUT_S = 20.0  # power-on until the REPL answers
RESET_TIMEOUT_S = 10.0  # machine.reset() until the prompt is back
IO_TIMEOUT_S = 5.0  # one serial read
STOP_RESERVE_S = 0.3  # kept at the end of --seconds for powering off
OVERRUN_S = 60.0  # hard limit beyond --seconds, whatever hangs

os.environ["CYPHY_HOME"] = str(HOME)  # before cyphy is imported: never the real data dir

import serial  # noqa: E402
from mpremote.transport import TransportError  # noqa: E402
from mpremote.transport_serial import SerialTransport  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.panel import Panel  # noqa: E402
from rich.rule import Rule  # noqa: E402
from rich.text import Text  # noqa: E402

from cyphy.sim import control  # noqa: E402
from cyphy.sim.nodes import Node, SimError  # noqa: E402

console = Console(highlight=False)


class DemoError(Exception):
    """An expected failure: reported as one clear message, exit status 1."""


def rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- record
class Recorder:
    """out/demo/record.txt: every byte sent and received, with timestamps.

    Consecutive bytes in one direction are written as one entry stamped with the time
    of their first byte; notes mark what the demo was doing.
    """

    def __init__(self, path: Path, t0: float) -> None:
        self.t0 = t0
        self.f = open(path, "w", encoding="utf-8")
        self.dir: str | None = None
        self.when = 0.0
        self.buf = bytearray()

    def header(self, lines: list[str]) -> None:
        for ln in lines:
            self.f.write("# " + ln + "\n")
        self.f.write("# columns: seconds since start, direction (host->node / node->host / note), data\n\n")
        self.f.flush()

    def _flush(self) -> None:
        if self.dir and self.buf:
            self.f.write("%9.3f  %s  %r\n" % (self.when - self.t0, self.dir, bytes(self.buf)))
            self.f.flush()
        self.dir = None
        self.buf = bytearray()

    def data(self, direction: str, chunk: bytes) -> None:
        if not chunk:
            return
        if direction != self.dir:
            self._flush()
            self.dir = direction
            self.when = time.monotonic()
        self.buf += chunk

    def note(self, text: str) -> None:
        self._flush()
        self.f.write("%9.3f  note        %s\n" % (time.monotonic() - self.t0, text))
        self.f.flush()

    def close(self) -> None:
        self._flush()
        self.f.close()


class RecordingSerial:
    """A pyserial port that copies what it reads and writes to the record."""

    def __init__(self, ser: serial.Serial, rec: Recorder) -> None:
        object.__setattr__(self, "_ser", ser)
        object.__setattr__(self, "_rec", rec)

    def __getattr__(self, name: str):
        return getattr(self._ser, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._ser, name, value)

    def read(self, size: int = 1) -> bytes:
        data = self._ser.read(size)
        self._rec.data("node->host", data)
        return data

    def write(self, data: bytes) -> int | None:
        self._rec.data("host->node", bytes(data))
        return self._ser.write(data)


# --------------------------------------------------------------------------- steps
def read_until(port, ending: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(ending) and time.monotonic() < deadline:
        buf += port.read(max(1, port.in_waiting))
    return buf


def clean(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def power_on() -> dict:
    node = Node.named(NODE, HOME)
    if node.state() is not None:
        control.stop(NODE, home=HOME)
        console.print(f"[yellow]node {NODE!r} was already running in {rel(HOME)}: powered it off to start afresh[/]")
    t = time.monotonic()
    with console.status(f"powering on sim node {NODE!r}..."):
        st = control.start(NODE, baud=BAUD, timeout=BOOT_TIMEOUT_S, home=HOME)
    mac = node.config()["mac"]
    console.print(
        f"[green]✓[/] node [bold]{NODE}[/] answering {time.monotonic() - t:.2f} s after power-on, "
        f"MAC {':'.join(mac[i:i + 2] for i in range(0, 12, 2))}\n"
        f"  sandbox: {st.get('sandbox') or 'unknown'}, port [cyan]{rel(st['port'])}[/] -> {os.path.realpath(st['port'])}, {st['baud']} baud"
    )
    st["mac"] = mac
    return st


def show_boot(port_path: str, rec: Recorder) -> None:
    """Open the port with pyserial, hard-reset the node and show it booting."""
    console.print(Rule("boot: pyserial on the port, machine.reset() typed at the REPL", style="dim"))
    rec.note("pyserial: open " + port_path)
    with serial.Serial(port_path, BAUD, timeout=0.1) as raw:
        port = RecordingSerial(raw, rec)
        # The power-on boot went to console.log while no host had the port open; get the
        # REPL's attention first (Ctrl-C, then Enter until a prompt comes back).
        port.write(b"\r\x03")
        time.sleep(0.2)
        port.read(raw.in_waiting)  # whatever that printed: recorded, not shown
        port.write(b"\r")
        if not read_until(port, b">>> ", IO_TIMEOUT_S).endswith(b">>> "):
            raise DemoError("the node's REPL does not answer on " + port_path)
        rec.note("hard reset")
        port.write(b"import machine; machine.reset()\r")
        out = read_until(port, b"\r\n>>> ", RESET_TIMEOUT_S)
        if not out.endswith(b">>> "):
            raise DemoError(f"the node did not come back within {RESET_TIMEOUT_S:.0f} s of machine.reset()")
        if b"rst:" not in out:
            raise DemoError("machine.reset() did not reset the node; it answered:\n" + clean(out).strip())
    rec.note("pyserial: close")
    console.print(Panel(Text(">>> " + clean(out).rstrip()), title="serial console", title_align="left",
                        border_style="dim", expand=False))


def show_repl(t: SerialTransport, mac: str, rec: Recorder) -> None:
    console.print(Rule("raw REPL: mpremote's SerialTransport", style="dim"))
    rec.note("mpremote: enter raw REPL (soft reset)")
    t.enter_raw_repl()
    console.print("[green]✓[/] raw REPL entered (after a soft reboot, as mpremote does)")
    t.exec("import os, sys, gc, time, machine")
    for expr in ("sys.platform", "os.uname()", "machine.unique_id()", "machine.reset_cause()", "os.listdir('/')",
                 "gc.mem_free()"):
        rec.note("exec " + expr)
        got = clean(t.exec("print(repr(%s))" % expr)).strip()
        console.print(Text.assemble((">>> ", "dim"), (expr, "bold")))
        console.print(Text("    " + got))
    uid = t.eval("machine.unique_id()")
    if uid.hex() != mac:
        raise DemoError(f"machine.unique_id() is {uid.hex()}, but node.json says {mac}")
    console.print("[green]✓[/] machine.unique_id() is the MAC in the node's node.json")


def live(t: SerialTransport, deadline: float, rec: Recorder) -> int:
    """Query the node once per second until the deadline; returns the number of queries."""
    console.print(Rule("live: time.ticks_ms() and gc.mem_free() once per second", style="dim"))
    rec.note("live queries start")
    t.exec("_t0 = time.ticks_ms()")
    start = time.monotonic()
    n = 0
    line = Text("waiting for the first answer...")
    tty = console.is_terminal

    def sample() -> Text:
        nonlocal n
        sent = time.monotonic()
        out = t.exec("print(time.ticks_diff(time.ticks_ms(), _t0), gc.mem_free())")
        rtt = time.monotonic() - sent
        try:
            ticks, free = (int(x) for x in out.split())
        except ValueError:
            raise DemoError(f"unexpected answer from the node: {out!r}") from None
        n += 1
        return Text.assemble(
            ("host %5.1f s" % (time.monotonic() - start), "cyan"), " │ ",
            "node clock %7.3f s" % (ticks / 1000), " │ ",
            "mem_free %7s B" % format(free, ","), " │ ",
            "rtt %3.0f ms" % (rtt * 1000), " │ ",
            "#%d" % n,
        )

    with Live(line, console=console, auto_refresh=False, transient=False) if tty else _NoLive() as lv:
        nxt = time.monotonic()
        while True:
            line = sample()
            if tty:
                lv.update(line, refresh=True)
            elif n == 1 or n % 5 == 0:
                console.print(line)
            nxt += 1.0
            if nxt > deadline - STOP_RESERVE_S:  # the next query would end past --seconds
                break
            time.sleep(max(0.0, nxt - time.monotonic()))
    if not tty and n != 1 and n % 5 != 0:
        console.print(line)
    rec.note("live queries end after %d" % n)
    return n


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


# --------------------------------------------------------------------------- main
def run(seconds: float) -> int:
    t0 = time.monotonic()
    deadline = t0 + seconds
    OUT.mkdir(parents=True, exist_ok=True)
    HOME.mkdir(parents=True, exist_ok=True)
    lock = open(OUT / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        console.print(Text.assemble(("demo failed: ", "bold red"),
                                    f"another demo is running (it holds {rel(OUT / '.lock')})"))
        return 1

    def overrun(signum, frame):
        raise DemoError(f"the demo overran --seconds by {OVERRUN_S:.0f} s and was stopped")

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(int(seconds + OVERRUN_S))

    console.print(f"[bold]cyphy demo[/]: one sim node, {seconds:g} s   (CYPHY_HOME={rel(HOME)})")
    rec = Recorder(RECORD, t0)
    node = Node.named(NODE, HOME)
    rec.header([
        "cyphy demo record, started " + time.strftime("%Y-%m-%d %H:%M:%S %z"),
        f"sim node {NODE!r} in CYPHY_HOME={HOME}, {BAUD} baud, --seconds {seconds:g}",
        "what the node printed, including the power-on boot nobody was listening to: " + str(node.console_log),
    ])
    try:
        st = power_on()
        rec.note(f"powered on: supervisor pid {st['pid']}, port {st['port']} -> {st.get('pts')}, "
                 f"MAC {st['mac']}, sandbox {st.get('sandbox')}")
        show_boot(st["port"], rec)
        try:
            t = SerialTransport(st["port"], baudrate=BAUD, timeout=IO_TIMEOUT_S)
        except TransportError as e:
            raise DemoError(f"mpremote could not open {st['port']}: {e}") from None
        t.serial = RecordingSerial(t.serial, rec)
        try:
            show_repl(t, st["mac"], rec)
            n = live(t, deadline, rec)
            t.exit_raw_repl()
        finally:
            t.close()
            rec.note("mpremote: close")
    finally:
        signal.alarm(0)
        try:
            stopped = control.stop(NODE, home=HOME)
            rec.note("powered off" if stopped else "node was not running at the end")
        finally:
            rec.close()
        if stopped:
            console.print(f"[green]✓[/] node [bold]{NODE}[/] powered off")
    console.print(f"[green]✓[/] {n} live queries; demo took {time.monotonic() - t0:.1f} s")
    console.print(Rule(style="dim"))
    console.print(f"record (bytes sent/received, timestamped): [cyan]{rel(RECORD)}[/]")
    console.print(f"node console (everything it printed):      [cyan]{rel(node.console_log)}[/]")
    console.print(f"supervisor log (resets, host open/close):  [cyan]{rel(node.supervisor_log)}[/]")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="about how long the demo runs (default 30)")
    a = ap.parse_args()
    if not a.seconds > 0:
        ap.error("--seconds must be positive")
    try:
        return run(a.seconds)
    except (DemoError, SimError) as e:
        console.print(Text.assemble(("demo failed: ", "bold red"), str(e)))
    except (TransportError, serial.SerialException, OSError, json.JSONDecodeError) as e:
        console.print(Text.assemble(("demo failed: ", "bold red"), f"talking to the node: {e}"))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the node was powered off[/]")
        return 130
    log = HOME / "sim" / NODE / "supervisor.log"
    if log.exists():
        console.print(f"see {rel(log)} and {rel(log.with_name('console.log'))}")
    if RECORD.exists():
        console.print(f"serial traffic so far: {rel(RECORD)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
