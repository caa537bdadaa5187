"""The sim board's hardware: a USB-UART bridge (a PTY), the reset circuitry and the clock.

One supervisor process per running node. It owns the PTY that host tools open as the
node's serial port and runs the node's MicroPython process (`mpchild`) behind it:

* line rate: bytes cross the "UART" at baud/10 bytes per second in each direction;
* output goes nowhere while no host holds the port open, as on a real UART;
* Ctrl-C: while user code runs, the interrupt character becomes SIGINT (ESP32's UART ISR
  does the same with mp_sched_keyboard_interrupt); otherwise it is an ordinary byte.
  Because the Unix port raises KeyboardInterrupt inside its signal handler, a SIGINT must
  never reach the ROM's own code: see Child.interrupt();
* resets: a soft reboot or machine.reset() ends the MicroPython process and the
  supervisor starts a new one, carrying over the REPL mode and any unread input.

The byte protocol between the two processes is described in boards/sim/rom/_link.py.
"""

from __future__ import annotations

import argparse
import errno
import json
import fcntl
import ctypes
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

from cyphy import flashimage
from cyphy.sim import romloader
from cyphy.sim import speed as sim_speed
from cyphy.sim.nodes import Node, SimError, chips_source, parse_heap, rom_dir
from cyphy.sim.equipment import Equipment, skip_command

TX_FIFO = 256  # bytes the node may have in flight before print() blocks (UART TX buffer)
RX_BACKLOG = 4096  # host bytes buffered before we stop reading the PTY (host write blocks)
# The node's console receive buffer: ESP32's stdin_ringbuf (ports/esp32/mphalport.c,
# 260 bytes, one kept free by py/ringbuf.h), filled by the UART RX interrupt, which drops
# a byte when it is full (ports/esp32/uart.c: ringbuf_put's result is ignored; the REPL
# UART has no flow control). See pump_rx().
RX_RING = 259
HOST_POLL_S = 0.02  # how often to look for a host opening the port while none has it
CRASH_BACKOFF_S = 1.0
BOOT_CRASHES = 3  # stops before the REPL ever answered: the node cannot boot, say so
LOG_LIMIT = 1 << 20  # console.log and supervisor.log rotate at 1 MiB (one old file kept)

ESC = 0
IDLE, COMPILING, RUNNING = "idle", "compiling", "running"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# What ESP32 prints when machine.WDT bites: it is ESP-IDF's task watchdog with
# trigger_panic (ports/esp32/machine_wdt.c), whose user is named "mpy_machine_wdt"
# (micropython PR #12061); the panic restarts the CPU (the ROM then says rst:0xc
# SW_CPU_RESET) and reset_cause() is WDT_RESET (modmachine.c maps ESP_RST_TASK_WDT).
WDT_PANIC = (b"E (0) task_wdt: Task watchdog got triggered. The following tasks/users did not "
             b"reset the watchdog in time:\r\nE (0) task_wdt:  - mpy_machine_wdt\r\n"
             b"E (0) task_wdt: Aborting.\r\n\r\nRebooting...\r\n")


def _to_main_thread(pid: int, sig: int) -> None:
    """Signal the node's main thread only. The node also runs a timer thread (the sim's
    timer hardware, boards/sim/rom/_clock.py); a process-wide SIGINT could land there and
    the Unix port raises KeyboardInterrupt in whichever thread takes it."""
    try:
        rc = ctypes.CDLL(None, use_errno=True).tgkill(pid, pid, sig)  # glibc >= 2.30
    except AttributeError:
        rc = -1
    if rc != 0:
        os.kill(pid, sig)


TRACE = bool(os.environ.get("CYPHY_SIM_TRACE"))  # log frames and SIGINTs (debugging)


def escape(data: bytes) -> bytes:
    return data.replace(b"\x00", b"\x00\xff")


def unescape(data: bytes) -> bytes:
    """Inverse of escape(), dropping link commands (used when replaying input to a new process)."""
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == ESC and i + 1 < len(data):
            if data[i + 1] == 0xFF:
                out.append(0)
            i += skip_command(data, i)
        else:
            out.append(c)
            i += 1
    return bytes(out)


class Pacer:
    """Token bucket at a UART's byte rate; rate 0 means unlimited."""

    def __init__(self, baud: int, burst: int = 16) -> None:
        self.rate = baud / 10.0  # 8N1: start + 8 data + stop bits
        self.burst = burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    def allow(self, want: int) -> int:
        if self.rate <= 0:
            return want
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        n = min(want, int(self.tokens))
        self.tokens -= n
        return n

    def wait_s(self) -> float:
        """Seconds until one more byte may go."""
        if self.rate <= 0 or self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate


# A WROOM node (Node.ram() "wroom"): the 32-bit MicroPython with the ROM and the firmware
# frozen in (cyphy.frozen), given the chip's heap plus room for the ROM's own objects (its
# machine, network, REPL and flash: C on the chip); once they are made, the ROM fills what
# is more than the chip leaves free with ballast (simboot._as_the_chip), so the firmware
# finds the chip's free heap, split into the chip's areas.
WROOM_ROM_ROOM = 96 * 1024      # more than the ROM's objects (measured: docs/boards.md)
CHIP_BARE = 1216                # what a bare MicroPython holds (32-bit, `make bench` section 7)


class Child:
    """One run of the node's MicroPython process (from a reset to the next)."""

    @staticmethod
    def _wroom(node: Node, args: list[str], env: dict[str, str], bench: bool) -> str:
        from cyphy import check, frozen

        exe = frozen.binary("sim", rom=True)
        frozen.sim_launcher(exe)
        h = check.heap_for(node.chip(), False)
        args += [f"chip_free={h.bytes - CHIP_BARE}", f"chip_area={h.area}"]
        env["CYPHY_SIM_RUNTIME"] = str(exe)
        return str(h.bytes + WROOM_ROM_ROOM + (BENCH_HEAP if bench else 0))

    def __init__(self, node: Node, mode: str, reset: str, heap: str, ticks_start: int,
                 virtual_time: bool, bench: str | None, wdt: tuple[float, float] | None = None,
                 cpu_x1000: int = 0, speed: str = "host") -> None:
        cfg = node.config()
        vfs = flashimage.find_partition(flashimage.read_partition_table(node.image), "vfs")
        self.stdin_r, self.stdin_w = os.pipe()
        # Non-blocking read end: MicroPython's readinto() on a blocking fd waits for a
        # full buffer; this way it returns what the "UART" has received so far.
        os.set_blocking(self.stdin_r, False)
        args = [
            f"image={node.image}",
            f"vfs_offset={vfs.offset}",
            f"vfs_size={vfs.size}",
            f"mode={mode}",
            f"reset={reset}",
            f"uid={cfg['mac']}",
            f"name={node.name}",
            f"ip={cfg.get('ip', '127.0.0.1')}",
            f"ticks_start={ticks_start}",
            f"chip={node.chip()}",
        ]
        if cpu_x1000:
            args.append(f"cpu={cpu_x1000}")
        if speed == "chip":
            args.append("speed=chip")
        if virtual_time:
            args.append("time=virtual")
        if bench:
            args.append("bench=" + bench)
        # machine.WDT survives a soft reset on ESP32 (ports/esp32/main.c's soft_reset_exit
        # deinitialises timers, PWM, pins and threads, never the task watchdog): the new
        # process gets the running watchdog, its timeout and the time left before it bites.
        self.wdt_timeout = 0.0  # seconds; 0: machine.WDT not started
        self.wdt_fed = 0.0
        if wdt is not None:
            self.wdt_timeout, self.wdt_fed = wdt
            left = self.wdt_timeout - (time.monotonic() - self.wdt_fed)
            args.append(f"wdt={int(self.wdt_timeout * 1000)}:{max(0, int(left * 1000))}")
        # The node's chip description (boards/esp32/pins.py and chip_<chip>.py) for the
        # ROM's _hw.py: the node's sandbox lets it read only the ROM's own directory.
        env = {**os.environ, "CYPHY_SIM_CHIPS": chips_source(node.chip())}
        if node.ram() == "wroom":
            heap = self._wroom(node, args, env, bool(bench))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cyphy.sim.mpchild", str(rom_dir()), str(node.image), heap,
             bench or "", *args],
            stdin=self.stdin_r,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            env=env,
        )
        for fd in (self.stdin_w, self.proc.stdout.fileno(), self.proc.stderr.fileno()):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        # The output pipe is the UART's TX buffer: keep it small (one page, the minimum)
        # so a node that prints faster than the line rate blocks in print() as on ESP32
        # instead of queueing seconds of output.
        try:
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, 4096)
        except OSError:
            pass
        self.started = time.monotonic()
        self.to_stdin = bytearray()  # escaped bytes waiting for room in the pipe
        self.frame_buf = bytearray()  # partial output frame
        self.state = IDLE  # RUNNING: user code runs, the interrupt char means SIGINT
        self.intr: int | None = 3
        self.want_interrupt = False  # a Ctrl-C is waiting to reach the user code
        self.interrupted = False  # one SIGINT per run: more Ctrl-Cs collapse, as on ESP32
        self.leftover = bytearray()
        self.reboot: bytes | None = None  # b'sf' / b'sr' / b'h' / b'd' / b'w' once asked for
        self.rx_fill = 0  # console bytes delivered and not yet reported consumed ('A')
        self.rx_waiting = False  # the node said it blocks waiting for console input

    def unread_input(self) -> bytes:
        """After exit: input the process never consumed, in order, unescaped."""
        os.set_blocking(self.stdin_r, False)
        drained = bytearray()
        try:
            while chunk := os.read(self.stdin_r, 65536):
                drained += chunk
        except BlockingIOError:
            pass
        return bytes(self.leftover) + unescape(bytes(drained) + bytes(self.to_stdin))

    def close(self) -> None:
        for fd in (self.stdin_r, self.stdin_w):
            try:
                os.close(fd)
            except OSError:
                pass
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


# A bench's plant model lives in the node's heap: about 33 KB of code and state, and,
# because the Unix port boxes every float, a stream of short-lived garbage (about 4 KB per
# millisecond step of real time) whose collections would otherwise fragment the heap the
# firmware sees. A real plant costs the ESP32 nothing, so the sim adds this on top.
BENCH_HEAP = 192 * 1024


def _heap_plus(heap: str, extra: int) -> str:
    """MicroPython's -X heapsize value (e.g. "256K") plus extra bytes."""
    return str(parse_heap(heap) + extra)


class Supervisor:
    def __init__(self, node: Node, baud: int, heap: str, ready_fd: int | None, ticks_start: int = 0,
                 virtual_time: bool = False, download: bool = False, speed: str = "host") -> None:
        self.node = node
        # The speed model (cyphy.sim.speed): the chip's slowness against this host, for the
        # node's chip-time statistics, and with speed "chip" for its soft callbacks' time.
        self.speed = speed
        try:
            self.cpu_x1000 = int(sim_speed.factor(node.chip(), node.ram()) * 1000)
        except sim_speed.SpeedError:
            if speed == "chip":
                raise
            self.cpu_x1000 = 0  # unknown: the node reports host time only
        self.download = download  # power on in serial download mode (GPIO0 held low)
        self.virtual_time = virtual_time
        # the bench (plant + wiring): the node process reads it at boot, before its sandbox
        # hides the host filesystem (a long JSON argument would not survive MicroPython's argv)
        self.bench = str(node.bench) if node.bench.exists() else None
        self.ticks_start = ticks_start
        self.ticks_epoch: tuple[float, int] | None = None
        self.baud = baud
        # The plant's share of the heap comes on top (BENCH_HEAP), as a real plant is physical.
        self.heap_arg = heap
        self.heap = _heap_plus(heap, BENCH_HEAP if self.bench else 0)  # bytes
        self.ready_fd = ready_fd
        self.tx = Pacer(baud)
        self.rx = Pacer(baud)
        self.out_buf = bytearray()  # node -> host, waiting for line time
        self.in_buf = bytearray()  # host -> node, waiting for line time
        self.rx_arrived = bytearray()  # past the line, held: the node's buffer had no room
        self.rx_dropped = 0  # bytes lost to a full RX buffer, not yet logged
        self.rx_overflow_total = 0
        self.host_open = False
        self.next_host_check = 0.0
        self.stopping = False
        self.child: Child | None = None
        self.crashes: list[float] = []
        self.log_f = open(node.supervisor_log, "a", buffering=1)
        self.console = open(node.console_log, "ab", buffering=0)
        self.sandbox = "unknown"
        self.inspecting = False  # inside interrupt(): the node is stopped
        self.gear = Equipment(self)  # control socket (plant requests) and serial-line faults
        # bytes lost to the node's full receive buffer (pump_rx), shown by link.stats
        self.gear.to_node.stats.setdefault("overflow", 0)

    # ------------------------------------------------------------------ setup
    def log(self, msg: str) -> None:
        self.log_f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")
        if self.log_f.tell() > LOG_LIMIT:  # a long-lived node must not fill the disk
            self.log_f.close()
            os.replace(self.node.supervisor_log, self.node.supervisor_log.with_suffix(".log.1"))
            self.log_f = open(self.node.supervisor_log, "a", buffering=1)

    def open_port(self) -> str:
        self.master, slave = os.openpty()
        pts = os.ttyname(slave)
        tty.setraw(slave)  # a USB-UART has no line discipline: no echo, no signals
        os.close(slave)  # the host opens it; holding it would hide hang-ups from us
        os.set_blocking(self.master, False)
        link = self.node.tty
        tmp = link.with_name(link.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(pts, tmp)
        os.replace(tmp, link)
        self.pts = pts
        return pts

    def notify(self, line: str) -> None:
        if self.ready_fd is None:
            return
        try:
            os.write(self.ready_fd, (line + "\n").encode())
        except OSError:
            pass
        if line.startswith(("ready", "error")):
            os.close(self.ready_fd)
            self.ready_fd = None

    # ------------------------------------------------------------------ child
    def start_child(self, mode: str, reset: str, carry: bytes = b"",
                    wdt: tuple[float, float] | None = None) -> None:
        # ticks restart at every hard reset, as on the chip; a soft reboot keeps counting
        if reset != "soft" or self.ticks_epoch is None:
            self.ticks_epoch = (time.monotonic(), self.ticks_start)
        t0, start = self.ticks_epoch
        # exactly ticks_start after a hard reset (virtual time must start at the same instant
        # on every run, not a microsecond later now and then)
        ticks = start if reset != "soft" else (start + int((time.monotonic() - t0) * 1e6)) & ((1 << 30) - 1)
        self.child = Child(self.node, mode, reset, self.heap, ticks, self.virtual_time, self.bench, wdt,
                           self.cpu_x1000, self.speed)
        self.in_buf[0:0] = carry + self.rx_arrived  # input typed before the reset is not lost
        self.rx_arrived.clear()
        self.log(f"reset={reset} mode={mode} pid={self.child.proc.pid}")

    def child_output(self, data: bytes) -> None:
        """Parse the node's stdout: cooked text and frames (see _link.py)."""
        c = self.child
        assert c is not None
        buf = c.frame_buf
        buf += data
        while buf:
            i = buf.find(b"\x00")
            if i != 0:
                text = bytes(buf if i < 0 else buf[:i])
                self.console_out(text.replace(b"\n", b"\r\n"))
                del buf[: len(text)]
                continue
            if len(buf) < 4:
                return
            n = buf[2] | buf[3] << 8
            if len(buf) < 4 + n:
                return
            kind, payload = buf[1], bytes(buf[4 : 4 + n])
            del buf[: 4 + n]
            self.frame(kind, payload)
        if c.want_interrupt and c.state == RUNNING and not self.inspecting:
            self.interrupt(c)

    def frame(self, kind: int, payload: bytes) -> None:
        c = self.child
        assert c is not None
        if TRACE:
            self.log(f"frame {chr(kind)} {payload[:60]!r} fill={c.rx_fill} held={len(self.rx_arrived)} in={len(self.in_buf)} st={c.state}")
        if kind == ord("R"):
            self.console_out(payload)
        elif kind == ord("T"):
            self.console_out(payload.replace(b"\n", b"\r\n"))
        elif kind == ord("A"):
            # console input consumed (LE16), then 1 if the node now waits for more
            c.rx_fill = max(0, c.rx_fill - (payload[0] | payload[1] << 8))
            c.rx_waiting = payload[2:3] == b"\x01"
            self.log_overflow()
        elif kind == ord("S"):
            if payload == b"C":
                c.state, c.intr, c.want_interrupt, c.interrupted = COMPILING, 3, False, False
            elif payload == b"R":
                c.state = RUNNING  # a held Ctrl-C is sent once this chunk is parsed
            elif c.state != IDLE:
                if c.want_interrupt:  # the code ended first: the byte is plain input
                    c.to_stdin += escape(bytes((c.intr or 3,)))
                    c.rx_fill += 1
                c.state, c.want_interrupt = IDLE, False
        elif kind == ord("K"):
            c.intr = payload[0] if payload else None
        elif kind == ord("L"):
            c.leftover += payload
        elif kind == ord("B"):
            c.reboot = payload
            if payload in (b"h", b"d", b"w"):
                c.proc.kill()  # a hard reset is instantaneous
        elif kind == ord("W"):
            # machine.WDT armed (payload: timeout ms, 3 bytes LE) or fed (empty)
            if payload:
                c.wdt_timeout = int.from_bytes(payload[:3], "little") / 1000
            c.wdt_fed = time.monotonic()
        elif kind == ord("Q"):
            self.gear.reply(payload)  # the answer to a plant request
        elif kind == ord("E"):
            ev = payload.decode(errors="replace")
            if ev.startswith("repl") and self.ready_fd is not None:
                self.notify("ready " + ev)
            elif ev == "boot":
                self.main_deadline = time.monotonic() + 1.0

    def child_exited(self) -> None:
        c = self.child
        assert c is not None
        rc = c.proc.wait()
        self.drain_child_output()
        self.log_overflow()
        carry = c.unread_input()
        c.close()
        self.child = None
        self.gear.child_gone()
        if self.stopping:
            return
        if c.reboot and c.reboot.startswith(b"s"):
            wdt = (c.wdt_timeout, c.wdt_fed) if c.wdt_timeout else None
            self.start_child("raw" if c.reboot == b"sr" else "friendly", "soft", carry, wdt)
        elif c.reboot == b"h":
            self.start_child("friendly", "sw", carry)
        elif c.reboot == b"d":
            self.start_child("friendly", "deepsleep", carry)
        elif c.reboot == b"w":
            self.log("watchdog reset")
            self.start_child("friendly", "wdt", carry)
        else:
            # The MicroPython process died on its own: report it like a panic and reboot.
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < 10] + [now]
            self.log(f"node process exited unexpectedly (status {rc}); rebooting")
            if self.ready_fd is not None and len(self.crashes) >= BOOT_CRASHES:
                # It never came up: tell the starter now instead of crash-looping until its
                # timeout (a heap too small for the sim, most often).
                self.log(f"the node stopped {len(self.crashes)} times before its REPL answered: giving up")
                self.notify(f"error its MicroPython process stopped {len(self.crashes)} times while "
                            f"booting (status {rc}; heap {parse_heap(self.heap_arg)} bytes: the sim "
                            f"boots from about 192K, the default is 512K)")
                self.stopping = True
                return
            self.console_out(b"\r\nGuru Meditation Error: the node's MicroPython process stopped (status %d). Rebooting...\r\n" % rc)
            if len(self.crashes) >= 5:
                time.sleep(CRASH_BACKOFF_S)  # do not spin on a node that cannot boot
            self.start_child("friendly", "panic", carry)

    def drain_child_output(self) -> None:
        c = self.child
        assert c is not None
        try:
            while data := os.read(c.proc.stdout.fileno(), 65536):
                self.child_output(data)
        except (BlockingIOError, OSError):
            pass
        self.child_stderr()

    def child_stderr(self) -> None:
        c = self.child
        assert c is not None
        try:
            data = os.read(c.proc.stderr.fileno(), 65536)
        except (BlockingIOError, OSError):
            return
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("sandbox: "):
                self.sandbox = line[9:]
                st = self.node.state() or {}
                if st:
                    st["sandbox"] = self.sandbox
                    self.node.write_state(st)
            self.log("node stderr: " + line)

    # ------------------------------------------------------------------ UART
    def console_out(self, data: bytes) -> None:
        self.out_buf += data
        self.console.write(data)
        if self.console.tell() > LOG_LIMIT:
            self.console.close()
            os.replace(self.node.console_log, self.node.console_log.with_suffix(".log.1"))
            self.console = open(self.node.console_log, "ab", buffering=0)

    def pump_tx(self) -> None:
        """Node -> host at line rate; bytes with no host listening are lost, as on a UART."""
        wire = self.gear.from_node
        if wire.active:  # faults on this direction (equipment.py), or bytes still delayed
            n = self.tx.allow(min(len(self.out_buf), wire.room()))
            if n > 0:
                wire.push(bytes(self.out_buf[:n]), time.monotonic())
                del self.out_buf[:n]
            data = wire.ready(time.monotonic())
            sent = len(data)
            if data and self.host_open:
                try:
                    sent = os.write(self.master, data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.host_open = False
            wire.consume(sent)
            return
        n = self.tx.allow(len(self.out_buf))
        if n <= 0:
            return
        if not self.host_open:
            del self.out_buf[:n]
            return
        try:
            sent = os.write(self.master, self.out_buf[:n])
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = n  # host went away mid-write
            self.host_open = False
        del self.out_buf[:sent]
        if sent < n:
            self.tx.tokens += n - sent

    def pump_rx(self) -> None:
        """Host -> node at line rate; the interrupt char becomes SIGINT while code runs.

        The node's receive buffer holds RX_RING bytes, as ESP32's. Bytes that arrive while
        it is full are dropped, as ESP32's UART interrupt drops them, when the node could
        not have emptied it: user code runs (or is being compiled) and is not waiting for
        console input. While the ROM's REPL reads, or user code waits for input, ESP32
        would take each byte as it comes; the sim then holds the excess in the line
        instead (a delay, never a loss), so that the host's CPU scheduling, not the node,
        cannot cause a drop. With --baud 0 nothing is dropped (held instead). Drops are
        counted in supervisor.log and in link.stats ("to_node": "overflow")."""
        c = self.child
        if c is None or c.reboot is not None:
            return
        if self.rx_arrived:  # bytes held at the UART's pins: the buffer had no room
            chunk = bytes(self.rx_arrived)
            self.rx_arrived.clear()
        else:
            want = len(self.in_buf)
            if self.gear.to_node.active:
                want = min(want, self.gear.to_node.room())
            n = self.rx.allow(want)
            chunk = b""
            if n > 0:
                chunk = bytes(self.in_buf[:n])
                del self.in_buf[:n]
            if self.gear.to_node.active:  # faults on this direction (equipment.py)
                chunk = self.gear.to_node.take(chunk, time.monotonic())
        i = 0
        while i < len(chunk):
            j = chunk.find(c.intr, i) if c.intr is not None else -1
            part = chunk[i:] if j < 0 else chunk[i:j]
            took = self.rx_deliver(c, part)
            if took < len(part):  # no room, and the node reads: hold the rest at the pins
                self.rx_arrived += chunk[i + took:]
                break
            if j < 0:
                break
            self.flush_stdin(c)
            if not self.interrupt_char(c):
                self.rx_arrived += chunk[j:]
                break
            i = j + 1
        self.flush_stdin(c)

    def log_overflow(self) -> None:
        """One line per overflow episode: when the node next takes input, or resets."""
        if self.rx_dropped:
            self.rx_overflow_total += self.rx_dropped
            self.log(f"console RX buffer full ({RX_RING} bytes): {self.rx_dropped} bytes dropped "
                     f"({self.rx_overflow_total} since power on)")
            self.rx_dropped = 0

    def rx_deliver(self, c: Child, part: bytes) -> int:
        """Put part into the node's receive buffer: how many bytes were delivered or
        dropped (fewer than len(part): the rest waits for room)."""
        room = max(0, RX_RING - c.rx_fill)
        n = min(room, len(part))
        if n:
            c.to_stdin += escape(part[:n])
            c.rx_fill += n
        if n == len(part):
            return n
        # user code busy: ESP32 drops them. Without line-rate emulation (--baud 0) bytes
        # arrive in no time at all, which no UART does: whether the node had emptied its
        # buffer would be up to the host's scheduler, so they are held instead.
        if self.baud and c.state != IDLE and not c.rx_waiting:
            lost = len(part) - n
            self.rx_dropped += lost
            stats = self.gear.to_node.stats
            stats["overflow"] = stats.get("overflow", 0) + lost
            return len(part)
        return n

    def interrupt_char(self, c: Child) -> bool:
        """The interrupt char arrived; False if it must wait (the buffer is full)."""
        if c.state == IDLE:
            if c.rx_fill >= RX_RING and not c.rx_waiting:
                return False
            c.to_stdin += escape(bytes((c.intr,)))
            c.rx_fill += 1
        elif not c.interrupted:
            c.want_interrupt = True  # while compiling: held for the code about to run
            if c.state == RUNNING:
                self.interrupt(c)
        return True

    def interrupt(self, c: Child) -> None:
        """Raise KeyboardInterrupt in user code, never in the ROM.

        Stop the process and parse everything it wrote: if that includes its 'I' frame the
        code has already ended and the char is plain input; otherwise the process is
        inside user code (or in the allocation-free step that leaves it) and SIGINT is safe."""
        pid = c.proc.pid
        try:
            os.kill(pid, signal.SIGSTOP)
            os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        except (ProcessLookupError, ChildProcessError):
            return
        self.inspecting = True
        try:
            try:
                while data := os.read(c.proc.stdout.fileno(), 65536):
                    self.child_output(data)
            except (BlockingIOError, OSError):
                pass
            if c.want_interrupt and c.state == RUNNING and c.intr is not None:
                if TRACE:
                    self.log("SIGINT")
                _to_main_thread(pid, signal.SIGINT)
                c.interrupted = True
            c.want_interrupt = False
        finally:
            self.inspecting = False
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def flush_stdin(self, c: Child) -> None:
        if c.to_stdin:
            try:
                w = os.write(c.stdin_w, c.to_stdin)
                del c.to_stdin[:w]
            except (BlockingIOError, BrokenPipeError):
                pass
        self.gear.flush(c)  # plant requests, each written whole

    def check_host(self) -> None:
        """POLLHUP on the master means no process holds the port open."""
        p = select.poll()
        p.register(self.master, select.POLLIN)
        ev = dict(p.poll(0)).get(self.master, 0)
        was = self.host_open
        self.host_open = not (ev & select.POLLHUP)
        if self.host_open != was:
            self.log("host " + ("opened" if self.host_open else "closed") + " the port")

    def read_host(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:
                self.host_open = False
                return
            raise
        self.in_buf += data

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        pts = self.open_port()
        self.main_deadline = float("inf")
        self.node.write_state(
            {
                "name": self.node.name,
                "pid": os.getpid(),
                "port": str(self.node.tty),
                "pts": pts,
                "baud": self.baud,
                "virtual_time": self.virtual_time,
                "speed": self.speed,
                "chip_slowdown": self.cpu_x1000 / 1000 if self.cpu_x1000 else None,
                "bench": self.bench is not None,
                "started": time.time(),
                "sandbox": self.sandbox,
                "download": self.download,
            }
        )
        self.log(f"power on: port {self.node.tty} -> {pts}, baud {self.baud or 'unlimited'}")
        if self.download:
            self.download_mode()
        if not self.stopping:
            self.start_child("friendly", "power")
        while not self.stopping:
            self.step()
        if self.child is not None:
            self.child.proc.kill()
            self.child.proc.wait()
            self.child.close()
        self.gear.close()
        self.log("power off")
        self.node.state_path.unlink(missing_ok=True)
        self.node.tty.unlink(missing_ok=True)
        return 0

    def step(self) -> None:
        c = self.child
        assert c is not None
        now = time.monotonic()
        if not self.host_open and now >= self.next_host_check:
            self.check_host()
            self.next_host_check = now + HOST_POLL_S
        if self.ready_fd is not None and now >= self.main_deadline:
            self.notify("ready main.py is running")
        if c.wdt_timeout and now - c.wdt_fed > c.wdt_timeout * 1.25 + 0.05 and c.reboot is None:
            # the node stopped feeding machine.WDT (hung without ever waiting): reset it
            self.log("watchdog expired (checked by the supervisor)")
            self.console_out(WDT_PANIC)
            c.reboot = b"w"
            c.proc.kill()
        p = select.poll()
        out_fd = c.proc.stdout.fileno()
        err_fd = c.proc.stderr.fileno()
        if len(self.out_buf) < TX_FIFO:  # else the node blocks in print(): backpressure
            p.register(out_fd, select.POLLIN)
        p.register(err_fd, select.POLLIN)
        if self.host_open and len(self.in_buf) < RX_BACKLOG:
            p.register(self.master, select.POLLIN)
        if c.to_stdin:
            p.register(c.stdin_w, select.POLLOUT)
        self.gear.register(p, c)
        timeout = self.gear.timeout(now)  # 1 s, or until a delayed byte is due
        if self.out_buf:
            timeout = min(timeout, max(self.tx.wait_s(), 0.0005))
        if self.in_buf:
            timeout = min(timeout, max(self.rx.wait_s(), 0.0005))
        if self.rx_arrived:  # held for room in the node's buffer ('A' frames wake us too)
            timeout = min(timeout, 0.005)
        if not self.host_open:
            timeout = min(timeout, HOST_POLL_S)
        if self.ready_fd is not None:
            timeout = min(timeout, max(self.main_deadline - now, 0.001))
        try:
            events = p.poll(timeout * 1000)
        except InterruptedError:
            events = []
        for fd, ev in events:
            if fd == out_fd:
                try:
                    data = os.read(out_fd, 4096)
                except BlockingIOError:
                    continue
                if data:
                    self.child_output(data)
                elif c.proc.poll() is not None or not data:
                    self.child_exited()
                    return
            elif fd == err_fd:
                self.child_stderr()
            elif self.gear.owns(fd):
                self.gear.handle(fd, ev)
            elif fd == self.master:
                if ev & select.POLLHUP:
                    self.host_open = False
                    self.log("host closed the port")
                elif ev & select.POLLIN:
                    self.read_host()
        if c.proc.poll() is not None and self.child is c:
            self.child_exited()
            return
        self.pump_rx()
        self.pump_tx()

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    # ------------------------------------------------------------------ download mode
    def download_mode(self) -> None:
        """ESP32's serial download mode (GPIO0 low at power-on): no MicroPython process runs;
        romloader answers esptool on the port, on flash.bin, until the loader is told to run
        the app (then run() boots MicroPython as usual) or the node is stopped."""
        mac = bytes.fromhex(self.node.config()["mac"])
        loader = romloader.RomLoader(self.node.image, mac, self.baud or romloader.ROM_BAUD,
                                     lambda: romloader.port_baud(self.master), self.log,
                                     chip=self.node.chip())
        self.log("download mode: waiting for download")
        self.console_out(romloader.banner("power", self.node.chip()))
        self.notify("ready download mode")
        try:
            while not self.stopping and self.download_step(loader):
                pass
        finally:
            loader.close()
        self.tx, self.rx = Pacer(self.baud), Pacer(self.baud)  # the app's UART: --baud again
        self.in_buf.clear()  # what the host sent the loader is not the app's input
        if not self.stopping:
            self.log("download mode: the loader runs the app")
            st = self.node.state() or {}
            if st:
                st["download"] = False
                self.node.write_state(st)

    def _bootable(self) -> bool:
        """Whether the node process could start: flash.bin has a partition table with vfs."""
        try:
            flashimage.find_partition(flashimage.read_partition_table(self.node.image), "vfs")
        except (flashimage.FlashImageError, OSError) as e:
            self.log(f"download mode: cannot run the app: {e}")
            return False
        return True

    def _line_rate(self, baud: int) -> None:
        if self.baud:  # --baud 0: no line-rate emulation at any rate
            # bursts of about 4 ms of bytes: at 921600 baud 16-byte bursts would cap the
            # line at what one turn of the loop (>= 0.5 ms) moves
            burst = max(16, baud // 2500)
            self.tx, self.rx = Pacer(baud, burst), Pacer(baud, burst)

    def download_step(self, loader: romloader.RomLoader) -> bool:
        """One turn of the download-mode loop; False once the loader runs the app. Loader
        traffic goes to the port only: console.log keeps just the ROM's banners."""
        now = time.monotonic()
        if not self.host_open and now >= self.next_host_check:
            self.check_host()
            self.next_host_check = now + HOST_POLL_S
        p = select.poll()
        if self.host_open and len(self.in_buf) < RX_BACKLOG:
            p.register(self.master, select.POLLIN)
        timeout = HOST_POLL_S if not self.host_open else 1.0
        if self.out_buf:
            timeout = min(timeout, max(self.tx.wait_s(), 0.0005))
        if self.in_buf and loader.after is None:
            timeout = min(timeout, max(self.rx.wait_s(), 0.0005))
        try:
            events = p.poll(timeout * 1000)
        except InterruptedError:
            events = []
        for _fd, ev in events:
            if ev & select.POLLIN:
                self.read_host()
            elif ev & select.POLLHUP:
                self.host_open = False
                self.log("host closed the port")
        if loader.after is None:
            n = self.rx.allow(len(self.in_buf))
            if n > 0:
                rate = loader.baud
                self.out_buf += loader.feed(bytes(self.in_buf[:n]))
                del self.in_buf[:n]
                if loader.baud != rate:  # autobaud on SYNC: the reply goes at the new rate
                    self._line_rate(loader.baud)
        elif not self.out_buf:  # the reply has left the UART: now reset, re-clock or run
            after = loader.act()
            if after is not None and after.kind == "run":
                if self._bootable():
                    return False
                # an erased flash has no bootloader to run: ESP32's ROM reports the failed
                # read and resets; its boot straps still say download mode
                self.console_out(b"flash read err, 1000\r\nets_main.c 371 \r\n")
                loader.reset()
                after = romloader.After("reset")
            if after is not None and after.kind == "reset":
                self.in_buf.clear()  # what arrives while the chip resets is lost
                self.console_out(romloader.banner("software", loader.chip))
            self._line_rate(loader.baud)
        self.pump_tx()
        return True


REALTIME_NICE = -10


def realtime_priority() -> bool:
    """Raise this process (and so the node process it starts) above ordinary host work.

    A chip has its own CPU; a sim node shares the host's with everything else, and a busy
    host that keeps the node off the CPU for 100 ms shows as skipped control periods that
    no ESP32 would have. The node mostly sleeps between deadlines, so a higher priority
    only makes the host's scheduler run it as soon as a deadline comes (CFS gives a nice
    -10 task about 9 times the weight of a nice 0 one). Allowed for root or with
    CAP_SYS_NICE; elsewhere the node runs at normal priority (returns False)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, REALTIME_NICE)
        return True
    except (PermissionError, OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cyphy-sim-supervisor")
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--heap", default="512K")
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--ticks-start", type=int, default=0)
    ap.add_argument("--virtual-time", action="store_true")
    ap.add_argument("--download", action="store_true", help="power on in serial download mode")
    ap.add_argument("--speed", choices=("host", "chip"), default="host")
    a = ap.parse_args(argv)
    if not a.virtual_time:
        realtime_priority()
    node = Node.named(a.name, a.home)
    try:
        parse_heap(a.heap)  # garbage would crash-loop the node until the starter's timeout
    except SimError as e:
        if a.ready_fd is not None:
            os.write(a.ready_fd, f"error {e}".encode())
        return 1
    try:
        sup = Supervisor(node, a.baud, a.heap, a.ready_fd, a.ticks_start, a.virtual_time, a.download,
                         a.speed)
    except sim_speed.SpeedError as e:
        if a.ready_fd is not None:
            os.write(a.ready_fd, f"error {e}".encode())
        return 1
    try:
        return sup.run()
    except Exception as e:  # report to the starter instead of dying silently
        sup.log(f"supervisor failed: {e!r}")
        sup.notify(f"error supervisor failed: {e}")
        raise


if __name__ == "__main__":
    sys.exit(main())
