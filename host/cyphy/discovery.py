"""Finding nodes: on UDP by broadcast (HELLO_REQ to every node, each answers HELLO) and by
listening for the HELLOs nodes announce by themselves; serial ports with ESP32 USB-UART
bridges; running sim nodes. docs/protocol.md, "Discovery"."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field

from cyphy_node import hostside

from . import codec as P

# Sim nodes live on loopback, where a broadcast to 255.255.255.255 does not go.
BROADCASTS = ("255.255.255.255", "127.255.255.255")


@dataclass
class Found:
    """A node that answered (or announced itself) on UDP."""

    url: str
    ip: str
    port: int
    node_id: int
    name: str
    board: str
    firmware: str
    uid: str
    loops: list[str]
    authenticated: bool           # the node signs its frames (it has a key)
    verified: bool | None = None  # the tag checked out with a key we hold (given, or one of the
                                  # key store's for its name); False: it did not, or the node has
                                  # no key though we hold one for its name; None: no key held
    how: str = "answer"           # "answer" to our HELLO_REQ, or "announce"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _found(data: bytes, src: tuple[str, int], nonce: bytes | None, key: P.Key | None) -> Found | None:
    try:
        f = P.parse(data)
        if f.from_host or f.type != P.HELLO:
            return None
        h = P.parse_payload(P.HELLO, f.payload)
    except P.ProtoError:
        return None
    zero = bytes(P.NONCE_LEN)
    if h["nonce"] != zero and h["nonce"] != nonce:
        return None  # an answer to somebody else's HELLO_REQ
    # the key given (for one node, perhaps another) and every key the store holds for this
    # node's name: the primary and, during a key change, the pending ones (cyphy.keys)
    held = ([key] if key is not None else []) + _stored_keys(h["name"])
    if f.auth:
        verified = hostside.verify(f, h, held) is not None if held else None
    elif not f.check():
        return None  # corrupt
    else:
        verified = False if held else None  # we hold a key for this name; this node has none
    return Found(url=f"udp://{src[0]}:{src[1]}", ip=src[0], port=src[1], node_id=f.node,
                 name=h["name"], board=h["board"], firmware=h["firmware"], uid=h["uid"].hex(),
                 loops=h["loops"], authenticated=f.auth, verified=verified,
                 how="announce" if h["nonce"] == zero else "answer")


def _stored_keys(name: str) -> list[P.Key]:
    """The keys this host's key store holds for a node name (cyphy.keys), if any: the
    primary and the pending ones of a key change not yet confirmed."""
    from . import keys

    try:
        return [P.key_from_hex(h) for h in keys.load_key_hexes(name)]
    except (keys.KeyStoreError, ValueError):
        return []


def discover_udp(timeout: float = 1.0, port: int = P.UDP_PORT, key: P.Key | None = None,
                 broadcasts: tuple[str, ...] = BROADCASTS) -> list[Found]:
    """Broadcast a HELLO_REQ and collect the HELLOs that answer it for `timeout` seconds.
    Each node answers once per request; duplicates (several broadcast addresses) are
    merged by address."""
    nonce = os.urandom(P.NONCE_LEN)
    req = P.build(P.HOST | P.LONG, P.HELLO_REQ, P.NODE_ANY, time.time_ns() // 10_000,
                  P.hello_req(nonce, P.HELLO_REQ_PAD))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("", 0))
        for addr in broadcasts:
            try:
                s.sendto(req, (addr, port))
            except OSError:
                pass  # no route for this broadcast address here: the others may do
        return _collect(s, timeout, nonce, key)


def listen_announces(seconds: float, port: int = P.UDP_PORT, key: P.Key | None = None,
                     address: str = "") -> list[Found]:
    """The nodes that announce themselves within `seconds` (every node does at start and
    every 10 s). address: "" for Wi-Fi, "127.255.255.255" for sim nodes on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        return _collect(s, seconds, None, key)


def _collect(s: socket.socket, seconds: float, nonce: bytes | None, key: P.Key | None) -> list[Found]:
    """The nodes heard on s within `seconds`, one per address, sorted."""
    found: dict[tuple[str, int], Found] = {}
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, src = s.recvfrom(2048)
        except (socket.timeout, BlockingIOError):
            break
        n = _found(data, src, nonce, key)
        if n is not None:
            found[(n.ip, n.port)] = n
    return sorted(found.values(), key=lambda n: (n.ip, n.port))


# USB-UART bridges found on ESP32 boards, and Espressif's own USB (S2/S3/C3/C6 USB-Serial/JTAG
# and TinyUSB CDC): (VID, PID) -> name.
ESP_BRIDGES = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232H",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG",
    (0x303A, 0x0002): "Espressif USB CDC",
    (0x303A, 0x4001): "Espressif USB CDC (MicroPython)",
}


def serial_ports() -> list[dict]:
    """Serial ports whose USB VID:PID is a bridge used on ESP32 boards."""
    from serial.tools import list_ports

    out = []
    for p in list_ports.comports():
        name = ESP_BRIDGES.get((p.vid, p.pid)) if p.vid is not None else None
        if name:
            out.append({"url": f"serial://{p.device}", "device": p.device, "bridge": name,
                        "vid_pid": f"{p.vid:04x}:{p.pid:04x}", "serial_number": p.serial_number,
                        "description": p.description})
    return out


def sim_nodes() -> list[dict]:
    """Running sim nodes of this $CYPHY_HOME."""
    from cyphy.sim.nodes import all_nodes

    out = []
    for n in all_nodes():
        st = n.state()
        if st is not None:
            cfg = n.config()
            out.append({"url": f"sim://{n.name}", "name": n.name, "tty": str(n.tty),
                        "ip": cfg.get("ip"), "mac": cfg.get("mac")})
    return out
