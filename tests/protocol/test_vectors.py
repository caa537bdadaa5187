"""The shared protocol test vectors (tests/protocol/vectors.json, written by
tools/gen_vectors.py), checked with the one codec source (cyphy.codec: the node's
cyphy_node.proto and the host's part) on CPython and on the real MicroPython runtime (the
Unix port).

For every vector, on both runtimes: parse() gives the header fields; check() is True with
the vector's key/EPOCH/ROC and, for AUTH frames, False with no key, a wrong key, a wrong
EPOCH or a wrong ROC; parse_payload() gives "decoded" (or the ProtoError reason "error");
building the frame again from the decoded fields gives the same bytes; serial_encode() gives
"serial" and cobs_decode() undoes it.

The vectors are made by proto itself, so CPython also checks them against independent
code: the header with struct, the CRC-32 with zlib, the TAG with the hmac module, COBS with
a reference encoder written here, and the canonical telemetry frame byte by byte from the
spec's layout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from pathlib import Path

import pytest

from cyphy import codec as P

from protocol_vectors import ALL, REPO, VECTORS, load_module, run_micropython  # noqa: E402
IDS = [v["name"] for v in ALL]

# ---------------------------------------------------------------- the checker (both runtimes)
# Plain Python that runs on MicroPython and CPython alike: CPython execs it in-process,
# MicroPython gets it as one script for all the vectors.
CHECK_SRC = r'''
import binascii
import json
from cyphy import codec as P


def unhex(s):
    return binascii.unhexlify(s)


def hexs(b):
    return binascii.hexlify(bytes(b)).decode()


def jsonable(x):
    if isinstance(x, (bytes, bytearray)):
        return hexs(x)
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        d = {}
        for k in x:
            d[k] = jsonable(x[k])
        return d
    return x


def payload_from(t, d):
    """The payload built again from its decoded (JSON) form with proto's builders."""
    if t == P.HELLO_REQ:
        return P.hello_req(unhex(d["nonce"]))
    if t == P.HELLO:
        return P.hello(unhex(d["epoch"]), unhex(d["nonce"]), d["roc"], d["caps"],
                       unhex(d["uid"]), d["loops"], d["name"], d["board"], d["firmware"])
    if t == P.TELEMETRY:
        s = d["samples"]
        b = bytearray(4 + 16 * len(s) * len(s[0]))
        P.put_u32(b, 0, d["t_ms"])
        o = 4
        for sample in s:
            for loop in sample:
                for v in loop:
                    P.put_i32(b, o, v)
                    o += 4
        return bytes(b)
    if t == P.STATS:
        return P.stats(d["t_ms"], d["loops"])
    if t == P.HEARTBEAT:
        if not d:
            return b""
        return P.heartbeat(d["uptime_ms"], d["state"], [d[c] for c in P.COUNTERS])
    if t == P.COMMAND:
        c = d["cmd"]
        if c in (P.CMD_SET, P.CMD_SET_SAVE):
            return P.cmd_set_many(d["sets"], c == P.CMD_SET_SAVE)
        if c == P.CMD_SUBSCRIBE:
            return P.cmd_subscribe(d["period_ms"], d["batch"], d["stats_s"])
        if c == P.CMD_REBOOT:
            return P.cmd_reboot(d["delay_ms"])
        if c == P.CMD_CONFIG:
            return P.cmd_config(d["patch"])
        if c == P.CMD_SET_PARAM:
            return P.cmd_set_param(d["name"], d["value"])
        if c == P.CMD_CLEAR:
            return bytes((P.CMD_CLEAR,))
        if c == P.CMD_TUNE:
            if d["op"] == P.TUNE_START:
                return P.cmd_tune_start(d["loop"], d["amplitude"], d["hyst"], d["rule"],
                                        d["timeout_s"], d["apply"])
            return P.cmd_tune(d["op"], d["loop"])
    if t == P.ACK:
        return P.ack(P.u48(d["ref"]), unhex(d["result"]))
    if t == P.NACK:
        return P.nack(P.u48(d["ref"]), d["reason"], d["text"])
    if t == P.EVENT:
        return P.event(d["kind"], d["t_ms"], d["loop"], d["code"], d["value"], d["text"])
    if t == P.TIME:
        return P.time_req(d["host_ms"])
    if t == P.READ:
        return P.read_req(d["path"])
    if t == P.BYE:
        return b""
    raise ValueError("no builder for type %d" % t)


def check_vector(v):
    key = P.Key(unhex(v["key"])) if v["key"] else None
    other = bytes([c ^ 1 for c in unhex(v["key"])]) if v["key"] else b"k" * 32
    epoch = unhex(v["epoch"])
    roc = v["roc"]
    frame = unhex(v["frame"])
    f = P.parse(frame)
    r = {"name": v["name"], "type": f.type, "node": f.node, "seq": f.seq, "flags": f.flags,
         "auth": f.auth, "payload": hexs(f.payload),
         "check": f.check(key, epoch, roc),
         "check_no_key": f.check(None, epoch, roc),
         "check_wrong_key": f.check(P.Key(other), epoch, roc),
         "check_wrong_epoch": f.check(key, bytes([epoch[0] ^ 0x80]) + epoch[1:], roc),
         "check_wrong_roc": f.check(key, epoch, roc ^ 1)}
    try:
        r["decoded"] = jsonable(P.parse_payload(f.type, f.payload, v["nloops"]))
        r["error"] = None
    except P.ProtoError as e:
        r["decoded"] = None
        r["error"] = e.reason
    p = payload_from(v["type"], v["decoded"]) if v["decoded"] is not None else unhex(v["payload"])
    r["rebuilt"] = hexs(P.build(v["flags"], v["type"], v["node"], v["seq"], p, key, epoch, roc))
    s = P.serial_encode(frame)
    r["serial"] = hexs(s)
    r["serial_nolead"] = hexs(P.serial_encode(frame, False))
    r["cobs_back"] = hexs(P.cobs_decode(s[1:-1]))
    buf = bytearray(P.MAX_FRAME + 2)      # the node's allocation-free encoder: n + 1 bytes
    r["cobs_len"] = P.cobs_encode(frame, len(frame), buf, 0)
    return r


def run_all(path):
    f = open(path)
    vs = json.loads(f.read())
    f.close()
    for v in vs:
        try:
            r = check_vector(v)
        except Exception as e:  # reported, and the test fails on it
            r = {"name": v["name"], "exception": repr(e)}
        print(json.dumps(r))
'''

_ns: dict = {}
exec(compile(CHECK_SRC, "<check_src>", "exec"), _ns)
check_vector = _ns["check_vector"]


def expected(v: dict) -> dict:
    auth = bool(v["flags"] & P.AUTH)
    return {"name": v["name"], "type": v["type"], "node": v["node"], "seq": v["seq"],
            "flags": v["flags"], "auth": auth, "payload": v["payload"],
            "check": True, "check_no_key": not auth, "check_wrong_key": not auth,
            "check_wrong_epoch": not auth, "check_wrong_roc": not auth,
            "decoded": v["decoded"], "error": v["error"], "rebuilt": v["frame"],
            "serial": v["serial"], "serial_nolead": v["serial"][2:], "cobs_back": v["frame"],
            "cobs_len": len(v["frame"]) // 2 + 1}


# ---------------------------------------------------------------- CPython


@pytest.mark.parametrize("v", ALL, ids=IDS)
def test_vector_cpython(v):
    assert check_vector(v) == expected(v)


# ---------------------------------------------------------------- MicroPython


@pytest.fixture(scope="module")
def mpy_results() -> dict:
    out = run_micropython(CHECK_SRC + "\nrun_all(%r)\n" % str(VECTORS), timeout=60)
    rs = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [r["name"] for r in rs] == IDS
    return {r["name"]: r for r in rs}


@pytest.mark.parametrize("v", ALL, ids=IDS)
def test_vector_micropython(v, mpy_results):
    r = mpy_results[v["name"]]
    assert "exception" not in r, r["exception"]
    assert r == expected(v)


# ---------------------------------------------------------------- independent cross-checks


def ref_cobs(data: bytes) -> bytes:
    """COBS as in Cheshire & Baker: blocks of up to 254 non-zero bytes after a code byte;
    a final full block ends the chunk."""
    out, block, full = bytearray(), bytearray(), False
    for b in data:
        full = False
        if b:
            block.append(b)
            if len(block) == 254:
                out += bytes([255]) + block
                block, full = bytearray(), True
        else:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
    if not full:
        out += bytes([len(block) + 1]) + block
    return bytes(out)


@pytest.mark.parametrize("v", ALL, ids=IDS)
def test_vector_independent(v):
    frame = bytes.fromhex(v["frame"])
    vf, ftype, node = frame[0], frame[1], frame[2]
    assert vf >> 5 == 1 and vf & 0x1F == v["flags"] and not vf & 0x03
    assert (ftype, node) == (v["type"], v["node"])
    if vf & 0x04:  # LONG: a 6-byte little-endian SEQ
        hdr, seq = 9, int.from_bytes(frame[3:9], "little")
    else:
        hdr, seq = 5, struct.unpack_from("<H", frame, 3)[0]
    assert seq == v["seq"]
    if vf & 0x10:  # AUTH: HMAC-SHA256(key, EPOCH || ROC(LE16) || header+payload)[:8]
        body, tail = frame[:-8], frame[-8:]
        msg = bytes.fromhex(v["epoch"]) + struct.pack("<H", v["roc"]) + body
        assert tail == hmac.new(bytes.fromhex(v["key"]), msg, hashlib.sha256).digest()[:8]
    else:  # CRC-32 (IEEE, as zlib), little-endian
        body, tail = frame[:-4], frame[-4:]
        assert tail == struct.pack("<I", zlib.crc32(body))
        assert v["key"] is None
    assert body[hdr:].hex() == v["payload"]
    assert len(frame) <= 254
    cobs = ref_cobs(frame)
    assert len(cobs) == len(frame) + 1 and 0 not in cobs
    assert bytes.fromhex(v["serial"]) == b"\0" + cobs + b"\0"


def _hand_telemetry(flags: int, key: bytes | None, epoch: bytes, roc: int) -> bytes:
    # docs/protocol.md layout, written out: VF TYPE NODE SEQ(u16) | t_ms(u32) then one loop's
    # setpoint, measurement, output, status (i32 each) | CRC-32(u32) or TAG(8); little-endian.
    body = bytes([(1 << 5) | flags, 3, 1]) + struct.pack("<H", 42)
    body += struct.pack("<I", 123456) + struct.pack("<iiii", 60000, 59500, -12, 0x81)
    if key is None:
        return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)
    mac = hmac.new(key, epoch + struct.pack("<H", roc) + body, hashlib.sha256).digest()
    return body + mac[:8]


def test_canonical_telemetry_by_hand():
    vs = {v["name"]: v for v in ALL}
    plain = _hand_telemetry(0, None, b"", 0)
    assert len(plain) == 29
    assert plain.hex() == vs["telemetry_canonical_crc"]["frame"]
    assert plain.hex() == ("2003012a00" "40e20100" "60ea0000" "6ce80000" "f4ffffff" "81000000"
                           + struct.pack("<I", zlib.crc32(plain[:-4])).hex())
    v = vs["telemetry_canonical_auth"]
    key, epoch = bytes.fromhex(v["key"]), bytes.fromhex(v["epoch"])
    auth = _hand_telemetry(0x10, key, epoch, v["roc"])
    assert len(auth) == 33
    assert auth.hex() == v["frame"]
    # on a serial link: COBS adds one byte, then the 00 delimiter: 35 bytes (+ the optional
    # leading 00 that serial_encode puts first by default)
    wire = ref_cobs(auth) + b"\0"
    assert len(wire) == 35
    assert P.serial_encode(auth, lead=False) == wire
    assert P.serial_encode(auth) == b"\0" + wire
    # and proto's own builders make the same bytes
    b = bytearray(P.MAX_FRAME + P.TAG_LEN)
    n = P.put_header(b, 0, P.TELEMETRY, 1, 42)
    P.put_u32(b, n, 123456)
    for i, x in enumerate((60000, 59500, -12, 0x81)):
        P.put_i32(b, n + 4 + 4 * i, x)
    assert bytes(b[:P.seal(b, n + 20)]) == plain
    assert bytes(b[:P.seal(b, n + 20, P.Key(key), epoch, v["roc"])]) == auth


def test_vectors_cover_the_protocol():
    ok = [v for v in ALL if v["error"] is None]
    assert {v["type"] for v in ok} == set(P.TYPE_NAMES)
    assert {v["decoded"]["cmd"] for v in ok if v["type"] == P.COMMAND} == set(P.CMD_NAMES)
    flags = [v["flags"] for v in ALL]
    assert any(f & P.AUTH for f in flags) and any(not f & P.AUTH for f in flags)
    assert any(f & P.LONG for f in flags) and any(not f & P.LONG for f in flags)
    assert any(f & P.LONG and f & P.AUTH for f in flags)
    assert any(v["roc"] and v["flags"] & P.AUTH for v in ALL)
    assert {len(v["key"]) // 2 for v in ALL if v["key"]} == {16, 32, 64}
    frames = [bytes.fromhex(v["frame"]) for v in ALL]
    assert any(len(f) == P.MAX_FRAME and 0 not in f for f in frames)  # one 254-byte run
    assert any(len(f) == P.MAX_FRAME and f.count(0) > 200 for f in frames)
    assert any(len(f) == P.MAX_FRAME and f[-1] == 0 and 0 not in f[:-1] for f in frames)
    batched = [v for v in ok if v["type"] == P.TELEMETRY and v["nloops"] == 2]
    assert any(len(v["decoded"]["samples"]) == 3 for v in batched)
    assert {v["error"] for v in ALL} >= {None, P.R_MALFORMED, P.R_UNKNOWN_COMMAND,
                                         P.R_OUT_OF_RANGE}


def test_vectors_file_is_current():
    """vectors.json is what tools/gen_vectors.py writes (deterministic, nothing hand-edited)."""
    gen = load_module("_cyphy_gen_vectors", REPO / "tools" / "gen_vectors.py")
    assert gen.render(gen.vectors()) == VECTORS.read_text(encoding="utf-8"), \
        "tests/protocol/vectors.json is stale: run tools/gen_vectors.py"
