"""Links that carry protocol frames between the host and a node, chosen by URL:

    serial:///dev/ttyUSB0[?baud=115200][&fec=1]   the node's USB serial console (shared with
                                          the REPL); fec=1: error correction for a noisy line
    udp://192.168.1.40[:5477]             Wi-Fi (one frame per datagram)
    sim://NAME                            a sim node's console (its PTY under $CYPHY_HOME)

A link moves whole frames (bytes); the session logic is in cyphy.client. A serial link's
port is opened by cyphy.rawrepl's client, which also runs SerialLink.exec's code.

The URL schemes are one registry of link types (LINK_TYPES, in the manner of pyserial's
serial_for_url handlers): a scheme names the function that opens its links, "module:name",
imported only when a URL of that scheme is opened. A new link type adds one entry here,
nothing else.

    mqtt://HOST[:PORT]/GROUP/EDGE/DEVICE  a node behind a `cyphy gateway`, over an MQTT
    mqtts://...                           broker (TLS): not a frame link (the gateway holds
                                          the node's session and key); its entry names the
                                          function cyphy.connect() opens it with instead
                                          (cyphy.fleet, a Sparkplug B host application)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from importlib import import_module
from typing import Callable, NamedTuple, Protocol
from urllib.parse import ParseResult, parse_qs, urlparse

from cyphy_node import serfec

from . import codec as P
from .rawrepl import RawRepl, ReplError


ACK = "\x06"  # what cyphy.device's file receiver sends for every 128 bytes it reads


class LinkError(Exception):
    """The link cannot be opened or used; the message says what to do."""


class NoServe(LinkError):
    """node.serve() ran at the REPL and said it cannot serve (no cyphy firmware there)."""


class Link(Protocol):
    def send(self, frame: bytes) -> None: ...
    def recv(self, timeout: float) -> bytes | None: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...


class UdpLink:
    def __init__(self, host: str, port: int = P.UDP_PORT) -> None:
        try:
            self.addr = (socket.gethostbyname(host), port)
        except (socket.gaierror, UnicodeError) as e:
            why = getattr(e, "strerror", None) or str(e)
            where = f"udp://{host}" + (f":{port}" if port != P.UDP_PORT else "")
            raise LinkError(f"{where}: cannot find the host {host!r} ({why}); check the "
                            f"name, or give the node's IP address (cyphy discover lists the nodes "
                            f"it hears)") from None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.bind(("", 0))

    def send(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.addr)

    sends_block = False  # sendto() on a datagram socket: safe from the hub's thread

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data, src = self.sock.recvfrom(2048)
            except (socket.timeout, BlockingIOError):
                return None
            if self._ours(src):
                return data

    def _ours(self, src: tuple[str, int]) -> bool:
        return src[0] == self.addr[0] or self.addr[0].endswith(".255")

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self) -> list[bytes]:
        """The datagrams that have arrived, without waiting (cyphy.hub)."""
        out: list[bytes] = []
        while len(out) < 64:
            try:
                data, src = self.sock.recvfrom(2048, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if self._ours(src):
                out.append(data)
        return out

    def close(self) -> None:
        self.sock.close()

    def describe(self) -> str:
        return f"udp://{self.addr[0]}:{self.addr[1]}"


class SerialLink:
    """The protocol on a node's serial console (docs/protocol.md, "Serial"). Opening it
    gets the REPL's attention (CR Ctrl-C Ctrl-C ends a running node.serve(), stops a
    program, clears a typed line; Ctrl-B leaves the raw REPL) and types `node.serve()`;
    serve() answers 00 00 00, which the REPL never prints, so the host sends no frame before
    serve() runs. Tried again until it works (`enter_s`): a noisy line may garble the
    command. From then on the node sends only frames (COBS, 00-delimited) until the
    session ends; text outside frames (the REPL's) is kept in .console for error messages.

    The link notices when the node is back at its REPL (a prompt, "protocol session ended",
    a boot banner) and types node.serve() again before the next frame it sends; `entries`
    counts the times it entered, so a session above it knows to say HELLO again."""

    ENTER = b"node.serve()"
    READY = b"\x00\x00\x00"  # serve() started (console.py)
    END = b"\x02\x02\x02"     # a chunk serve() sends when it has ended (console.py)
    SILENT_S = 1.5  # the node ends serve() after 2 s without input: enter again after 1.5 s
    COPIES = 4      # of node.serve() typed at once
    QUIET_S = 0.08  # > the node's _QUIET_MS: our signals must follow a pause to count
    # what only the REPL prints: the session is over, the node is at its prompt
    BREAK_MARKS = (b">>> ", b"protocol session ended", b"raw REPL; CTRL-B to exit")
    # node.serve() ran and cannot serve: no cyphy firmware, or no comms endpoint
    REFUSALS = ("name 'node' isn't defined", "name 'node' is not defined", "no comms endpoint")

    def __init__(self, url: str, baud: int = 115200, enter: bool = True, enter_s: float = 30.0,
                 fec: bool = False) -> None:
        try:
            # the port, and the raw REPL that exec() uses
            self.repl = RawRepl(url, baud, name=url)
        except ReplError as e:
            raise LinkError(str(e)) from None
        self.ser = self.repl.serial
        self.ser.timeout = 0.05
        self.url = url
        self.enter_s = enter_s
        # frames as blocks, each sent serfec.ROUNDS times (docs/protocol.md, "On a noisy
        # line"); the node answers in blocks too
        self.fec = fec
        self._asm = serfec.Assembler()
        self._fid = 0
        self.console = bytearray()
        self.entries = 0
        self.broken = False      # the node is at its REPL: enter again before sending
        self._buf = bytearray()
        self._frames: list[bytes] = []
        self._pending = bytearray()     # read while looking for a marker, not yet used
        self._last_write = 0.0
        self._tail = ""
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()  # exec() holds it: the session's reader keeps off
        self.refused = ""        # why node.serve() cannot run there: frames are not sent
        self._bye = False        # a BYE was sent since serve() started
        if enter:
            try:
                self.enter()
            except NoServe as e:
                # said once, in the console: a session's "no HELLO" carries it to the user
                self.refused = str(e)
                self.console += str(e).encode()

    def enter(self) -> None:
        """Get the REPL's attention and start node.serve()."""
        with self._rlock, self._wlock:
            self._enter()

    def _write(self, data: bytes) -> None:
        self.ser.write(data)
        self._last_write = time.monotonic()

    def _pause(self) -> None:
        # the node takes a signal as a person's only after a pause in its input
        wait = self._last_write + self.QUIET_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _enter(self) -> None:
        s = self.ser
        end = time.monotonic() + self.enter_s
        tries = 0
        while True:
            tries += 1
            self._pause()
            self._write(b"\r\x03\x03")
            time.sleep(0.05)
            self._write(b"\x02")
            self._drain(0.1, 1.0)
            self._pause()
            # several copies at once: the first that arrives whole starts serve(), which
            # takes the others as line noise (they come without a pause)
            self._write((self.ENTER + b"\r") * self.COPIES)
            try:
                self._expect(self.READY, 0.8, "serve()'s ready mark")
                break
            except LinkError as e:
                if ACK in self._tail:
                    # acknowledgements: a file receiver a killed deploy left running is
                    # reading our input as file data; zeros end it (cyphy.device)
                    from .device import free_receiver

                    free_receiver(self.repl, self._tail.encode(errors="replace"))
                if any(r in self._tail for r in self.REFUSALS):
                    raise NoServe(f"{self.url}: node.serve() cannot run there: "
                                  f"{self._tail.strip().splitlines()[-2:][0]}") from None  # it ran, and there is no node.serve()
                if time.monotonic() > end:
                    raise LinkError(f"{e} ({tries} tries in {self.enter_s:.0f} s)") from None
        self.entries += 1
        self.broken = False
        self._bye = False
        self.console.clear()
        self._buf.clear()
        rest, self._pending = bytes(self._pending), bytearray()
        self._split(rest)  # the first frames may have come with the mark

    def _drain(self, quiet: float, limit: float) -> None:
        """Read and drop input until the line has been quiet for `quiet` seconds."""
        end = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            if self.ser.read(self.ser.in_waiting or 1):
                last = time.monotonic()
        self._pending = bytearray()

    def _expect(self, marker: bytes, timeout: float, what: str) -> bytes:
        """Input up to and including marker; what came after it stays in _pending."""
        end = time.monotonic() + timeout
        seen = self._pending
        while marker not in seen:
            if time.monotonic() > end:
                tail = bytes(seen[-200:]).decode(errors="replace")
                self._tail = tail
                self._pending = bytearray()
                raise LinkError(f"{self.url}: no {what} from the device within {timeout:.0f} s "
                                f"(is it a MicroPython board? last output: {tail!r})")
            seen += self.ser.read(self.ser.in_waiting or 1)
        i = seen.index(marker) + len(marker)
        self._pending = seen[i:]
        return bytes(seen[:i])

    def send(self, frame: bytes) -> None:
        if self.refused:
            return  # no node.serve() there: a frame would only be typed into the REPL
        if self.fec:
            buf = bytearray(serfec.round_size(len(frame)))
            n = serfec.encode_round(frame, len(frame), buf, self._fid, bytearray(6))
            self._fid = (self._fid + 1) & 3
            data = bytes(buf[:n]) * serfec.ROUNDS
        else:
            data = P.serial_encode(frame, lead=True)
        while True:
            if self._must_enter():
                with self._rlock, self._wlock:
                    if self._must_enter():  # not done meanwhile by another thread
                        self._enter()       # never type a frame into the REPL
            with self._wlock:
                # checked again right before the write: we may have waited for the lock
                # longer than the node waits for input (a stalled host)
                if not self._must_enter():
                    self._write(data)
                    if len(frame) > 1 and frame[1] == P.BYE:
                        self._bye = True
                    return

    def _must_enter(self) -> bool:
        # the node is back at its REPL, or may be: serve() ends after 2 s without input
        return self.broken or time.monotonic() - self._last_write > self.SILENT_S

    sends_block = True  # send() may enter node.serve() first (seconds): not from the hub

    def fileno(self) -> int:
        return self.ser.fileno()

    def poll(self) -> list[bytes] | None:
        """The frames that have arrived, without waiting (cyphy.hub); None while exec()
        or enter() has the port."""
        if not self._rlock.acquire(blocking=False):
            return None
        try:
            n = self.ser.in_waiting
            if n:
                self._split(self.ser.read(n))
            else:
                # readable with nothing waiting: a hang-up (EOF or EIO), or a race. pyserial
                # keeps the port non-blocking, so this read never waits.
                try:
                    data = os.read(self.ser.fileno(), 4096)
                except BlockingIOError:
                    data = None
                if data == b"":
                    raise LinkError(f"{self.url}: the port was closed (device gone?)")
                if data:
                    self._split(data)
            frames, self._frames = self._frames, []
            return frames
        finally:
            self._rlock.release()

    def recv(self, timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        with self._rlock:
            while not self._frames:
                if time.monotonic() > end:
                    return None
                data = self.ser.read(self.ser.in_waiting or 1)
                if data:
                    self._split(data)
            return self._frames.pop(0)

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Leave the protocol, run code in the raw REPL, come back (no session may be
        open: see Session.close_session); returns its output, or raises LinkError with the
        node's traceback. The node's loops keep running: no soft reset."""
        with self._rlock, self._wlock:
            self._pause()
            try:
                self.repl.enter()  # CR Ctrl-C after a pause also ends a running serve()
                out, err = self.repl.exec_raw(code, timeout)
                self.repl.leave(wait=True)  # the friendly REPL, where a person expects it
            except ReplError as e:
                raise LinkError(str(e)) from None
            finally:
                self._last_write = time.monotonic()
                self._pending = bytearray()
                self.broken = True     # the next frame needs node.serve() again
        if err:
            raise LinkError(f"{self.url}: the code raised:\n{err.decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    def _split(self, data: bytes) -> None:
        # 00 ends a chunk; a chunk that is not a frame is console text (the REPL's)
        self._buf += data
        while True:
            i = self._buf.find(0)
            if i < 0:
                if len(self._buf) > 4 * P.MAX_FRAME:  # long text: console, not a frame
                    self._text(bytes(self._buf))
                    self._buf.clear()
                elif any(m in self._buf for m in self.BREAK_MARKS):
                    self._text(bytes(self._buf))  # a prompt is not followed by a 00
                    self._buf.clear()
                return
            chunk = bytes(self._buf[:i])
            del self._buf[:i + 1]
            if not chunk:
                continue
            if chunk == self.END:
                self.broken = True
                continue
            if len(chunk) == serfec.CHUNK:  # never a frame: a block of one
                f = self._asm.block(chunk, len(chunk))
                if f is not None:
                    self._frames.append(f)
                continue
            try:
                self._frames.append(P.cobs_decode(chunk))
            except P.ProtoError:
                self._text(chunk)

    def _text(self, chunk: bytes) -> None:
        self.console += chunk
        if any(m in self.console[-len(chunk) - 40:] for m in self.BREAK_MARKS):
            self.broken = True
        del self.console[:-4096]

    def close(self) -> None:
        try:
            if self._bye:
                # BYE was sent by the session: wait (briefly) until serve() has ended, so
                # that the next program on the port (mpremote...) finds the REPL
                with self._rlock:
                    end = time.monotonic() + 1.0
                    while not self.broken and time.monotonic() < end:
                        data = self.ser.read(self.ser.in_waiting or 1)
                        if data:
                            self._split(data)
            # a CR leaves the friendly prompt for a person
            self.ser.write(b"\r")
            self.ser.flush()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        self.repl.close()

    def describe(self) -> str:
        return self.url


def _serial_hint(url: str, e: Exception) -> str:
    msg = str(e)
    if "No such file" in msg or "could not open port" in msg and "2]" in msg:
        return f"{url}: no such serial port (cyphy discover lists the ports it sees)"
    if "busy" in msg.lower() or "lock" in msg.lower() or "Errno 16" in msg:
        return f"{url}: the port is busy: another program (mpremote, a terminal) has it open"
    return f"{url}: cannot open: {msg}"


def serial_device(url: str) -> str:
    """The device path (or pyserial URL) behind serial://..., sim://NAME or a bare path."""
    u = urlparse(url)
    if u.scheme == "serial":
        return u.path or u.netloc
    if u.scheme == "sim":
        from .sim.nodes import Node, SimError

        name = u.netloc or u.path.strip("/")
        try:
            node = Node.named(name)
        except SimError as e:
            raise LinkError(str(e)) from None
        if not node.exists():
            raise LinkError(f"{url}: not running: there is no sim node {name!r} "
                            f"(create and start it: cyphy sim start {name})")
        if node.state() is None:
            raise LinkError(f"{url}: sim node {node.name!r} is not running "
                            f"(start it: cyphy sim start {node.name})")
        return str(node.tty)
    if u.scheme in ("", "rfc2217", "socket", "loop"):
        return url
    raise LinkError(f"{url}: not a serial port; use /dev/ttyUSB0, serial:///dev/ttyUSB0 or sim://NAME")


def host_and_port(url: str, u: ParseResult, default_port: int, example_host: str,
                  what: str = "the port") -> tuple[str, int]:
    """SCHEME://HOST[:PORT] -> (host, port; default_port if none given), or LinkError
    saying what is wrong (no host, a port that is not 1..65535). The one parser of a host
    and port in a URL (node links, the gateway's broker)."""
    if not u.hostname:
        raise LinkError(f"{url}: give a host, e.g. {u.scheme}://{example_host}")
    try:
        port = u.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and u.netloc.endswith(":")):
        raise LinkError(f"{url}: {what} must be a number from 1 to 65535, e.g. "
                        f"{u.scheme}://{u.hostname}:{default_port} (or leave it out: "
                        f"{default_port})")
    return u.hostname, port or default_port


def check_udp(url: str, u: ParseResult) -> tuple[str, int]:
    """udp://HOST[:PORT] -> (host, port), or LinkError saying what is wrong."""
    return host_and_port(url, u, P.UDP_PORT, "192.168.1.40", "the UDP port")


def open_udp(url: str, u: ParseResult) -> Link:
    """udp://HOST[:PORT]"""
    return UdpLink(*check_udp(url, u))


def check_serial(url: str, u: ParseResult) -> tuple[int, bool]:
    """serial:///dev/ttyUSB0[?baud=N][&fec=1], sim://NAME or /dev/... -> (baud, fec), or
    LinkError; whether the port or sim node is there is found when it is opened."""
    if u.scheme == "sim" and not (u.netloc or u.path.strip("/")):
        raise LinkError(f"{url}: give the sim node's name, e.g. sim://oven")
    if u.scheme == "serial" and not (u.path or u.netloc):
        raise LinkError(f"{url}: give the device, e.g. serial:///dev/ttyUSB0")
    q = parse_qs(u.query)
    baud = q.get("baud", ["115200"])[0]
    if not baud.isdigit() or int(baud) <= 0:
        raise LinkError(f"{url}: baud must be a whole number of bits per second, e.g. "
                        f"?baud=115200")
    return int(baud), q.get("fec", ["0"])[0] in ("1", "on", "true", "yes")


def open_serial(url: str, u: ParseResult) -> Link:
    """serial:///dev/ttyUSB0[?baud=N][&fec=1], sim://NAME, or a bare /dev/... path"""
    baud, fec = check_serial(url, u)
    return SerialLink(serial_device(url), baud, fec=fec)


class LinkType(NamedTuple):
    """A URL scheme's entry: "module:function" names, imported only when used."""

    open: str | None     # opens a Link for (url, parsed url); None: not a frame link
    check: str           # checks such a URL without opening anything (LinkError)
    example: str         # the URL's form, for messages
    node: str | None = None   # opens a node for (url, timeout=) when there is no frame
                              # link to it (cyphy.connect)


# scheme -> LinkType; "" is a bare device path (/dev/ttyUSB0)
LINK_TYPES: dict[str, LinkType] = {
    "serial": LinkType("cyphy.links:open_serial", "cyphy.links:check_serial", "serial:///dev/ttyUSB0"),
    "udp": LinkType("cyphy.links:open_udp", "cyphy.links:check_udp", "udp://HOST[:PORT]"),
    "sim": LinkType("cyphy.links:open_serial", "cyphy.links:check_serial", "sim://NAME"),
    "mqtt": LinkType(None, "cyphy.mqtt:check_node_url", "mqtt://HOST[:PORT]/GROUP/EDGE/DEVICE",
                     "cyphy.fleet:MqttNode"),
    "mqtts": LinkType(None, "cyphy.mqtt:check_node_url", "mqtts://HOST[:PORT]/GROUP/EDGE/DEVICE",
                      "cyphy.fleet:MqttNode"),
    "": LinkType("cyphy.links:open_serial", "cyphy.links:check_serial", "/dev/ttyUSB0"),
}


def link_schemes() -> list[str]:
    """The URL schemes a node URL may use, in the registry's order."""
    return [s for s in LINK_TYPES if s]


def _function(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def _link_type(url: str) -> tuple[ParseResult, LinkType]:
    u = urlparse(url)
    scheme = u.scheme
    if scheme == "" and not url.startswith("/dev/"):
        scheme = None
    if scheme not in LINK_TYPES:
        examples = [LINK_TYPES[s].example for s in link_schemes()]
        raise LinkError(f"{url}: unknown link; use " + ", ".join(examples[:-1])
                        + " or " + examples[-1])
    return u, LINK_TYPES[scheme]


def check_link_url(url: str) -> None:
    """LinkError if url cannot be a node URL (unknown scheme, no host or name, a bad
    option); opens nothing, so a node that is not there yet is no error."""
    u, t = _link_type(url)
    _function(t.check)(url, u)


def node_opener(url: str) -> Callable | None:
    """The function that opens a node at url directly (url, timeout=), for a URL that has
    no frame link (mqtt://: through its gateway); None for a frame link's URL."""
    u, t = _link_type(url)
    if t.node is None:
        return None
    _function(t.check)(url, u)
    return _function(t.node)


def open_link(url: str) -> Link:
    """A Link for a URL (see the module docstring). A URL that cannot work raises LinkError
    saying what is wrong with it."""
    u, t = _link_type(url)
    if t.open is None:
        _function(t.check)(url, u)
        raise LinkError(f"{url}: not a frame link: a node "
                        f"on a broker is reached through the gateway that holds its session; "
                        f"use cyphy.connect(url), or cyphy get/set/monitor URL")
    return _function(t.open)(url, u)
