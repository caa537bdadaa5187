"""Tests for cyphy.wire_sizes: every encoding against published check values and vectors,
the cyphy frames against the cyphy codec itself, and the doc's table against the code."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from cyphy import wire_sizes as ws
from cyphy_node import proto

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "wire_sizes.py"
S = ws.SAMPLE


def by_name() -> dict[str, ws.Encoding]:
    return {e.name: e for e in ws.encodings()}


def test_sizes() -> None:
    assert {name: e.size for name, e in by_name().items()} == {
        "cyphy v1, authenticated, UDP": 33,
        "cyphy v1, authenticated, serial": 35,
        "cyphy v1, CRC-32, UDP": 29,
        "cyphy v1, CRC-32, serial": 31,
        "MAVLink v2, unsigned": 32,
        "MAVLink v2, signed": 45,
        "Modbus RTU FC03, request + response": 35,
        "Modbus RTU FC03, response only": 27,
        "ESPHome native API, plaintext": 52,
        "ESPHome native API, Noise": 132,
        "Sparkplug B NDATA over MQTT": 106,
        "JSON over MQTT, compact": 82,
        "JSON over MQTT, keyed": 120,
        "CBOR, compact map": 40,
        "CBOR over MQTT, compact map": 65,
    }


def test_cyphy_compares_with_mavlink() -> None:
    e = by_name()
    mav, mav_signed = e["MAVLink v2, unsigned"].size, e["MAVLink v2, signed"].size
    # Like for like: authenticated 33 B against signed MAVLink's 45 B, CRC-framed 29 B
    # against unsigned MAVLink's 32 B (which has an 8-bit seq and needs no framing on serial).
    assert e["cyphy v1, authenticated, UDP"].size < mav_signed
    assert e["cyphy v1, authenticated, serial"].size < mav_signed
    assert e["cyphy v1, CRC-32, UDP"].size < mav
    assert e["cyphy v1, CRC-32, serial"].size < mav
    assert e["cyphy v1, authenticated, UDP"].size == mav + 1


# ------------------------------------------------------------------ checksums


def test_crc_check_values() -> None:
    # The catalogue's check value: the CRC of the ASCII digits "123456789".
    assert ws.crc16_mcrf4xx(b"123456789") == 0x6F91
    assert ws.crc16_modbus(b"123456789") == 0x4B37


def test_modbus_crc_of_a_known_frame() -> None:
    # Read 10 holding registers from slave 1 at 0: 01 03 00 00 00 0A C5 CD.
    assert ws.crc16_modbus(bytes.fromhex("01030000000A")).to_bytes(2, "little") == \
        bytes.fromhex("C5CD")


# ------------------------------------------------------------------ cyphy


def test_cyphy_authenticated_frame_is_what_the_codec_reads() -> None:
    frame = ws.cyphy_frame(S, ws.KEY)
    f = proto.parse(frame)
    assert (f.auth, f.type, f.node, f.seq) == (True, proto.TELEMETRY, S.node, S.seq)
    assert f.check(ws.KEY, b"\0\0\0\1")
    assert not f.check(ws.KEY, b"\0\0\0\2")
    t = proto.parse_telemetry(f.payload, 1)
    assert t == {"t_ms": 123456, "samples": [[(60000, 59500, -12, 129)]]}
    serial = proto.serial_encode(frame, lead=False)
    assert by_name()["cyphy v1, authenticated, serial"].data == serial
    assert serial[-1] == 0 and bytes(proto.cobs_decode(serial[:-1])) == frame


def test_cyphy_plain_frame() -> None:
    f = proto.parse(ws.cyphy_frame(S))
    assert not f.auth and f.check()
    assert len(f.payload) == 4 + 16


# ------------------------------------------------------------------ MAVLink


def test_mavlink_crc_extra_matches_the_generated_tables() -> None:
    # MAVLINK_MESSAGE_CRCS in every generated common dialect: HEARTBEAT 50, ATTITUDE 39,
    # MANUAL_SETPOINT 106.
    heartbeat = [("uint32_t", "custom_mode"), ("uint8_t", "type"), ("uint8_t", "autopilot"),
                 ("uint8_t", "base_mode"), ("uint8_t", "system_status"),
                 ("uint8_t", "mavlink_version")]
    attitude = [("uint32_t", "time_boot_ms")] + [
        ("float", n) for n in ("roll", "pitch", "yaw", "rollspeed", "pitchspeed", "yawspeed")]
    assert ws.mavlink_crc_extra("HEARTBEAT", heartbeat) == 50
    assert ws.mavlink_crc_extra("ATTITUDE", attitude) == 39
    assert ws.MANUAL_SETPOINT_CRC_EXTRA == 106


# The same bytes as pymavlink 2.4.50's encoder (MAVLINK20=1, srcSystem 1, srcComponent 1,
# seq 42; signed with a zero key, link 0, the sample's signing timestamp), which also
# verified the signature when decoding.
MAVLINK_UNSIGNED = bytes.fromhex(
    "fd1400002a010151000040e201000000704200006e42a69b44bc00000143cac5")
MAVLINK_SIGNED = bytes.fromhex(
    "fd1401002a010151000040e201000000704200006e42a69b44bc00000143fb3c"
    "000041f9d6921f561f5a63d59f")


def test_mavlink_unsigned() -> None:
    p = ws.mavlink_v2(S)
    assert p == MAVLINK_UNSIGNED
    stx, n, iflags, cflags, seq, sysid, compid = p[:7]
    assert (stx, n, iflags, cflags, seq, sysid, compid) == (0xFD, 20, 0, 0, 42, 1, 1)
    assert int.from_bytes(p[7:10], "little") == 81
    # The two zero uint8 switches are truncated; what is left is u32 + 4 x float32.
    t, *values = struct.unpack("<I4f", p[10:30])
    assert t == S.t_ms and values == pytest.approx(S.floats, rel=1e-6)
    crc = ws.crc16_mcrf4xx(p[1:30] + bytes((106,)))
    assert p[30:] == crc.to_bytes(2, "little")


def test_mavlink_signed() -> None:
    p = ws.mavlink_v2(S, bytes(32))
    assert p == MAVLINK_SIGNED
    assert p[2] == 0x01 and len(p) == len(MAVLINK_UNSIGNED) + 13
    link, stamp, sig = p[32], int.from_bytes(p[33:39], "little"), p[39:]
    assert link == 0
    assert stamp == (S.utc_ms - 1_420_070_400_000) * 100  # 10 us units since 2015
    assert sig == hashlib.sha256(bytes(32) + p[:39]).digest()[:6]


# ------------------------------------------------------------------ Modbus


def test_modbus_fc03() -> None:
    request, response = ws.modbus_fc03(S)
    assert request[:6] == bytes.fromhex("01030000000B")
    assert len(request) == 8 and len(response) == 5 + 22
    assert response[:3] == bytes((1, 3, 22))
    # A CRC-16/MODBUS over a frame that ends in its own CRC (low byte first) is 0.
    assert ws.crc16_modbus(request) == 0 and ws.crc16_modbus(response) == 0
    seq, t, *values = struct.unpack(">HI4f", response[3:25])
    assert (seq, t) == (42, 123456) and values == pytest.approx(S.floats, rel=1e-6)


# ------------------------------------------------------------------ protobuf, MQTT, Sparkplug


@pytest.mark.parametrize("n, encoded", [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (150, "9601"), (300, "ac02"),
    (16383, "ff7f"), (16384, "808001"), (268435455, "ffffff7f"),
])
def test_varint(n: int, encoded: str) -> None:
    # protobuf's encoding guide (150, 300) and MQTT 3.1.1's Remaining Length table.
    assert ws.varint(n) == bytes.fromhex(encoded)


def test_mqtt_publish() -> None:
    p = ws.mqtt_publish("a/b", b"xyz")
    assert p == bytes.fromhex("3008") + b"\x00\x03a/bxyz"


def test_sparkplug_ndata() -> None:
    payload = ws.sparkplug_ndata(S)
    ts = b"\x08" + ws.varint(S.utc_ms)  # field 1 (timestamp), varint
    assert len(ws.varint(S.utc_ms)) == 6
    assert payload.startswith(ts) and payload.endswith(b"\x18\x2a")  # field 3 (seq) = 42
    metrics = payload[len(ts):-2]
    assert len(metrics) == 4 * 16
    for i, v in enumerate(S.floats):
        m = metrics[16 * i:16 * (i + 1)]
        # field 2 (metric), length 14: alias (field 2), timestamp (field 3), float (field 12)
        assert m[:4] == bytes((0x12, 14, 0x10, i + 1))
        assert m[4:11] == b"\x18" + ws.varint(S.utc_ms)
        assert m[11] == 12 << 3 | 5 and m[12:] == struct.pack("<f", v)
    packet = by_name()["Sparkplug B NDATA over MQTT"].data
    assert packet == ws.mqtt_publish("spBv1.0/group/NDATA/edge-node", payload)
    assert packet[:4] == bytes((0x30, len(packet) - 2, 0, 29))


def test_esphome_plaintext() -> None:
    data = by_name()["ESPHome native API, plaintext"].data
    # 00, size 10, type 25, key (fixed32, field 1) = 1, state (float, field 2) = 60.0
    assert data[:13] == bytes.fromhex("000a19" "0d01000000" "1500007042")
    assert len(data) == 4 * 13


def test_esphome_noise() -> None:
    msg = ws.esphome_sensor_state(3, -0.012)
    frame = ws.esphome_noise(msg, nonce=2)
    assert frame[0] == 1 and int.from_bytes(frame[1:3], "big") == len(frame) - 3
    assert len(frame) == len(msg) + 23
    nonce = bytes(4) + (2).to_bytes(8, "little")
    inner = ChaCha20Poly1305(bytes(32)).decrypt(nonce, frame[3:], b"")
    assert inner == bytes.fromhex("0019000a") + msg


# ------------------------------------------------------------------ JSON and CBOR


def test_json() -> None:
    assert ws.to_json(ws.compact_object(S)) == \
        b'{"node":1,"seq":42,"t":123456,"v":[60.0,59.5,-0.012,129]}'
    packet = by_name()["JSON over MQTT, compact"].data
    assert packet.endswith(ws.to_json(ws.compact_object(S)))


@pytest.mark.parametrize("value, encoded", [
    # RFC 8949, Appendix A
    (0, "00"), (23, "17"), (24, "1818"), (100, "1864"), (1000, "1903e8"),
    (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"), (-1, "20"),
    (-100, "3863"), (-1000, "3903e7"), (0.0, "f90000"), (-0.0, "f98000"), (1.0, "f93c00"),
    (1.1, "fb3ff199999999999a"), (1.5, "f93e00"), (65504.0, "f97bff"),
    (100000.0, "fa47c35000"), (3.4028234663852886e38, "fa7f7fffff"),
    (1.0e300, "fb7e37e43c8800759c"), (-4.0, "f9c400"), (-4.1, "fbc010666666666666"),
    (float("inf"), "f97c00"), (float("nan"), "f97e00"), (False, "f4"), (None, "f6"),
    ("", "60"), ("IETF", "6449455446"), ("\u00fc", "62c3bc"), ([], "80"),
    ([1, [2, 3], [4, 5]], "8301820203820405"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
])
def test_cbor_rfc8949_examples(value: object, encoded: str) -> None:
    assert ws.cbor(value) == bytes.fromhex(encoded)


def test_cbor_sample() -> None:
    data = by_name()["CBOR, compact map"].data
    assert data == bytes.fromhex(
        "a4" "646e6f6465" "01" "63736571" "182a" "6174" "1a0001e240" "6176" "84"
        "f95380" "f95370" "fbbf889374bc6a7efa" "1881")


# ------------------------------------------------------------------ the table and the doc


def test_table_lists_every_encoding() -> None:
    table = ws.markdown_table()
    assert table.endswith("\n") and table.count("\n") == 2 + len(ws.encodings())
    for e in ws.encodings():
        assert f"| {e.name} | {e.system} | {e.size} |" in table


def test_doc_table_is_current() -> None:
    """docs/protocol.md's table is the computed one."""
    doc = REPO / "docs" / "protocol.md"
    r = subprocess.run([sys.executable, str(TOOL), "--check", str(doc)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_check_and_write(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Sizes\n\n<!-- wire-sizes:begin -->\nold\n<!-- wire-sizes:end -->\n\nEnd.\n")
    run = [sys.executable, str(TOOL)]
    r = subprocess.run([*run, "--check", str(doc)], capture_output=True, text=True)
    assert r.returncode == 1 and "stale" in r.stderr
    assert subprocess.run([*run, "--write", str(doc)], capture_output=True).returncode == 0
    text = doc.read_text()
    assert text.startswith("# Sizes\n\n<!-- wire-sizes:begin -->\n| Encoding |")
    assert text.endswith("|\n<!-- wire-sizes:end -->\n\nEnd.\n")
    r = subprocess.run([*run, "--check", str(doc)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (tmp_path / "bare.md").write_text("no markers\n")
    r = subprocess.run([*run, "--check", str(tmp_path / "bare.md")], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "wire-sizes:begin" in r.stderr
