"""One telemetry sample, byte for byte, in cyphy's protocol and in those it is compared with.

docs/protocol.md compares wire sizes; its table is ``markdown_table()`` (tools/wire_sizes.py
writes and checks it). Every row is the actual bytes of an encoding, built here from the
spec cited beside it, never a sum of field sizes, so a figure cannot drift from a wire. The
builders take a ``Sample``, so benchmarks can time encoders on the same input.

Counted: the bytes an application hands to its transport (one UDP datagram, the bytes on a
serial line, one MQTT packet in a TCP stream). Not counted: UDP/IPv4 headers (28 B a
datagram), TCP/IPv4 headers (40 B a segment, often shared by several messages), UART start
and stop bits, Modbus RTU's 3.5-character silences, and TLS records when MQTT uses TLS.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import codec

__all__ = [
    "SAMPLE",
    "Encoding",
    "Sample",
    "cbor",
    "compact_object",
    "crc16_mcrf4xx",
    "crc16_modbus",
    "cyphy_frame",
    "encodings",
    "esphome_noise",
    "esphome_plain",
    "esphome_sensor_state",
    "keyed_object",
    "markdown_table",
    "mavlink_crc_extra",
    "mavlink_v2",
    "modbus_fc03",
    "mqtt_publish",
    "sparkplug_ndata",
    "to_json",
    "varint",
]


@dataclass(frozen=True)
class Sample:
    """What every encoding carries: one sample of one control loop."""

    node: int = 1
    seq: int = 42
    t_ms: int = 123_456  # the node's milliseconds since boot
    # setpoint, measurement, output (engineering units) and status (bits, codec.ST_*)
    values: tuple[float, float, float, int] = (60.0, 59.5, -0.012, 129)
    # Boot time in UTC for the protocols that demand wall-clock time (Sparkplug, MAVLink
    # signing): 2026-01-01T00:00:00Z. It changes no size that matters (both are fixed-width
    # or the same varint length for decades).
    boot_utc_ms: int = 1_767_225_600_000

    @property
    def utc_ms(self) -> int:
        return self.boot_utc_ms + self.t_ms

    @property
    def floats(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.values)


SAMPLE = Sample()


@dataclass(frozen=True)
class Encoding:
    name: str
    system: str
    data: bytes  # the encoding's actual bytes
    seq: bool  # carries a sequence number
    timestamp: bool  # carries the sample's time
    auth: bool  # each message is authenticated
    notes: str = ""

    @property
    def size(self) -> int:
        return len(self.data)


# ------------------------------------------------------------------ checksums


def _crc16_reflected(data: bytes, poly: int, crc: int = 0xFFFF) -> int:
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc


def crc16_mcrf4xx(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/MCRF4XX, MAVLink's "X.25" checksum: polynomial 0x1021 reflected, init 0xFFFF,
    no final XOR. ``crc`` continues an earlier computation."""
    return _crc16_reflected(data, 0x8408, crc)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: polynomial 0x8005 reflected, init 0xFFFF (MODBUS over Serial Line
    V1.02, section 6.2.2)."""
    return _crc16_reflected(data, 0xA001)


# ------------------------------------------------------------------ cyphy


def _milli(s: Sample) -> list[int]:
    # cyphy telemetry carries int32 milli-units (exact decimals, no float on the wire);
    # status is a bit field, sent as it is (codec.parse_telemetry).
    return [round(v * 1000) for v in s.values[:3]] + [int(s.values[3])]


def cyphy_frame(s: Sample = SAMPLE, key: codec.Key | None = None,
                epoch: bytes = b"\0\0\0\1") -> bytes:
    """A TELEMETRY frame as the node builds it (docs/protocol.md): short header, t_ms and
    4 x int32, then an 8-byte HMAC tag (key given) or a CRC-32."""
    buf = bytearray(codec.HDR_SHORT + 4 + 4 * codec.VALUES_PER_LOOP + codec.TAG_LEN)
    n = codec.put_header(buf, 0, codec.TELEMETRY, s.node, s.seq)
    codec.put_u32(buf, n, s.t_ms)
    n += 4
    for v in _milli(s):
        codec.put_i32(buf, n, v)
        n += 4
    n = codec.seal(buf, n, key, epoch)
    return bytes(buf[:n])


# ------------------------------------------------------------------ MAVLink 2
# mavlink.io/en/guide/serialization.html. The message is MANUAL_SETPOINT (#81, common.xml),
# the one standard message whose fields are a uint32 time_boot_ms and exactly four floats
# (then two uint8 switches, which payload truncation removes when zero). Any dialect message
# with that layout has the same size; only msgid and CRC_EXTRA differ. Node id and sequence
# number need no payload bytes: they are the header's sysid and seq (8 bits, not 16).

MAVLINK_STX = 0xFD
MAVLINK_IFLAG_SIGNED = 0x01
MAVLINK_EPOCH_UNIX_MS = 1_420_070_400_000  # signing timestamps count from 2015-01-01 UTC
MANUAL_SETPOINT_ID = 81
# Wire order ("Field Reordering": by type size, largest first, stable) equals XML order here.
MANUAL_SETPOINT_FIELDS = (
    ("uint32_t", "time_boot_ms"), ("float", "roll"), ("float", "pitch"), ("float", "yaw"),
    ("float", "thrust"), ("uint8_t", "mode_switch"), ("uint8_t", "manual_override_switch"),
)


def mavlink_crc_extra(name: str, fields: Iterable[tuple[str, str]]) -> int:
    """CRC_EXTRA ("CRC Extra Calculation"): the X.25 CRC of "NAME " then "type name " for
    each base field in wire order, folded to one byte. (Array fields would also add their
    length byte; MANUAL_SETPOINT has none.)"""
    crc = crc16_mcrf4xx(f"{name} ".encode())
    for ftype, fname in fields:
        crc = crc16_mcrf4xx(f"{ftype} {fname} ".encode(), crc)
    return (crc & 0xFF) ^ (crc >> 8)


MANUAL_SETPOINT_CRC_EXTRA = mavlink_crc_extra("MANUAL_SETPOINT", MANUAL_SETPOINT_FIELDS)


def _truncate_zeros(payload: bytes) -> bytes:
    # "Payload Truncation": trailing zero bytes are not sent, but the first byte always is.
    return payload.rstrip(b"\0") or payload[:1]


def mavlink_v2(s: Sample = SAMPLE, secret_key: bytes | None = None, link_id: int = 0,
               compid: int = 1) -> bytes:
    """A MAVLink 2 MANUAL_SETPOINT packet ("MAVLink 2 Packet Format"); signed when
    ``secret_key`` (32 bytes) is given (mavlink.io/en/guide/message_signing.html)."""
    payload = _truncate_zeros(struct.pack("<I4fBB", s.t_ms, *s.floats, 0, 0))
    iflags = MAVLINK_IFLAG_SIGNED if secret_key is not None else 0
    header = bytes((MAVLINK_STX, len(payload), iflags, 0, s.seq & 0xFF, s.node, compid))
    header += MANUAL_SETPOINT_ID.to_bytes(3, "little")
    # The checksum covers everything after STX, then the CRC_EXTRA byte (never sent).
    crc = crc16_mcrf4xx(header[1:] + payload + bytes((MANUAL_SETPOINT_CRC_EXTRA,)))
    packet = header + payload + crc.to_bytes(2, "little")
    if secret_key is None:
        return packet
    # Signature: link id, 48-bit timestamp in 10 us units since 2015 (must increase on
    # every packet of a link, so a replay is stale), then the first 6 bytes of
    # SHA-256(secret_key + header + payload + CRC + link id + timestamp).
    stamp = (s.utc_ms - MAVLINK_EPOCH_UNIX_MS) * 100
    tail = bytes((link_id,)) + stamp.to_bytes(6, "little")
    return packet + tail + hashlib.sha256(secret_key + packet + tail).digest()[:6]


# ------------------------------------------------------------------ Modbus RTU
# MODBUS Application Protocol V1.1b3: registers are big-endian 16-bit words (4.2); a 32-bit
# value spans two registers, high word first (the common convention; Modbus leaves word
# order to the device). RTU framing per MODBUS over Serial Line V1.02, 2.5.1: address,
# function, data, CRC-16 low byte first.

MODBUS_READ_HOLDING_REGISTERS = 0x03


def _modbus_adu(pdu_with_address: bytes) -> bytes:
    return pdu_with_address + crc16_modbus(pdu_with_address).to_bytes(2, "little")


def modbus_fc03(s: Sample = SAMPLE, start: int = 0) -> tuple[bytes, bytes]:
    """(request, response) of a master reading the sample's 11 holding registers: seq (1),
    t_ms (2), four float32 (8). The node id is the slave address."""
    regs = struct.pack(">HI4f", s.seq, s.t_ms, *s.floats)
    count = len(regs) // 2
    request = _modbus_adu(struct.pack(">BBHH", s.node, MODBUS_READ_HOLDING_REGISTERS,
                                      start, count))
    response = _modbus_adu(bytes((s.node, MODBUS_READ_HOLDING_REGISTERS, len(regs))) + regs)
    return request, response


# ------------------------------------------------------------------ protobuf and MQTT
# protobuf.dev/programming-guides/encoding: each field is a varint key (number << 3 | wire
# type) then its value: varint (type 0), length-delimited (2), 32-bit little-endian (5).


def varint(n: int) -> bytes:
    """Base-128 varint, least significant group first. MQTT's Remaining Length (MQTT 3.1.1,
    2.2.3) is the same encoding, limited to 4 bytes."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _pb_varint(field: int, v: int) -> bytes:
    return varint(field << 3 | 0) + varint(v)


def _pb_len(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def _pb_fixed32(field: int, v: int) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<I", v)


def _pb_float(field: int, v: float) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<f", v)


def mqtt_publish(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH at QoS 0 (section 3.3): fixed header 0x30, Remaining Length,
    topic as a UTF-8 string with a 2-byte length (1.5.3); QoS 0 has no packet identifier."""
    t = topic.encode()
    body = struct.pack(">H", len(t)) + t + payload
    return b"\x30" + varint(len(body)) + body


# ------------------------------------------------------------------ Sparkplug B
# Eclipse Sparkplug 3.0.0, 6.4 and sparkplug_b.proto: Payload {timestamp = 1, metrics = 2,
# seq = 3}, Metric {alias = 2, timestamp = 3, datatype = 4, float_value = 12}. In NDATA a
# metric carries only its alias, the name being bound to it by NBIRTH
# [tck-id-payloads-alias-data-cmd-requirement]; every metric carries a timestamp
# [tck-id-payloads-name-birth-data-requirement]; the datatype is left out
# [tck-id-payloads-metric-datatype-not-req]. The payload carries the send time
# [tck-id-topics-ndata-timestamp] and the 0-255 seq [tck-id-payloads-sequence-num-always-included].
# Timestamps are UTC milliseconds (6-byte varints), not time since boot.

SPARKPLUG_TOPIC = "spBv1.0/group/NDATA/edge-node"  # namespace/group_id/NDATA/edge_node_id


def sparkplug_ndata(s: Sample = SAMPLE) -> bytes:
    """The NDATA payload (protobuf): four float metrics, aliases 1 to 4."""
    ts = s.utc_ms
    metrics = b"".join(
        _pb_len(2, _pb_varint(2, alias) + _pb_varint(3, ts) + _pb_float(12, v))
        for alias, v in enumerate(s.floats, start=1))
    return _pb_varint(1, ts) + metrics + _pb_varint(3, s.seq & 0xFF)


# ------------------------------------------------------------------ ESPHome native API
# esphome/components/api/api.proto: SensorStateResponse (id 25) {fixed32 key = 1; float
# state = 2; bool missing_state = 3}, one message per sensor, no sequence number and no
# time. Framing (developers.esphome.io, architecture/api/protocol_details):
#   plaintext: 0x00, varint(message size), varint(message type), message
#   Noise:     0x01, u16 BE size of the ciphertext, then ChaChaPoly(u16 BE type, u16 BE
#              message size, message) with its 16-byte tag: 23 B more than the message.

ESPHOME_SENSOR_STATE = 25


def esphome_sensor_state(key: int, value: float) -> bytes:
    # proto3 leaves out fields at their default, so missing_state (false) costs nothing.
    # The key is a 32-bit hash of the entity's id; any nonzero value has the same size.
    return _pb_fixed32(1, key) + _pb_float(2, value)


def esphome_plain(msg: bytes, msg_type: int = ESPHOME_SENSOR_STATE) -> bytes:
    return b"\x00" + varint(len(msg)) + varint(msg_type) + msg


def esphome_noise(msg: bytes, nonce: int, key: bytes = bytes(32),
                  msg_type: int = ESPHOME_SENSOR_STATE) -> bytes:
    """A Noise transport frame (Noise_NNpsk0_25519_ChaChaPoly_SHA256). The session key
    comes from the handshake; a zero key stands in for it (it changes no size). Noise
    revision 34, 12.3: the ChaChaPoly nonce is 32 zero bits then the 64-bit counter, LE."""
    inner = struct.pack(">HH", msg_type, len(msg)) + msg
    ct = ChaCha20Poly1305(key).encrypt(bytes(4) + nonce.to_bytes(8, "little"), inner, b"")
    return b"\x01" + struct.pack(">H", len(ct)) + ct


# ------------------------------------------------------------------ JSON and CBOR

JSON_TOPIC = "cyphy/node1/telemetry"


def compact_object(s: Sample = SAMPLE) -> dict[str, object]:
    return {"node": s.node, "seq": s.seq, "t": s.t_ms, "v": list(s.values)}


def keyed_object(s: Sample = SAMPLE) -> dict[str, object]:
    sp, y, u, status = s.values
    return {"node": s.node, "seq": s.seq, "ts": s.t_ms, "setpoint": sp, "measurement": y,
            "output": u, "status": status}


def to_json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _cbor_head(major: int, n: int) -> bytes:
    # RFC 8949, 3: the argument in the initial byte below 24, else in 1, 2, 4 or 8 more
    # bytes (additional information 24 to 27), always the shortest (4.2.1).
    if n < 24:
        return bytes((major << 5 | n,))
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | ai,)) + n.to_bytes(size, "big")
    raise ValueError("CBOR argument too large")


def _cbor_float(x: float) -> bytes:
    # RFC 8949, 4.1 preferred serialization: the shortest of half, single and double
    # precision (major type 7, additional information 25, 26, 27) that keeps the value.
    if x != x:
        return b"\xf9\x7e\x00"  # NaN as a half
    for ai, fmt in ((25, ">e"), (26, ">f"), (27, ">d")):
        try:
            raw = struct.pack(fmt, x)
        except OverflowError:
            continue
        if struct.unpack(fmt, raw)[0] == x:
            return bytes((0xE0 | ai,)) + raw
    raise AssertionError("unreachable: every float fits a double")


def cbor(obj: object) -> bytes:
    """CBOR (RFC 8949) of ints, floats, strings, bytes, lists and str-keyed dicts."""
    if isinstance(obj, bool) or obj is None:
        return {False: b"\xf4", True: b"\xf5", None: b"\xf6"}[obj]
    if isinstance(obj, int):
        return _cbor_head(0, obj) if obj >= 0 else _cbor_head(1, -1 - obj)
    if isinstance(obj, float):
        return _cbor_float(obj)
    if isinstance(obj, bytes):
        return _cbor_head(2, len(obj)) + obj
    if isinstance(obj, str):
        b = obj.encode()
        return _cbor_head(3, len(b)) + b
    if isinstance(obj, (list, tuple)):
        return _cbor_head(4, len(obj)) + b"".join(cbor(v) for v in obj)
    if isinstance(obj, dict):
        return _cbor_head(5, len(obj)) + b"".join(cbor(k) + cbor(v) for k, v in obj.items())
    raise TypeError(f"no CBOR encoding for {type(obj).__name__}")


# ------------------------------------------------------------------ the comparison

KEY = codec.Key(bytes(32))  # stands in for a node's key: a key changes no size
MAVLINK_SECRET = bytes(32)


def encodings(s: Sample = SAMPLE) -> list[Encoding]:
    auth = cyphy_frame(s, KEY)
    plain = cyphy_frame(s)
    request, response = modbus_fc03(s)
    spb = sparkplug_ndata(s)
    compact = to_json(compact_object(s))
    states = [esphome_sensor_state(key, v) for key, v in enumerate(s.floats, start=1)]
    return [
        Encoding("cyphy v1, authenticated, UDP", "cyphy", auth, True, True, True,
                 "16-bit seq; 8-byte HMAC-SHA256 tag; values as int32 milli-units"),
        Encoding("cyphy v1, authenticated, serial", "cyphy",
                 codec.serial_encode(auth, lead=False), True, True, True,
                 "COBS (+1 B) and a 00 delimiter"),
        Encoding("cyphy v1, CRC-32, UDP", "cyphy", plain, True, True, False, ""),
        Encoding("cyphy v1, CRC-32, serial", "cyphy",
                 codec.serial_encode(plain, lead=False), True, True, False, ""),
        Encoding("MAVLink v2, unsigned", "MAVLink", mavlink_v2(s), True, True, False,
                 "MANUAL_SETPOINT (#81): u32 time + 4 float, zero tail truncated; "
                 "8-bit seq; same bytes on serial and UDP"),
        Encoding("MAVLink v2, signed", "MAVLink", mavlink_v2(s, MAVLINK_SECRET), True, True,
                 True, "+13 B: link id, 48-bit timestamp, 6-byte SHA-256 signature"),
        Encoding("Modbus RTU FC03, request + response", "Modbus", request + response, True,
                 True, False, "11 registers; seq and time are application registers: "
                 "the protocol has neither, nor authentication, and is poll-only"),
        Encoding("Modbus RTU FC03, response only", "Modbus", response, True, True, False,
                 "what the slave sends; the 8-byte request precedes every read"),
        Encoding("ESPHome native API, plaintext", "ESPHome", b"".join(map(esphome_plain, states)),
                 False, False, False, "4 x SensorStateResponse (13 B each), one per value"),
        Encoding("ESPHome native API, Noise", "ESPHome",
                 b"".join(esphome_noise(m, i) for i, m in enumerate(states)), False, False,
                 True, "4 x 33 B: 3 B frame header, 4 B inner header, 16 B MAC per value"),
        Encoding("Sparkplug B NDATA over MQTT", "Sparkplug B",
                 mqtt_publish(SPARKPLUG_TOPIC, spb), True, True, False,
                 f"MQTT 3.1.1 QoS 0, topic {SPARKPLUG_TOPIC}; {len(spb)} B "
                 "protobuf: 4 float metrics by alias, each with its UTC timestamp"),
        Encoding("JSON over MQTT, compact", "JSON/MQTT",
                 mqtt_publish(JSON_TOPIC, compact), True, True, False,
                 f"topic {JSON_TOPIC}; {compact.decode()}"),
        Encoding("JSON over MQTT, keyed", "JSON/MQTT",
                 mqtt_publish(JSON_TOPIC, to_json(keyed_object(s))), True, True, False,
                 "one key per value (setpoint, measurement, output, status)"),
        Encoding("CBOR, compact map", "CBOR", cbor(compact_object(s)), True, True, False,
                 "the compact JSON's map; shortest floats (-0.012 needs a double)"),
        Encoding("CBOR over MQTT, compact map", "CBOR/MQTT",
                 mqtt_publish(JSON_TOPIC, cbor(compact_object(s))), True, True, False,
                 f"topic {JSON_TOPIC}"),
    ]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown_table(s: Sample = SAMPLE) -> str:
    """The comparison table of docs/protocol.md (ends in a newline)."""
    rows = ["| Encoding | System | Bytes | Seq | Time | Auth | Notes |",
            "|---|---|--:|---|---|---|---|"]
    for e in encodings(s):
        rows.append(f"| {e.name} | {e.system} | {e.size} | {_yes(e.seq)} | "
                    f"{_yes(e.timestamp)} | {_yes(e.auth)} | {e.notes} |")
    return "\n".join(rows) + "\n"
