"""A node's filesystem over its raw REPL, and cyphy's file stream (docs/deploy.md).

    with Device.open("sim://oven") as dev:         # or /dev/ttyUSB0, serial:///dev/ttyUSB0
        dev.info()                                 # {"target": "sim", "version": ..., "mpy": ...}
        dev.exec("print(1 + 1)")                   # "2\\r\\n"
        dev.sha256("/config.json")                 # hex digest, or None (no such file)
        dev.write_atomic("/config.json", data)     # /config.json.tmp, verified, renamed

The raw REPL is cyphy.rawrepl's client (mpremote's transport underneath): entered with
Ctrl-C + Ctrl-A, never a soft reset, so the loops main.py started keep running; leaving
returns to the friendly prompt. What is ours here is the file stream: the node runs a
small receiver (`_cyrx`) that reads the file from its console input in 128-byte units and
acknowledges each with one byte; the host keeps at most 256 bytes unacknowledged, which
fits the 260-byte console input buffer of MicroPython's ESP32 port even while the node is
busy writing flash. Each file is split into 2 KB pieces, each raw-deflate compressed on
its own (1 KB window) when that makes it smaller and the node has `deflate`. A file is
written to PATH.tmp, read back from flash and hashed (SHA-256) on the node, and only
renamed over PATH when the hash matches.

Ending a transfer early: a piece header with length 0 tells the receiver to stop (it
raises, having written nothing but PATH.tmp). Ctrl-C on the host completes the piece in
flight with zeros and sends that header; a host that finds a receiver a killed host left
running feeds it zeros (they complete the piece, then read as the stop header); and the
receiver stops by itself after RX_IDLE_S without a byte or on a header it cannot take.
"""

from __future__ import annotations

import ast
import hashlib
import os
import time
import zlib
from typing import Callable, Iterable

from cyphy.rawrepl import Interrupted, NodeError, RawRepl, ReplError, last_line

UNIT = 128          # the node acknowledges every UNIT bytes of the stream it has consumed
WINDOW = 256        # bytes the host may have sent and not yet seen acknowledged
CHUNK = 2048        # file bytes per compressed piece (the node buffers one piece)
WBITS = 10          # deflate window: 1 KB on the node
ACK = b"\x06"
STOP = b"\x00\x00\x00"  # a piece header of length 0: the receiver stops (never a real piece)
STALL_S = 20.0      # no acknowledgement for this long: the transfer failed
RX_IDLE_S = 1.0     # the node's receiver stops after this long without a byte (a host that
                    # died or went quiet mid-transfer); the next host frees it at once
ABORT_S = 1.0       # how long the host spends ending its own transfer on Ctrl-C

# The node side of a transfer, defined once per session as the global _cyrx and deleted
# on close. _cyrx(path, pieces) receives `pieces` pieces of
#   mode (0 stored, 1 raw deflate) | length (2 bytes, little-endian, 1..CHUNK+64) | data
# into path, then reads the file back and prints "<size> <sha256 hex>". A header with
# another mode or length (STOP: length 0) ends it with ValueError. Memory: a running
# node's heap is fragmented (~50 KB free, the largest free block ~3 KB), so nothing here
# allocates more than CHUNK bytes at once: stored data goes straight from a 128-byte buffer
# to the file; a compressed piece is collected in one preallocated BytesIO and inflated
# from there with a 2**WBITS-byte window. On any error the receiver reads what the host
# still had in flight until the line is quiet for 200 ms, then raises. A read from the
# console blocks until it has all the bytes it asks for, so the receiver asks only for
# the rest of the current 128-byte unit of the stream, and the host writes whole units
# (Stream): a host that stops leaves the receiver at a unit's end, where it polls and
# stops after RX_IDLE_S.
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
   if hb[0] > 1 or not 0 < k <= %(chunk)d:
    raise ValueError('transfer stopped')
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
    """The device path behind a port argument: /dev/..., serial:///dev/... or sim://NAME
    (cyphy.links.serial_device, the one place that resolves them)."""
    from cyphy.links import LinkError, serial_device

    try:
        return serial_device(url)
    except LinkError as e:
        raise DeviceError(str(e)) from None


def target_of(info: dict) -> str | None:
    """'sim' for a sim node, 'esp32' for an ESP32 MicroPython, None otherwise."""
    machine = str(info.get("machine", ""))
    if "cyphy-sim" in machine:
        return "sim"
    if "ESP32" in machine.upper() or info.get("platform") == "esp32":
        return "esp32"
    return None


def free_receiver(repl: RawRepl, seen: bytes) -> None:
    """End a receiver (_cyrx) a host that died left running: it reads the stream with
    Ctrl-C disabled, so our Ctrl-C went in as file data. Feed it zeros under its own flow
    control (acknowledged per UNIT): they complete the piece it is in, then read as the
    STOP header; the program ends (0x04) and the raw REPL is back. Costs at most about one
    piece (CHUNK bytes). `seen`: what the node said to the failed entry."""
    if not seen.count(ACK) and b"\x04" in seen:
        return  # not a receiver: something else (a program that ended, the REPL)
    ser = repl.serial
    acks = seen.count(ACK)
    sent = 0
    last = time.monotonic()
    end = last + 10.0
    old = ser.timeout
    ser.timeout = 0.02
    try:
        while time.monotonic() < end:
            allowed = WINDOW + acks * UNIT
            if sent < allowed:
                ser.write(bytes(allowed - sent))
                sent = allowed
            data = ser.read(max(1, ser.in_waiting))
            if data:
                a = data.count(ACK)
                if a:
                    acks += a
                    last = time.monotonic()
                if b"\x04" in data:
                    break  # the receiver has ended (a traceback)
            elif time.monotonic() - last > 0.5:
                # no acknowledgement: not a receiver waiting for bytes (or one that is
                # draining its input before it raises: let it finish)
                break
        # the receiver reads until the line is quiet for 200 ms before it raises
        quiet = time.monotonic()
        while time.monotonic() - quiet < 0.3 and time.monotonic() < end:
            if ser.read(max(1, ser.in_waiting)):
                quiet = time.monotonic()
    finally:
        ser.timeout = old


class Device:
    """A node's files over its raw REPL (see the module docstring). Use Device.open(port)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 20.0,
                 soft_reset: bool = False) -> None:
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.device = resolve_port(port)
        try:
            self.repl = RawRepl(self.device, baud, name=port, timeout=timeout, unstick=free_receiver)
        except ReplError as e:
            raise DeviceError(str(e)) from None
        self._helpers: set[str] = set()
        self._info: dict | None = None
        try:
            self._enter()
            if soft_reset:
                self.soft_reset()
        except BaseException:
            self.repl.close()
            raise

    @classmethod
    def open(cls, port: str, baud: int = 115200, timeout: float = 20.0,
             soft_reset: bool = False) -> "Device":
        """The node's raw REPL. soft_reset=True soft-resets it first (Ctrl-D, as mpremote
        does): boot.py rebuilds the node from its files (every output at its fail-safe value
        first) and starts its loops again; main.py does not run."""
        return cls(port, baud, timeout, soft_reset)

    @property
    def ser(self):  # noqa: ANN201 - pyserial's Serial
        """The serial port (the stream is written on it directly)."""
        return self.repl.serial

    def _enter(self) -> None:
        try:
            self.repl.enter()
        except ReplError as e:
            raise DeviceError(str(e)) from None

    def soft_reset(self) -> None:
        """Ctrl-D in the raw REPL: a fresh MicroPython heap; stays in the raw REPL."""
        self._helpers.clear()
        self._info = None
        try:
            self.repl.soft_reset()
        except ReplError as e:
            raise DeviceError(str(e)) from None

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the helpers this session defined, back to the friendly prompt, close."""
        try:
            if self._helpers and self.repl.in_raw:
                self.exec("\n".join(f"try:\n del {h}\nexcept NameError:\n pass" for h in self._helpers),
                          timeout=2.0)
        except (Exception, KeyboardInterrupt):  # noqa: BLE001 - closing must not fail
            pass
        self._helpers.clear()
        self.repl.close()

    # ------------------------------------------------------------------ REPL
    def exec(self, code: str, timeout: float | None = None) -> str:
        """Run code in the raw REPL; its printed output. ExecError carries the node's
        traceback when the code raises."""
        out, err = self._exec(code, timeout)
        if err:
            raise ExecError(f"{self.port}: the node raised: {last_line(err)}{_hint(err)}", err)
        return out

    def _exec(self, code: str, timeout: float | None = None,
              stream: Callable[[], tuple[bytes, bool]] | None = None) -> tuple[str, str]:
        """(stdout, stderr) of code. stream: run after the code started; returns the
        stdout it read meanwhile and whether that includes its end (0x04)."""
        timeout = self.timeout if timeout is None else timeout
        try:
            self.repl.start(code)
            pre, done = b"", False
            if stream is not None:
                try:
                    pre, done = stream()
                except KeyboardInterrupt:
                    # the stream has stopped the receiver: wait for the raw prompt
                    raise self.repl.cancel() from None
            out, err = self.repl.finish(timeout, pre, done)
        except ReplError as e:
            raise DeviceError(str(e)) from None
        except (OSError, ValueError) as e:  # pyserial's errors when the port goes away
            raise DeviceError(f"{self.port}: lost the node's REPL: {e}") from None
        return out.replace(ACK, b"").decode(errors="replace"), err.decode(errors="replace")

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
        try:
            return self.repl.read_file(path, self.timeout)
        except NodeError as e:
            raise ExecError(f"{self.port}: reading {path}: the node raised: {last_line(e.node_error)}",
                            e.node_error) from None
        except ReplError as e:
            raise DeviceError(str(e)) from None

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
        """os.rename(a, b) for every pair, in one exec (LittleFS renames are atomic). The
        node takes no Ctrl-C meanwhile (milliseconds), so all of them happen or none."""
        if pairs:
            self.exec("import os, micropython\n"
                      "micropython.kbd_intr(-1)\n"
                      "try:\n"
                      f" for _a, _b in {pairs!r}:\n"
                      "  os.rename(_a, _b)\n"
                      "finally:\n"
                      " micropython.kbd_intr(3)\n")

    def send(self, path: str, data: bytes, progress: Callable[[int], None] | None = None,
             compress: bool | None = None) -> dict:
        """Write data to path (not atomic by itself; see write_atomic) over the binary
        stream, then read it back on the node and check its SHA-256. Returns
        {"bytes": len(data), "wire": stream bytes sent, "seconds": s}. Compressed when the
        node has `deflate`; if the node lacks the memory to inflate, sent again stored.
        Ctrl-C (KeyboardInterrupt) ends the node's receiver before it propagates: path
        is then incomplete, and nothing else was touched."""
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
        self._helper("_cyrx", RX_SRC)
        t0 = time.monotonic()
        stream = Stream(self.ser, pieces, len(data), progress)
        out, err = self._exec(f"_cyrx({path!r}, {len(pieces)})", timeout=max(self.timeout, 30),
                              stream=stream.pump)
        if stream.stalled:
            raise DeviceError(f"{self.port}: the node stopped acknowledging the transfer "
                              f"after {stream.sent} of {stream.total} bytes")
        if err:
            raise ExecError(f"{self.port}: writing {path} failed on the node: {last_line(err)}{_hint(err)}", err)
        want = hashlib.sha256(data).hexdigest()
        got = out.split()
        if got[-2:] != [str(len(data)), want]:
            raise DeviceError(f"{self.port}: {path}: the node read back different content "
                              f"(sha256 {got[-1] if got else '?'}, expected {want})")
        return {"bytes": len(data), "wire": stream.sent, "seconds": time.monotonic() - t0}

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
        boot = self.repl.hard_reset(wait)
        self.repl.close()
        return boot.decode(errors="replace")


class Stream:
    """The host side of one transfer: the pieces, sent under the receiver's flow control
    (the first ACK says it is ready; then at most WINDOW bytes unacknowledged)."""

    def __init__(self, ser, pieces: list[bytes], size: int,  # noqa: ANN001 - pyserial's Serial
                 progress: Callable[[int], None] | None) -> None:
        self.ser = ser
        self.data = b"".join(pieces)
        self.total = len(self.data)
        self.ends = [0]  # where each piece ends in the stream (and the first begins)
        at = 0
        for p in pieces:
            at += len(p)
            self.ends.append(at)
        self.ratio = size / self.total if self.total else 1.0
        self.progress = progress
        self.sent = 0
        self.acks = 0
        self.stalled = False

    def pump(self) -> tuple[bytes, bool]:
        """Send the stream; (stdout seen meanwhile, whether it ended: 0x04). Reads byte by
        byte, so that nothing after the program's output is taken from the REPL client.
        On KeyboardInterrupt the receiver is stopped first (stop())."""
        ser = self.ser
        seen = bytearray()
        last = time.monotonic()
        old = ser.timeout
        ser.timeout = 0.01
        try:
            while True:
                if self.sent < self.total and self.sent < self.allowed():
                    n = min(self.allowed(), self.total) - self.sent
                    ser.write(self.data[self.sent:self.sent + n])
                    self.sent += n
                if self.sent >= self.total and self.acks > 0:
                    return bytes(seen), False
                c = ser.read(1)
                if c == ACK:
                    self.acks += 1
                    last = time.monotonic()
                    if self.progress is not None:
                        self.progress(int(min(self.sent, max(0, (self.acks - 1) * UNIT)) * self.ratio))
                elif c == b"\x04":
                    return bytes(seen), True  # the program ended early (an error)
                elif c:
                    seen += c
                elif time.monotonic() - last > STALL_S:
                    self.stalled = True
                    self.stop()
                    return bytes(seen), False
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            ser.timeout = old

    def allowed(self) -> int:
        return 0 if self.acks == 0 else (self.acks - 1) * UNIT + WINDOW

    def stop(self) -> None:
        """End the node's receiver now: zeros complete the piece in flight, then the STOP
        header; under flow control, within ABORT_S. The receiver then raises, and the
        exec's end follows as usual."""
        end = next((e for e in self.ends if e >= self.sent), self.sent)
        tail = bytes(end - self.sent) + STOP
        base = self.sent
        done = 0
        deadline = time.monotonic() + ABORT_S
        ser = self.ser
        try:
            while done < len(tail) and time.monotonic() < deadline:
                room = (self.allowed() if self.acks else WINDOW) - (base + done)
                if room > 0:
                    n = min(room, len(tail) - done)
                    ser.write(tail[done:done + n])
                    done += n
                    continue
                c = ser.read(1)
                if c == ACK:
                    self.acks += 1
                elif c == b"\x04":
                    return  # the receiver has ended
        except Exception:  # noqa: BLE001 - best effort: the receiver also stops when quiet
            pass


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


__all__ = ["ACK", "CHUNK", "Device", "DeviceError", "ExecError", "Interrupted", "encode",
           "resolve_port", "target_of"]
