"""The one raw-REPL client: a node's MicroPython raw REPL, on mpremote's serial transport.

    with RawRepl("/dev/ttyUSB0") as repl:      # or a sim node's PTY
        repl.enter()                           # Ctrl-C, Ctrl-A: no soft reset, the loops run on
        repl.exec("print(6 * 7)")              # "42\\r\\n"; NodeError carries the node's traceback
        repl.read_file("/config.json")         # bytes, or None
        repl.leave()                           # Ctrl-B: back at the friendly prompt

Everything that talks to the raw REPL goes through this class (cyphy.device, the protocol
link's exec, the HIL node, the bench, the console tests); mpremote's SerialTransport does
the entry, the raw paste with the node's flow control and the reading of results. This
module adds what cyphy needs on top:

- entry without a soft reset, after a pause (a running node.serve() takes CR Ctrl-C as a
  person's only after one), tried again after `unstick(repl, seen)` when no raw REPL
  answered (cyphy.device frees a file receiver a killed host left running);
- the '>' prompt is read after every entry and every exec, so the line holds nothing
  pending between operations (byte-level tests can look at the console right after);
- a KeyboardInterrupt (Ctrl-C on the host) in the middle of an exec ends the node's side
  too: Ctrl-C cancels a raw paste or interrupts the running code, and the client waits for
  the raw prompt before it raises `Interrupted` (a KeyboardInterrupt carrying what the
  node printed), so the console answers the next command at once;
- errors as one line naming the port: ReplError, and NodeError for code that raised.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import time
from typing import Callable

BANNER = b"raw REPL; CTRL-B to exit\r\n"
PROMPT = b">"
QUIET_S = 0.08   # > the firmware's _QUIET_MS: a Ctrl-C after this pause ends node.serve()
IO_TIMEOUT_S = 1.0  # serial read timeout while mpremote reads (it waits this long for a byte)
PASTE_TIMEOUT_S = 5.0  # ... while it pastes code: the node acknowledges each window from its
                       # main thread, which soft callbacks (a flash write, the Wi-Fi keeper,
                       # a busy service) may hold off for over a second
CANCEL_S = 1.5   # how long a cancelled exec may take to get back to the raw prompt


class ReplError(Exception):
    """The raw REPL cannot be reached or used; the message names the port and what to do."""


class NodeError(ReplError):
    """Code run on the node raised; .node_error is its traceback, .out what it printed."""

    def __init__(self, msg: str, node_error: str, out: str = "") -> None:
        super().__init__(msg)
        self.node_error = node_error
        self.out = out


class Interrupted(KeyboardInterrupt):
    """Ctrl-C on the host during an exec; the node is back at its raw prompt (.clean) or
    its state is unknown. .out is what the node printed before it stopped."""

    def __init__(self, out: str = "", clean: bool = True) -> None:
        super().__init__("interrupted")
        self.out = out
        self.clean = clean


def last_line(err: str) -> str:
    """The last non-empty line of a traceback: the exception."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "error"


def open_error(name: str, device: str) -> ReplError:
    """Why the port would not open, in words (mpremote only says 'failed to access')."""
    import serial

    if "://" not in device and not os.path.exists(device):
        return ReplError(f"{name}: no such serial port (cyphy discover lists the ports it sees)")
    try:
        s = serial.serial_for_url(device, 115200, exclusive=True, timeout=0)
        s.close()
    except serial.SerialException as e:
        msg = str(e)
        if "lock" in msg.lower() or "busy" in msg.lower() or "Errno 16" in msg or "Errno 11" in msg:
            return ReplError(f"{name}: the port is busy: another program (mpremote, a terminal, "
                             f"cyphy monitor) has it open")
        if "Errno 13" in msg or "ermission" in msg:
            return ReplError(f"{name}: permission denied (on Linux, add yourself to the dialout group)")
        if "Errno 2" in msg:
            return ReplError(f"{name}: no such serial port (cyphy discover lists the ports it sees)")
        return ReplError(f"{name}: cannot open: {msg}")
    except (OSError, ValueError) as e:
        return ReplError(f"{name}: cannot open: {e}")
    return ReplError(f"{name}: cannot open the port")


def _transport_class() -> type:
    from mpremote.transport_serial import SerialTransport

    class Transport(SerialTransport):
        """mpremote's SerialTransport, told when the raw prompt ('>') was already read."""

        prompt_read = False

        def read_until(self, min_num_bytes: int, ending: bytes, timeout: float | None = 10,
                       data_consumer: Callable | None = None,
                       timeout_overall: float | None = None) -> bytes:
            if ending == PROMPT and self.prompt_read:
                self.prompt_read = False
                return PROMPT
            return super().read_until(min_num_bytes, ending, timeout, data_consumer, timeout_overall)

    return Transport


class RawRepl:
    """A node's raw REPL over its serial port (see the module docstring)."""

    def __init__(self, device: str, baud: int = 115200, name: str | None = None,
                 exclusive: bool = True, timeout: float = 10.0,
                 unstick: Callable[["RawRepl", bytes], None] | None = None) -> None:
        from mpremote.transport import TransportError

        self.device = device
        self.name = name or device
        self.timeout = timeout
        self.unstick = unstick
        self.in_raw = False
        self.entry_attempts = 0  # how many Ctrl-C, Ctrl-A tries the last enter() took
        try:
            self.transport = _transport_class()(device, baudrate=baud, exclusive=exclusive,
                                                timeout=IO_TIMEOUT_S)
        except TransportError:
            raise open_error(self.name, device) from None
        except Exception as e:  # noqa: BLE001 - pyserial raises several kinds
            raise open_error(self.name, device) from e
        self.serial = self.transport.serial
        self.serial.inter_byte_timeout = None  # reads return what is there; no 1 s waits
        # mpremote's reads then block for the next byte (as it does on a PTY) instead of
        # polling in_waiting with 10 ms sleeps: each exchange answers that much sooner
        self.transport.is_pty = True

    def __enter__(self) -> "RawRepl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _io_timeout(self, timeout: float = IO_TIMEOUT_S) -> "contextlib.Iterator[None]":
        # mpremote reads fixed-size answers ("R\x01", the window) with the port's timeout;
        # a port shared with the protocol link has a short one
        old = self.serial.timeout
        if old == timeout:  # (setting it reconfigures the port: a few system calls)
            yield
            return
        self.serial.timeout = timeout
        try:
            yield
        finally:
            self.serial.timeout = old

    # ------------------------------------------------------------ entry and exit
    def enter(self, soft_reset: bool = False, attempts: int = 3) -> None:
        """Into the raw REPL without a soft reset (Ctrl-C, Ctrl-A); soft_reset=True then
        soft-resets (Ctrl-D: a fresh heap, boot.py runs again). The '>' prompt is read."""
        from mpremote.transport import TransportError

        seen = b""
        self.transport.prompt_read = False
        try:
            with self._io_timeout():
                for attempt in range(attempts):
                    time.sleep(QUIET_S)  # after a pause: node.serve() takes it as a person's
                    out = io.StringIO()
                    try:
                        with contextlib.redirect_stdout(out):  # mpremote prints what it saw
                            self.transport.enter_raw_repl(soft_reset=False,
                                                          timeout_overall=1.5 if attempt == 0 else 5.0)
                        self._read_prompt(5.0)
                        self.entry_attempts = attempt + 1
                        break
                    except TransportError:
                        seen = _printed_bytes(out.getvalue())
                        if attempt + 1 < attempts and self.unstick is not None:
                            self.unstick(self, seen)
                else:
                    tail = seen[-120:].decode(errors="replace")
                    raise ReplError(f"{self.name}: no MicroPython raw REPL answered (is it a MicroPython "
                                    f"board, and is nothing else using its console?); last output: {tail!r}")
                self.in_raw = True
                if soft_reset:
                    self.soft_reset()
        except KeyboardInterrupt:
            self._quiet_write(b"\r\x02")  # whatever was reached: back to the friendly REPL
            self.in_raw = False
            raise
        except (OSError, ValueError) as e:  # pyserial's errors when the port goes away
            self.in_raw = False
            raise ReplError(f"{self.name}: lost the node's REPL: {e}") from None

    def _read_prompt(self, timeout: float) -> None:
        data = self.transport.read_until(1, PROMPT, timeout=timeout, timeout_overall=timeout)
        if not data.endswith(PROMPT):
            raise ReplError(f"{self.name}: no raw REPL prompt; the node said {data[-120:]!r}")
        self.transport.prompt_read = True

    def soft_reset(self) -> bytes:
        """Ctrl-D in the raw REPL: a fresh MicroPython heap, boot.py runs; stays in the raw
        REPL (as mpremote does it). Returns what the node printed while it rebooted."""
        self.transport.prompt_read = False
        try:
            self.serial.write(b"\x04")
            out = self.transport.read_until(1, b"soft reboot\r\n", timeout=self.timeout,
                                            timeout_overall=self.timeout)
            if not out.endswith(b"soft reboot\r\n"):
                raise ReplError(f"{self.name}: no soft reboot; the node said {out[-120:]!r}")
            out += self.transport.read_until(1, BANNER, timeout=self.timeout,
                                             timeout_overall=self.timeout)
            if not out.endswith(BANNER):
                raise ReplError(f"{self.name}: no raw REPL after a soft reset; the node said "
                                f"{out[-120:]!r}")
            self._read_prompt(self.timeout)
        except (OSError, ValueError) as e:
            self.in_raw = False
            raise ReplError(f"{self.name}: lost the node's REPL: {e}") from None
        self.in_raw = True
        return out

    def leave(self, wait: bool = False) -> bytes:
        """Ctrl-B: back to the friendly REPL (where a person expects it). wait=True reads up
        to its '>>> ' prompt and returns what came."""
        self.transport.exit_raw_repl()
        self.transport.prompt_read = False
        self.in_raw = False
        if not wait:
            return b""
        data = self.transport.read_until(1, b">>> ", timeout=5.0, timeout_overall=5.0)
        if not data.endswith(b">>> "):
            raise ReplError(f"{self.name}: no friendly prompt after leaving the raw REPL; "
                            f"the node said {data[-120:]!r}")
        return data

    def close(self, leave: bool = True) -> None:
        """Leave the raw REPL (if in it and `leave`) and close the port; never fails."""
        try:
            if self.in_raw and leave:
                self.leave()
            self.serial.flush()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------ running code
    def start(self, code: str | bytes) -> None:
        """Hand code to the raw REPL (raw paste, the node's flow control) and start it;
        the caller then follows (finish()). Ctrl-C on the host cancels the paste."""
        from mpremote.transport import TransportError

        if not self.in_raw:
            self.enter()
        try:
            if self.transport.prompt_read and self.serial.in_waiting:
                self.serial.read(self.serial.in_waiting)  # at rest nothing is pending: line noise
            with self._io_timeout(PASTE_TIMEOUT_S):
                self.transport.exec_raw_no_follow(code)
        except KeyboardInterrupt:
            raise self.cancel() from None
        except TransportError as e:
            self.in_raw = False  # the next operation enters again
            raise ReplError(f"{self.name}: the raw REPL did not take the code: {e}") from None
        except (OSError, ValueError) as e:  # pyserial's errors when the port goes away
            self.in_raw = False
            raise ReplError(f"{self.name}: lost the node's REPL: {e}") from None

    def finish(self, timeout: float | None = None, out: bytes = b"",
               out_done: bool = False) -> tuple[bytes, bytes]:
        """(stdout, stderr) of the code start() began, then the raw prompt is read. out: stdout
        already read by the caller (out_done: including its end, 0x04)."""
        from mpremote.transport import TransportError

        timeout = self.timeout if timeout is None else timeout
        try:
            if out_done:
                err = self.transport.read_until(1, b"\x04", timeout=timeout)
                if not err.endswith(b"\x04"):
                    raise TransportError("timeout waiting for second EOF reception")
                result = out, err[:-1]
            else:
                more, err = self.transport.follow(timeout)
                result = out + more, err
            self._read_prompt(timeout)
            return result
        except KeyboardInterrupt:
            raise self.cancel(out) from None
        except TransportError:
            self.in_raw = False
            raise ReplError(f"{self.name}: the node did not answer within {timeout:.0f} s") from None
        except (OSError, ValueError) as e:
            self.in_raw = False
            raise ReplError(f"{self.name}: lost the node's REPL: {e}") from None

    def exec_raw(self, code: str | bytes, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Run code; (stdout, stderr) as the node sent them."""
        self.start(code)
        return self.finish(timeout)

    def exec(self, code: str | bytes, timeout: float | None = None) -> str:
        """Run code; its printed output. NodeError with the node's traceback if it raised."""
        out, err = self.exec_raw(code, timeout)
        text = out.decode(errors="replace")
        if err:
            e = err.decode(errors="replace")
            raise NodeError(f"{self.name}: the node raised: {last_line(e)}", e, text)
        return text

    def eval(self, expr: str, timeout: float | None = None) -> object:
        """A Python literal computed on the node (its repr, parsed with ast.literal_eval)."""
        return ast.literal_eval(self.exec(f"print(repr({expr}))", timeout).strip())

    def cancel(self, out: bytes = b"") -> Interrupted:
        """Ctrl-C to the node: it cancels a raw paste or interrupts the running code; wait
        (CANCEL_S at most) until the raw prompt is back. The Interrupted to raise."""
        got = bytearray(out)
        clean = False
        try:
            self.serial.write(b"\x03")
            end = time.monotonic() + CANCEL_S
            old = self.serial.timeout
            self.serial.timeout = 0.05
            try:
                while time.monotonic() < end:
                    data = self.serial.read(max(1, self.serial.in_waiting))
                    got += data
                    if not data and got.endswith(b"\x04" + PROMPT):
                        clean = True  # the exec's end and the prompt, then quiet
                        break
            finally:
                self.serial.timeout = old
        except Exception:  # noqa: BLE001 - the port may be gone: the state is unknown
            pass
        self.transport.prompt_read = clean
        self.in_raw = clean
        text = bytes(got).split(b"\x04", 1)[0]
        return Interrupted(text.decode(errors="replace"), clean)

    # ------------------------------------------------------------ files and resets
    def read_file(self, path: str, timeout: float | None = None) -> bytes | None:
        """A (small) file's content, or None if there is none (hex over the console, one exec)."""
        out = self.exec(
            "import binascii\n"
            "try:\n"
            f" _f = open({path!r}, 'rb')\n"
            "except OSError:\n"
            " print('-')\n"
            "else:\n"
            " while True:\n"
            "  _b = _f.read(256)\n"
            "  if not _b:\n"
            "   break\n"
            "  print(binascii.hexlify(_b).decode())\n"
            " _f.close()\n"
            " print('.')\n"
            " del _f, _b\n", timeout)
        lines = out.split()
        if lines and lines[0] == "-":
            return None
        if not lines or lines[-1] != ".":
            raise ReplError(f"{self.name}: could not read {path}")
        return bytes.fromhex("".join(lines[:-1]))

    def hard_reset(self, wait: float = 60.0,
                   until: bytes = b'Type "help()" for more information.') -> bytes:
        """machine.reset(); what the node prints while it boots, up to `until` (at most
        `wait` seconds; b"" if the port went away, as native USB ports do)."""
        try:
            self.start("import machine\nmachine.reset()\n")
        except ReplError:
            pass  # the reset can cut the paste's acknowledgement short
        self.in_raw = False
        self.transport.prompt_read = False
        if not wait:
            return b""
        try:
            return self.transport.read_until(1, until, timeout=None, timeout_overall=wait)
        except Exception:  # noqa: BLE001 - the port went away with the reset
            return b""

    def _quiet_write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
        except Exception:  # noqa: BLE001
            pass


def _printed_bytes(text: str) -> bytes:
    """The bytes mpremote printed (their repr) when the raw REPL did not answer."""
    for line in reversed(text.strip().splitlines()):
        try:
            v = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(v, bytes):
            return v
    return text.encode(errors="replace")
