"""Raw-REPL access to a node's filesystem over its serial port (mpremote's transport).

    with Device.open("sim://oven") as dev:         # or /dev/ttyUSB0, serial:///dev/ttyUSB0
        dev.info()                                 # {"target": "sim", "version": ..., "mpy": ...}
        dev.exec("print(1 + 1)")                   # "2\\r\\n"
        dev.sha256("/config.json")                 # hex digest, or None (no such file)
        dev.write_atomic("/config.json", data)     # /config.json.tmp, verified, renamed

The node is never soft-reset: the raw REPL is entered with Ctrl-C + Ctrl-A, so the loops
main.py started keep running, and leaving returns to the friendly prompt.

Files go over a binary stream with flow control (docs/deploy.md): the node runs a small
receiver (`_cyrx`) that reads the file from its console input in 128-byte units and
acknowledges each with one byte; the host keeps at most 256 bytes unacknowledged, which
fits the 260-byte console input buffer of MicroPython's ESP32 port even while the node is
busy writing flash. Each file is split into 4 KB pieces, each deflate-compressed on its
own (raw deflate, 2 KB window) when that makes it smaller and the node has `deflate`.
A file is written to PATH.tmp, read back from flash and hashed (SHA-256) on the node, and
only renamed over PATH when the hash matches.
"""

from __future__ import annotations

import ast
import hashlib
import os
import time
import zlib
from typing import Callable, Iterable
from urllib.parse import urlparse

UNIT = 128          # the node acknowledges every UNIT bytes of the stream it has consumed
WINDOW = 256        # bytes the host may have sent and not yet seen acknowledged
CHUNK = 2048        # file bytes per compressed piece (the node buffers one piece)
WBITS = 10          # deflate window: 1 KB on the node
ACK = b"\x06"
STALL_S = 20.0      # no acknowledgement for this long: the transfer failed
RX_IDLE_S = 3.0     # the node's receiver gives up after this long without a byte (a host
                    # that died mid-transfer); the next host frees it at once (Device._free_rx)

# The node side of a transfer, defined once per session as the global _cyrx and deleted
# on close. _cyrx(path, pieces) receives `pieces` pieces of
#   mode (0 stored, 1 raw deflate) | length (2 bytes, little-endian) | data
# into path, then reads the file back and prints "<size> <sha256 hex>". Memory: a running
# node's heap is fragmented (~50 KB free, the largest free block ~3 KB), so nothing here
# allocates more than CHUNK bytes at once: stored data goes straight from a 128-byte buffer
# to the file; a compressed piece is collected in one preallocated BytesIO and inflated
# from there with a 2**WBITS-byte window.
RX_SRC = """\
def _cyrx(p, n):
 import sys, select, micropython, hashlib, binascii, io, gc
 gc.collect()
 r = sys.stdin.buffer
 o = sys.stdout.buffer
 q = select.poll()
 q.register(r, 1)
 u = bytearray(%(unit)d)
 um = memoryview(u)
 s = [0]
 def rd(k, w):
  while k:
   if not q.poll(%(idle)d):
    raise OSError(110)
   t = min(k, %(unit)d - s[0])
   r.readinto(u, t)
   w(um[:t])
   k -= t
   s[0] += t
   if s[0] == %(unit)d:
    o.write(b'\\x06')
    s[0] = 0
 hb = bytearray(3)
 hi = [0]
 def hw(m):
  hb[hi[0]:hi[0] + len(m)] = m
  hi[0] += len(m)
 ob = bytearray(256)
 om = memoryview(ob)
 bio = f = None
 micropython.kbd_intr(-1)
 try:
  f = open(p, 'wb')
  o.write(b'\\x06')
  for _ in range(n):
   hi[0] = 0
   rd(3, hw)
   k = hb[1] | hb[2] << 8
   if hb[0] == 0:
    rd(k, f.write)
    continue
   import deflate
   if bio is None:
    bio = io.BytesIO(%(chunk)d)
   bio.seek(0)
   rd(k, bio.write)
   bio.seek(0)
   d = deflate.DeflateIO(bio, deflate.RAW, %(wbits)d)
   while True:
    j = d.readinto(ob)
    if not j:
     break
    f.write(om[:j])
   d = None
  f.close()
  f = None
 except BaseException:
  while q.poll(200):
   r.readinto(u, 1)
  raise
 finally:
  if f:
   f.close()
  micropython.kbd_intr(3)
 bio = None
 h = hashlib.sha256()
 t = 0
 with open(p, 'rb') as f:
  while True:
   j = f.readinto(ob)
   if not j:
    break
   t += j
   h.update(om[:j])
 print(t, binascii.hexlify(h.digest()).decode())
""" % {"chunk": CHUNK + 64, "unit": UNIT, "idle": int(RX_IDLE_S * 1000), "wbits": WBITS}

# Hashes of files on the node: _cyhash(paths, dirs) prints one line per existing file
# among paths and, recursively, under dirs: "F <size> <sha256 hex> <path>", and "D <path>"
# for each directory under dirs (line by line: no big string on the node's heap).
HASH_SRC = """\
def _cyhash(paths, dirs):
 import os, hashlib, binascii
 ob = bytearray(256)
 om = memoryview(ob)
 def one(p):
  h = hashlib.sha256()
  t = 0
  with open(p, 'rb') as f:
   while True:
    j = f.readinto(ob)
    if not j:
     break
    t += j
    h.update(om[:j])
  print('F', t, binascii.hexlify(h.digest()).decode(), p)
 def walk(d):
  try:
   it = [(e[0], e[1]) for e in os.ilistdir(d)]
  except OSError:
   return
  print('D', d)
  for e in it:
   c = d.rstrip('/') + '/' + e[0]
   if e[1] == 0x4000:
    walk(c)
   else:
    one(c)
 for p in paths:
  try:
   if os.stat(p)[0] & 0x4000:
    continue
  except OSError:
   continue
  one(p)
 for d in dirs:
  walk(d)
"""

INFO_SRC = """\
import sys, os, gc
try:
 import deflate
 _z = 1
except ImportError:
 _z = 0
gc.collect()
print(repr({'machine': sys.implementation._machine if hasattr(sys.implementation, '_machine') else os.uname().machine,
 'platform': sys.platform, 'version': list(sys.implementation.version[:3]),
 'mpy': getattr(sys.implementation, '_mpy', None), 'deflate': _z, 'mem_free': gc.mem_free()}))
del _z
"""


class DeviceError(Exception):
    """A user-facing problem with a node or its port; the message says what to do."""


class ExecError(DeviceError):
    """Code run on the node raised; .node_error is the node's traceback."""

    def __init__(self, msg: str, node_error: str) -> None:
        super().__init__(msg)
        self.node_error = node_error


def resolve_port(url: str) -> str:
    """The device path behind a port argument: /dev/..., serial:///dev/... or sim://NAME."""
    u = urlparse(url)
    if u.scheme == "sim":
        from cyphy.sim.nodes import Node, SimError

        name = u.netloc or u.path.strip("/")
        try:
            node = Node.named(name)
        except SimError as e:
            raise DeviceError(str(e)) from None
        if not node.exists():
            raise DeviceError(f"{url}: there is no sim node {name!r} (create and start it: cyphy sim start {name})")
        if node.state() is None:
            raise DeviceError(f"{url}: sim node {name!r} is not running (start it: cyphy sim start {name})")
        return str(node.tty)
    if u.scheme == "serial":
        return u.path or u.netloc
    if u.scheme in ("", "rfc2217", "socket", "loop"):
        return url
    raise DeviceError(f"{url}: not a serial port; give /dev/ttyUSB0, serial:///dev/ttyUSB0 or sim://NAME")


def _open_error(port: str, dev: str) -> DeviceError:
    """Why the port would not open, in words (mpremote only says 'failed to access')."""
    import serial

    if "://" not in dev and not os.path.exists(dev):
        return DeviceError(f"{port}: no such serial port (cyphy discover lists the ports it sees)")
    try:
        s = serial.serial_for_url(dev, 115200, exclusive=True, timeout=0)
        s.close()
    except serial.SerialException as e:
        msg = str(e)
        if "lock" in msg.lower() or "busy" in msg.lower() or "Errno 16" in msg or "Errno 11" in msg:
            return DeviceError(f"{port}: the port is busy: another program (mpremote, a terminal, "
                               f"cyphy monitor) has it open")
        if "Errno 13" in msg or "ermission" in msg:
            return DeviceError(f"{port}: permission denied (on Linux, add yourself to the dialout group)")
        if "Errno 2" in msg:
            return DeviceError(f"{port}: no such serial port (cyphy discover lists the ports it sees)")
        return DeviceError(f"{port}: cannot open: {msg}")
    except (OSError, ValueError) as e:
        return DeviceError(f"{port}: cannot open: {e}")
    return DeviceError(f"{port}: cannot open the port")


def target_of(info: dict) -> str | None:
    """'sim' for a sim node, 'esp32' for an ESP32 MicroPython, None otherwise."""
    machine = str(info.get("machine", ""))
    if "cyphy-sim" in machine:
        return "sim"
    if "ESP32" in machine.upper() or info.get("platform") == "esp32":
        return "esp32"
    return None


class Device:
    """A node's raw REPL (see the module docstring). Use Device.open(port)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 20.0,
                 soft_reset: bool = False) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self.baud = baud
        self.timeout = timeout
        dev = resolve_port(port)
        self.device = dev
        try:
            self.t = SerialTransport(dev, baudrate=baud, exclusive=True, timeout=1)
        except TransportError:
            raise _open_error(port, dev) from None
        except Exception as e:  # noqa: BLE001 - pyserial raises several kinds
            raise _open_error(port, dev) from e
        self.ser = self.t.serial
        self._pending = bytearray()
        self._raw_paste = True
        self._helpers: set[str] = set()
        self._info: dict | None = None
        try:
            self._enter()
            if soft_reset:
                self.soft_reset()
        except BaseException:
            self.t.close()
            raise

    @classmethod
    def open(cls, port: str, baud: int = 115200, timeout: float = 20.0,
             soft_reset: bool = False) -> "Device":
        """The node's raw REPL. soft_reset=True soft-resets it first (Ctrl-D, as mpremote
        does): boot.py rebuilds the node from its files (every output at its fail-safe value
        first) and starts its loops again; main.py does not run."""
        return cls(port, baud, timeout, soft_reset)

    def soft_reset(self) -> None:
        """Ctrl-D in the raw REPL: a fresh MicroPython heap; stays in the raw REPL."""
        self._helpers.clear()
        self._info = None
        self.ser.write(b"\x04")
        try:
            self._read_until(b"soft reboot", self.timeout)
            self._read_until(b"raw REPL; CTRL-B to exit\r\n>", self.timeout)
        except TimeoutError:
            raise DeviceError(f"{self.port}: no raw REPL after a soft reset") from None
        self._pending = bytearray()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ REPL
    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        """Input up to and including marker (bytes after it stay in self._pending)."""
        end = time.monotonic() + timeout
        got = self._pending
        while marker not in got:
            if time.monotonic() > end:
                self._pending = bytearray()
                raise TimeoutError(bytes(got))
            got += self.ser.read(max(1, min(self.ser.in_waiting, 4096)))
        i = got.index(marker) + len(marker)
        self._pending = got[i:]
        return bytes(got[:i])

    def _drain(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Read and drop input until the line has been quiet for `quiet` seconds (at
        most `limit` seconds)."""
        self._pending = bytearray()
        old = self.ser.timeout
        self.ser.timeout = quiet
        end = time.monotonic() + limit
        try:
            while self.ser.read(4096) and time.monotonic() < end:
                pass
        finally:
            self.ser.timeout = old

    def _enter(self) -> None:
        """Into the raw REPL without a soft reset (Ctrl-C, Ctrl-A)."""
        banner = b"raw REPL; CTRL-B to exit\r\n>"
        seen = b""
        for attempt in range(3):
            # Ctrl-C twice: stop a running program (node.serve(), a script); Ctrl-A: raw REPL
            time.sleep(0.08)  # after a pause, so that node.serve() takes it as a person's
            self.ser.write(b"\r\x03\x03")
            time.sleep(0.05)
            self._drain()
            self.ser.write(b"\r\x01")
            try:
                self._read_until(banner, 1.5 if attempt == 0 else 5.0)
                self._pending = bytearray()
                self.t.in_raw_repl = True
                return
            except TimeoutError as e:
                seen = e.args[0]
                if attempt < 2:
                    self._free_rx(seen)
        tail = seen[-120:].decode(errors="replace")
        raise DeviceError(f"{self.port}: no MicroPython raw REPL answered (is it a MicroPython board, "
                          f"and is nothing else using its console?); last output: {tail!r}")

    def _free_rx(self, seen: bytes) -> None:
        """End the receiver (_cyrx) of a transfer whose host died: it reads the stream with
        Ctrl-C disabled, so our Ctrl-C went in as file data. Feed it zeros under its own
        flow control (acknowledged per UNIT): zeros complete the piece it is in, then read
        as empty stored pieces until it has its count, or fail to inflate; either way the
        program ends (0x04) and the raw REPL is back. Costs at most about one piece
        (CHUNK bytes) and a header per remaining piece."""
        acks = seen.count(ACK)
        if not acks and b"\x04" in seen:
            return  # not a receiver: something else (a program that ended, the REPL)
        sent = 0
        got = bytearray()
        last = time.monotonic()
        end = last + 30.0
        old = self.ser.timeout
        self.ser.timeout = 0.02
        try:
            while time.monotonic() < end:
                allowed = WINDOW + acks * UNIT
                if sent < allowed:
                    self.ser.write(b"\x00" * (allowed - sent))
                    sent = allowed
                data = self.ser.read(max(1, self.ser.in_waiting))
                if data:
                    got += data
                    a = data.count(ACK)
                    if a:
                        acks += a
                        last = time.monotonic()
                    if b"\x04" in data:
                        break  # the receiver has ended (a result or a traceback)
                elif time.monotonic() - last > 0.5:
                    # no acknowledgement: not a receiver waiting for bytes (or one that is
                    # draining its input before it raises: let it finish)
                    break
        finally:
            self.ser.timeout = old
        self._drain(0.3, 2.0)

    def close(self) -> None:
        try:
            if self._helpers:
                try:
                    self.exec("\n".join(f"try:\n del {h}\nexcept NameError:\n pass" for h in self._helpers))
                except DeviceError:
                    pass
            self.ser.write(b"\r\x02")  # back to the friendly prompt, where a person expects it
            self.ser.flush()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        try:
            self.t.close()
        except Exception:  # noqa: BLE001
            pass

    def exec(self, code: str, timeout: float | None = None) -> str:
        """Run code in the raw REPL; its printed output. ExecError carries the node's
        traceback when the code raises."""
        out, err = self._exec(code, timeout)
        if err:
            raise ExecError(f"{self.port}: the node raised: {_last_line(err)}{_hint(err)}", err)
        return out

    def _exec(self, code: str, timeout: float | None = None,
              stream: Callable[[], bytes] | None = None) -> tuple[str, str]:
        timeout = self.timeout if timeout is None else timeout
        try:
            self._send_code(code.encode(), timeout)
            if stream is not None:
                self._pending += stream()
            out = self._read_until(b"\x04", timeout)
            err = self._read_until(b"\x04", timeout)
            self._read_until(b">", timeout)
        except TimeoutError:
            raise DeviceError(f"{self.port}: the node did not answer within {timeout:.0f} s") from None
        except DeviceError:
            raise
        except Exception as e:  # noqa: BLE001 - pyserial's errors when the port goes away
            raise DeviceError(f"{self.port}: lost the node's REPL: {e}") from None
        out = out[:-1].replace(ACK, b"")
        return out.decode(errors="replace"), err[:-1].decode(errors="replace")

    def _send_code(self, code: bytes, timeout: float) -> None:
        """Hand code to the raw REPL (at its '>' prompt) and start it: raw-paste mode with
        the node's flow control (MicroPython >= 1.14), else plain raw REPL."""
        ser = self.ser
        if self._raw_paste:
            ser.write(b"\x05A\x01")
            a = self._read_exact(2, timeout)
            if a == b"R\x01":
                window = int.from_bytes(self._read_exact(2, timeout), "little")
                remain = window
                i = 0
                while i < len(code):
                    while remain == 0 or self._pending or ser.in_waiting:
                        c = self._read_exact(1, timeout)
                        if c == b"\x01":
                            remain += window
                        elif c == b"\x04":  # the node ended the paste
                            ser.write(b"\x04")
                            return
                        else:
                            raise DeviceError(f"{self.port}: unexpected {c!r} from the node during raw paste")
                    n = min(remain, len(code) - i)
                    ser.write(code[i:i + n])
                    remain -= n
                    i += n
                ser.write(b"\x04")
                self._read_until(b"\x04", timeout)
                return
            if a != b"R\x00":
                # an old raw REPL took "\x05A\x01" as input and re-prompted ("ra" read above)
                self._read_until(b"w REPL; CTRL-B to exit\r\n>", timeout)
            self._raw_paste = False
        for i in range(0, len(code), 256):
            ser.write(code[i:i + 256])
            time.sleep(0.01)
        ser.write(b"\x04")
        if self._read_exact(2, timeout) != b"OK":
            raise DeviceError(f"{self.port}: the raw REPL did not accept the code")

    def _read_exact(self, n: int, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while len(self._pending) < n:
            if time.monotonic() > end:
                raise TimeoutError(bytes(self._pending))
            self._pending += self.ser.read(max(1, min(self.ser.in_waiting, 4096)))
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def eval(self, expr: str) -> object:
        """A Python literal computed on the node (repr, parsed with ast.literal_eval)."""
        return ast.literal_eval(self.exec(f"print(repr({expr}))").strip())

    def _helper(self, name: str, src: str) -> None:
        if name not in self._helpers:
            self.exec(src)
            self._helpers.add(name)

    # ------------------------------------------------------------------ facts
    def line_rate(self) -> float | None:
        """The serial line's byte rate (8N1: baud / 10); a sim node's emulated rate (None
        when it has no limit)."""
        from cyphy.sim.nodes import all_nodes

        try:
            real = os.path.realpath(self.device)
            for n in all_nodes():
                if str(n.tty) == self.device or (n.tty.exists() and os.path.realpath(n.tty) == real):
                    st = n.state() or {}
                    baud = int(st.get("baud", 0) or 0)
                    return baud / 10 if baud else None
        except (OSError, ValueError):
            pass
        return self.baud / 10 if self.baud else None

    def info(self) -> dict:
        """machine, platform, version [maj, min, patch], mpy (sys.implementation._mpy),
        deflate (0/1), mem_free, target ('sim', 'esp32' or None)."""
        if self._info is None:
            text = self.exec(INFO_SRC).strip()
            try:
                info = ast.literal_eval(text.splitlines()[-1])
            except (ValueError, SyntaxError, IndexError):
                raise DeviceError(f"{self.port}: unexpected answer from the node: {text[-200:]!r}") from None
            info["target"] = target_of(info)
            self._info = info
        return self._info

    def hashes(self, paths: Iterable[str] = (), dirs: Iterable[str] = ()) -> dict[str, tuple[int, str] | None]:
        """{path: (size, sha256 hex)} for the files among paths that exist, and for every
        file under dirs (recursively); directories under dirs map to None."""
        self._helper("_cyhash", HASH_SRC)
        out = self.exec(f"_cyhash({list(paths)!r}, {list(dirs)!r})", timeout=max(self.timeout, 60))
        res: dict[str, tuple[int, str] | None] = {}
        for line in out.splitlines():
            parts = line.strip().split(" ", 3)
            if len(parts) == 4 and parts[0] == "F":
                res[parts[3]] = (int(parts[1]), parts[2])
            elif len(parts) == 2 and parts[0] == "D":
                res[parts[1]] = None
            elif line.strip():
                raise DeviceError(f"{self.port}: unexpected answer from the node: {line[:200]!r}")
        return res

    def sha256(self, path: str) -> str | None:
        """The file's SHA-256 (hex), or None if there is no such file."""
        h = self.hashes([path])
        v = h.get(path)
        return v[1] if v else None

    def read(self, path: str) -> bytes | None:
        """A (small) file's content, or None if there is none. Hex over the console."""
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
            " del _f, _b\n")
        lines = out.split()
        if lines and lines[0] == "-":
            return None
        if not lines or lines[-1] != ".":
            raise DeviceError(f"{self.port}: could not read {path}")
        return bytes.fromhex("".join(lines[:-1]))

    def listdir(self, path: str = "/") -> list[tuple[str, bool, int]]:
        """[(name, is_dir, size)] of a directory."""
        out = self.exec(
            "import os\n"
            f"print(repr([(e[0], e[1] == 0x4000, e[3] if len(e) > 3 else 0) for e in os.ilistdir({path!r})]))")
        return [tuple(e) for e in ast.literal_eval(out.strip())]

    # ------------------------------------------------------------------ changes
    def mkdirs(self, paths: Iterable[str]) -> None:
        """mkdir -p for each path (one exec)."""
        dirs: list[str] = []
        for p in paths:
            parts = [x for x in p.split("/") if x]
            for i in range(1, len(parts) + 1):
                d = "/" + "/".join(parts[:i])
                if d not in dirs:
                    dirs.append(d)
        if dirs:
            self.exec("import os\n"
                      f"for _d in {dirs!r}:\n"
                      " try:\n  os.mkdir(_d)\n except OSError:\n  pass\n")

    def remove(self, paths: Iterable[str], dirs: Iterable[str] = ()) -> None:
        """Remove files (missing ones are fine), then directories if empty."""
        paths, dirs = list(paths), list(dirs)
        if not paths and not dirs:
            return
        self.exec("import os\n"
                  f"for _p in {paths!r}:\n"
                  " try:\n  os.remove(_p)\n except OSError:\n  pass\n"
                  f"for _p in {dirs!r}:\n"
                  " try:\n  os.rmdir(_p)\n except OSError:\n  pass\n")

    def rename(self, pairs: list[tuple[str, str]]) -> None:
        """os.rename(a, b) for every pair, in one exec (LittleFS renames are atomic)."""
        if pairs:
            self.exec("import os\n"
                      f"for _a, _b in {pairs!r}:\n"
                      " os.rename(_a, _b)\n")

    def send(self, path: str, data: bytes, progress: Callable[[int], None] | None = None,
             compress: bool | None = None) -> dict:
        """Write data to path (not atomic by itself; see write_atomic) over the binary
        stream, then read it back on the node and check its SHA-256. Returns
        {"bytes": len(data), "wire": stream bytes sent, "seconds": s}. Compressed when the
        node has `deflate`; if the node lacks the memory to inflate, sent again stored."""
        if compress is None:
            compress = bool(self.info().get("deflate"))
        try:
            return self._send(path, data, progress, compress)
        except ExecError as e:
            if not compress or "MemoryError" not in e.node_error:
                raise
            return self._send(path, data, progress, False)

    def _send(self, path: str, data: bytes, progress: Callable[[int], None] | None,
              compress: bool) -> dict:
        pieces = encode(data, compress)
        stream = b"".join(pieces)
        self._helper("_cyrx", RX_SRC)
        t0 = time.monotonic()

        def pump() -> bytes:
            return self._pump(stream, data, progress)

        out, err = self._exec(f"_cyrx({path!r}, {len(pieces)})", timeout=max(self.timeout, 30), stream=pump)
        if err:
            self._recover()
            raise ExecError(f"{self.port}: writing {path} failed on the node: {_last_line(err)}{_hint(err)}", err)
        want = hashlib.sha256(data).hexdigest()
        got = out.split()
        if got[-2:] != [str(len(data)), want]:
            raise DeviceError(f"{self.port}: {path}: the node read back different content "
                              f"(sha256 {got[-1] if got else '?'}, expected {want})")
        return {"bytes": len(data), "wire": len(stream), "seconds": time.monotonic() - t0}

    def _pump(self, stream: bytes, data: bytes, progress: Callable[[int], None] | None) -> bytes:
        """Send stream under the node's flow control; returns console output seen meanwhile
        (ACKs removed later). Stops early if the node's program ends (0x04)."""
        ser = self.ser
        sent = 0
        acks = 0
        seen = bytearray()
        last = time.monotonic()
        old = ser.timeout
        ser.timeout = 0.01
        total = len(stream)
        ratio = len(data) / total if total else 1.0
        try:
            while True:
                # the first ACK says "ready" (Ctrl-C is off) and opens the window
                allowed = 0 if acks == 0 else (acks - 1) * UNIT + WINDOW
                if sent < total and sent < allowed:
                    n = min(allowed, total) - sent
                    ser.write(stream[sent:sent + n])
                    sent += n
                if sent >= total and acks > 0:
                    return bytes(seen)
                if self._pending:  # read along with the raw-paste acknowledgement
                    got = bytes(self._pending)
                    self._pending.clear()
                else:
                    got = ser.read(max(1, ser.in_waiting))
                if got:
                    a = got.count(ACK)
                    if a:
                        acks += a
                        last = time.monotonic()
                        if progress is not None:
                            progress(int(min(sent, max(0, (acks - 1) * UNIT)) * ratio))
                    seen += got
                    if b"\x04" in got:  # the program ended early (an error)
                        return bytes(seen)
                elif time.monotonic() - last > STALL_S:
                    raise DeviceError(f"{self.port}: the node stopped acknowledging the transfer "
                                      f"after {sent} of {total} bytes")
        finally:
            ser.timeout = old

    def _recover(self) -> None:
        self._drain(0.2)
        self._enter()

    def write_atomic(self, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> dict:
        """PATH.tmp, verified by its SHA-256 read back on the node, then renamed over PATH:
        a power loss at any point leaves either the old or the new file, whole."""
        r = self.send(path + ".tmp", data, progress)
        self.rename([(path + ".tmp", path)])
        return r

    def reset(self, wait: float = 60.0) -> str:
        """Hard reset (machine.reset()): the node boots and main.py runs. Waits up to
        `wait` seconds for the boot to reach the REPL banner and returns what the node
        printed meanwhile ("" if the port went away, as native USB ports do). The Device
        is closed afterwards (the helpers die with the reset)."""
        self._helpers.clear()
        boot = b""
        try:
            self._send_code(b"import machine\nmachine.reset()\n", 5.0)
            if wait:
                try:
                    boot = self._read_until(b'Type "help()" for more information.', wait)
                except TimeoutError as e:
                    boot = e.args[0]
        except Exception:  # noqa: BLE001 - the reset can cut the answer short
            pass
        try:
            self.t.close()
        except Exception:  # noqa: BLE001
            pass
        return boot.decode(errors="replace")


def encode(data: bytes, compress: bool) -> list[bytes]:
    """The stream pieces for data: header (mode, length LE16) + payload, per CHUNK."""
    pieces = []
    for i in range(0, len(data), CHUNK):
        raw = data[i:i + CHUNK]
        mode, body = 0, raw
        if compress:
            c = zlib.compressobj(9, zlib.DEFLATED, -WBITS)
            z = c.compress(raw) + c.flush()
            if len(z) < len(raw):
                mode, body = 1, z
        pieces.append(bytes((mode, len(body) & 0xFF, len(body) >> 8)) + body)
    return pieces


def _hint(err: str) -> str:
    if "MemoryError" in err:
        return ("; the node is short of contiguous memory while its firmware runs: run again "
                "with --soft-reset (the loops stop, boot.py holds every output at its fail-safe "
                "value) or reset the node")
    return ""


def _last_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "error"
