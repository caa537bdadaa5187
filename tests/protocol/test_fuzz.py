"""Decoders never crash, hang or allocate without bound (cyphy.codec over cyphy_node.proto).

- hypothesis properties (CPython): arbitrary bytes into parse / cobs_decode / parse_payload
  raise only ProtoError; valid frames and payloads round-trip; COBS round-trips and adds
  exactly one byte to anything up to MAX_FRAME.
- a deterministic fuzz loop through the whole receive path (serial: cobs_decode -> parse ->
  check -> parse_payload; UDP: parse -> ...): >= 100k malformed frames on CPython, >= 10k
  on MicroPython with a 256 KB heap whose use must not grow. Many of the frames carry a
  CRC (or a TAG, made with the right key) recomputed after the mutation, so the payload
  parsers are exercised past the integrity check.
- every truncation and every single-bit flip of every vector's frame and serial chunk, on
  both runtimes: ProtoError, or check() is False. No mutated frame is ever accepted.

The fuzz engine is one source (FUZZ_SRC) run by both runtimes, with its own xorshift PRNG
(so a seed means the same frames on both).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cyphy import codec as P

from protocol_vectors import ALL, REPO, VECTORS, run_micropython  # noqa: E402

# ---------------------------------------------------------------- the fuzz engine (both runtimes)
FUZZ_SRC = r'''
import binascii
import gc
import json
from cyphy import codec as P

_TYPES = 16          # types 0..14 counted one by one, the rest in the last slot


def unhex(s):
    return binascii.unhexlify(s)


class Rng:
    """xorshift32: the same numbers on both runtimes (no allocation on a 64-bit port)."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def u32(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.u32() % n

    def bytes(self, n):
        b = bytearray(n)
        for i in range(n):
            b[i] = self.u32() & 0xFF
        return b


def load(path):
    """[(name, frame, key, epoch, roc, nloops, chunk)]: chunk is the COBS chunk (no 00s)."""
    f = open(path)
    vs = json.loads(f.read())
    f.close()
    out = []
    for v in vs:
        frame = bytes(unhex(v["frame"]))
        key = P.Key(unhex(v["key"])) if v["key"] else None
        chunk = bytes(unhex(v["serial"])[1:-1])
        out.append((v["name"], frame, key, bytes(unhex(v["epoch"])), v["roc"], v["nloops"],
                    chunk))
    return out


def mutate(r, b):
    """One random mutation of the bytearray b; returns the result (maybe a new array)."""
    n = len(b)
    if n == 0:
        return r.bytes(r.below(12))
    m = r.below(7)
    if m == 0:                                   # bit flips
        for _ in range(1 + r.below(3)):
            i = r.below(n * 8)
            b[i >> 3] ^= 1 << (i & 7)
    elif m == 1:                                 # byte substitutions
        for _ in range(1 + r.below(4)):
            b[r.below(n)] = r.u32() & 0xFF
    elif m == 2:                                 # truncation
        b = b[:r.below(n)]
    elif m == 3:                                 # extension
        b = b + r.bytes(1 + r.below(16))
    elif m == 4:                                 # a byte deleted or inserted
        i = r.below(n)
        if r.below(2):
            b = b[:i] + b[i + 1:]
        else:
            b = b[:i] + r.bytes(1) + b[i:]
    elif m == 5:                                 # boundary values
        b[r.below(n)] = (0, 0xFF, 0x7F, 0x80, 1, 0xFE)[r.below(6)]
    else:                                        # a slice repeated (lengths, strings)
        i = r.below(n)
        b = b[:i] + b[i:i + 1 + r.below(8)] + b[i:]
    return b


def seal(r, body, key, epoch, roc):
    """body (header + payload) ended with a right CRC or, with the key, a right TAG."""
    if key is not None and r.below(2):
        body[0] |= P.AUTH
        return bytes(body) + key.tag(epoch, roc, bytes(body))
    body[0] &= ~P.AUTH & 0xFF
    c = P.crc32(body)
    return bytes(body) + bytes((c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, c >> 24))


def make(r, v):
    """A malformed input from vector v: (data, mode, sealed); mode 0: a frame for parse()
    (UDP), 1: a frame to send through COBS (serial), 2: a COBS chunk (serial)."""
    name, frame, key, epoch, roc, nloops, chunk = v
    k = r.below(10)
    if k <= 1:                                   # mutations of the whole frame
        b = bytearray(frame)
        for _ in range(1 + r.below(3)):
            b = mutate(r, b)
        return b, r.below(2), False
    if k == 2:                                   # garbage, often with a valid VF byte
        b = r.bytes(r.below(262))
        if b and r.below(2):
            b[0] = 0x20 | (r.u32() & 0x1C)
        return b, r.below(2), False
    if k == 3:                                   # the header only
        b = bytearray(frame)
        i = r.below(9 * 8)
        b[i >> 3] ^= 1 << (i & 7)
        return b, r.below(2), False
    if k == 4:                                   # the COBS chunk
        b = bytearray(chunk)
        for _ in range(1 + r.below(2)):
            b = mutate(r, b)
        return b, 2, False
    # k 5..9: a mutated payload (sometimes type and flags too) with a right CRC or TAG,
    # so that parse_payload sees it
    hdr = P.HDR_LONG if frame[0] & P.LONG else P.HDR_SHORT
    end = len(frame) - (P.TAG_LEN if frame[0] & P.AUTH else P.CRC_LEN)
    head = bytearray(frame[:hdr])
    if r.below(3) == 0:
        head[1] = 1 + r.below(13)                # another type: its parser, this payload
    if r.below(8) == 0:
        head[0] = (head[0] & ~(P.HOST | P.LONG)) | (r.u32() & (P.HOST | P.LONG))
        hdr2 = P.HDR_LONG if head[0] & P.LONG else P.HDR_SHORT
        if hdr2 > len(head):
            head = head + r.bytes(hdr2 - len(head))
        else:
            head = head[:hdr2]
    p = bytearray(frame[hdr:end])
    for _ in range(1 + r.below(3)):
        p = mutate(r, p)
    body = head + p
    if len(body) > P.MAX_FRAME - P.TAG_LEN:
        body = body[:P.MAX_FRAME - P.TAG_LEN]
    return seal(r, body, key, epoch, roc), r.below(2), True


def receive(data, serial, key, epoch, roc, nloops, orig, sealed, st):
    """The receive path; st counts what happened. Returns "" or a complaint."""
    stage = 0
    try:
        if serial:
            data = P.cobs_decode(data)
            if len(data) > P.MAX_FRAME + 1:
                return "cobs_decode made %d bytes" % len(data)
        stage = 1
        f = P.parse(data)
        stage = 2
        ok = f.check(key, epoch, roc)
        if ok:
            st["check_true"] += 1
            if f.flags & P.AUTH and not sealed and bytes(data) != orig:
                return "a mutated AUTH frame passed check()"
        stage = 3
        P.parse_payload(f.type, f.payload, nloops)
        if ok:
            st["types"][f.type if f.type < _TYPES else _TYPES - 1] += 1
        stage = 4
    except P.ProtoError:
        pass
    except Exception as e:
        return "%s at stage %d: %r" % (type(e).__name__, stage, e)
    st["stages"][stage] += 1
    return ""


def new_stats():
    return {"frames": 0, "check_true": 0, "sealed": 0, "stages": [0, 0, 0, 0, 0],
            "types": [0] * _TYPES, "bad": [], "nbad": 0, "mem": []}


def fuzz(vs, seed, n, mem_every=0):
    """n malformed inputs; st["bad"] holds up to 5 complaints (hex of the input first)."""
    r = Rng(seed)
    st = new_stats()
    nv = len(vs)
    i = 0
    while i < n:
        v = vs[r.below(nv)]
        name, frame, key, epoch, roc, nloops, chunk = v
        data, mode, sealed = make(r, v)
        if not sealed and bytes(data) == (chunk if mode == 2 else frame):
            continue                             # not a mutation after all
        if sealed:
            st["sealed"] += 1
        if r.below(4) == 0:
            nloops = r.below(9)
        if mode == 1:
            data = P.serial_encode(data, False)[:-1]
        why = receive(data, mode, key, epoch, roc, nloops, frame, sealed, st)
        if why:
            st["nbad"] += 1
            if len(st["bad"]) < 5:
                st["bad"].append(name + ": " + why + " <- " + binascii.hexlify(data).decode())
        i += 1
        if mem_every and i % mem_every == 0:
            gc.collect()
            st["mem"].append(gc.mem_alloc())
    st["frames"] = i
    return st


def outcome(data, serial, key, epoch, roc, nloops, orig, st):
    """One truncated or bit-flipped input: counts error / rejected / same; a complaint if
    it was accepted or raised anything but ProtoError."""
    try:
        if serial:
            data = P.cobs_decode(data)
        f = P.parse(data)
        if f.check(key, epoch, roc):
            if bytes(data) == orig:
                st["same"] += 1
                return ""
            return "accepted"
        st["rejected"] += 1
        try:
            P.parse_payload(f.type, f.payload, nloops)
        except P.ProtoError:
            pass
        return ""
    except P.ProtoError:
        st["error"] += 1
        return ""
    except Exception as e:
        return "%s: %r" % (type(e).__name__, e)


def exhaustive(vs):
    """Every truncation and every single-bit flip of every vector's frame and chunk."""
    st = {"inputs": 0, "error": 0, "rejected": 0, "same": 0, "bad": [], "nbad": 0,
          "crc_flips": 0, "auth_flips": 0}
    for name, frame, key, epoch, roc, nloops, chunk in vs:
        for serial in (0, 1):
            src = chunk if serial else frame
            n = len(src)
            for cut in range(n):
                why = outcome(src[:cut], serial, key, epoch, roc, nloops, frame, st)
                st["inputs"] += 1
                if why:
                    st["nbad"] += 1
                    if len(st["bad"]) < 5:
                        st["bad"].append("%s %s[:%d]: %s" % (
                            name, "chunk" if serial else "frame", cut, why))
            b = bytearray(src)
            for bit in range(n * 8):
                b[bit >> 3] ^= 1 << (bit & 7)
                why = outcome(b, serial, key, epoch, roc, nloops, frame, st)
                b[bit >> 3] ^= 1 << (bit & 7)
                st["inputs"] += 1
                if not serial:
                    st["auth_flips" if frame[0] & P.AUTH else "crc_flips"] += 1
                if why:
                    st["nbad"] += 1
                    if len(st["bad"]) < 5:
                        st["bad"].append("%s %s bit %d: %s" % (
                            name, "chunk" if serial else "frame", bit, why))
    return st
'''

_ns: dict = {}
exec(compile(FUZZ_SRC, "<fuzz_src>", "exec"), _ns)
VS = _ns["load"](str(VECTORS))

CPY_SEEDS = (1, 2, 3, 4)
CPY_FRAMES = 50_000          # per seed: 200k in all
MPY_FRAMES = 50_000
assert len(CPY_SEEDS) * CPY_FRAMES >= 100_000 and MPY_FRAMES >= 10_000


def _check_fuzz_stats(st: dict, n: int) -> None:
    assert st["nbad"] == 0, st["bad"]
    assert st["frames"] == n
    assert sum(st["stages"]) == n                # every input ended in ProtoError or parsed
    # the payload parsers really ran, past the integrity check, for every frame type
    assert st["check_true"] >= n // 4, st
    assert st["stages"][3] + st["stages"][4] >= n // 3, st
    for t in range(1, 13):
        assert st["types"][t] >= n // 500, (t, st["types"])


# ---------------------------------------------------------------- deterministic fuzz: CPython


@pytest.mark.parametrize("seed", CPY_SEEDS)
def test_fuzz_cpython(seed):
    t0 = time.perf_counter()
    st = _ns["fuzz"](VS, seed, CPY_FRAMES)
    dt = time.perf_counter() - t0
    _check_fuzz_stats(st, CPY_FRAMES)
    print(f"seed {seed}: {CPY_FRAMES} frames in {dt:.2f} s: {st['stages']} {st['check_true']}")


def test_exhaustive_cpython():
    st = _ns["exhaustive"](VS)
    assert st["nbad"] == 0, st["bad"]
    assert st["same"] == 0
    # every bit of every frame, CRC (CRC-32 finds every single-bit error) and AUTH alike
    assert st["crc_flips"] == 8 * sum(len(v[1]) for v in VS if not v[1][0] & P.AUTH)
    assert st["auth_flips"] == 8 * sum(len(v[1]) for v in VS if v[1][0] & P.AUTH)
    assert st["inputs"] == sum(9 * (len(v[1]) + len(v[6])) for v in VS)
    assert st["inputs"] == st["error"] + st["rejected"]


# ---------------------------------------------------------------- the same on MicroPython

MPY_FUZZ = r'''
vs = load(%(path)r)
gc.collect()
m0 = gc.mem_alloc()
st = fuzz(vs, %(seed)d, %(n)d, 1000)
mem = st["mem"]
st["mem"] = None
gc.collect()
st["mem0"] = m0
st["mem1"] = gc.mem_alloc()
st["mem_max"] = max(mem)
print(json.dumps(st))
'''


def test_fuzz_micropython():
    t0 = time.perf_counter()
    # a small heap: an unbounded allocation would end in MemoryError (a non-zero exit)
    script = FUZZ_SRC + MPY_FUZZ % {"path": str(VECTORS), "seed": 7, "n": MPY_FRAMES}
    out = run_micropython(script,
                          heap="256K", timeout=90)
    dt = time.perf_counter() - t0
    st = json.loads(out)
    _check_fuzz_stats(st, MPY_FRAMES)
    # heap in use after gc.collect(): the same at the end as at the start (a few KB: the
    # stats and the last frame's objects), and never more in between
    assert st["mem1"] - st["mem0"] < 4096, st
    assert st["mem_max"] - st["mem0"] < 4096, st
    print(f"MicroPython: {MPY_FRAMES} frames in {dt:.2f} s, heap {st['mem0']} -> {st['mem1']}"
          f" (max {st['mem_max']})")


def test_exhaustive_micropython():
    script = FUZZ_SRC + "\nprint(json.dumps(exhaustive(load(%r))))\n" % str(VECTORS)
    st = json.loads(run_micropython(script, heap="256K", timeout=90))
    assert st["nbad"] == 0, st["bad"]
    assert st["same"] == 0
    assert st == _ns["exhaustive"](VS)          # the very same outcomes as CPython's


# ---------------------------------------------------------------- hypothesis (CPython)

KEY = P.Key(bytes(range(32)))
EPOCH = b"\x01\x02\x03\x04"
FAST = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _only_proto_errors(f, *a):
    try:
        return f(*a)
    except P.ProtoError as e:
        assert isinstance(e.reason, int)
        return None


def _receive(data: bytes, nloops: int):
    f = _only_proto_errors(P.parse, data)
    if f is None:
        return
    assert f.hdr <= f.end <= len(data)
    assert isinstance(f.check(None), bool)
    assert isinstance(f.check(KEY, EPOCH, 5), bool)
    _only_proto_errors(P.parse_payload, f.type, f.payload, nloops)


_vf = st.integers(0, 0x1F).map(lambda f: 0x20 | f)


@FAST
@given(st.binary(max_size=300), st.integers(0, 8))
def test_parse_arbitrary_bytes(data, nloops):
    _receive(data, nloops)


@FAST
@given(_vf, st.binary(min_size=4, max_size=260), st.integers(0, 8))
def test_parse_arbitrary_with_valid_vf(vf, rest, nloops):
    _receive(bytes([vf]) + rest, nloops)


@FAST
@given(st.integers(0, 255), st.binary(max_size=260), st.integers(0, 8))
def test_parse_payload_arbitrary(ftype, payload, nloops):
    for p in (payload, bytearray(payload), memoryview(payload)):
        d = _only_proto_errors(P.parse_payload, ftype, p, nloops)
        assert d is None or isinstance(d, dict)


@FAST
@given(st.sampled_from(ALL), st.binary(max_size=40), st.integers(0, 300), st.integers(0, 8))
def test_parse_payload_near_valid(v, junk, at, nloops):
    """Vector payloads with junk spliced in: deeper than random bytes get."""
    p = bytes.fromhex(v["payload"])
    at = min(at, len(p))
    for q in (p[:at] + junk, p[:at] + junk + p[at:], p[:at] + junk + p[at + len(junk):]):
        _only_proto_errors(P.parse_payload, v["type"], q, nloops)
        _only_proto_errors(P.parse_payload, v["type"], q, v["nloops"])


@FAST
@given(st.binary(max_size=300))
def test_cobs_decode_arbitrary(data):
    out = _only_proto_errors(P.cobs_decode, data)
    if out is not None:
        assert len(out) <= len(data)             # bounded by the input
        assert len(out) <= P.MAX_FRAME + 1


@FAST
@given(st.one_of(st.binary(max_size=P.MAX_FRAME),
                 st.lists(st.integers(1, 255), min_size=240, max_size=P.MAX_FRAME).map(bytes),
                 st.lists(st.sampled_from([0, 0, 1, 255]), max_size=P.MAX_FRAME).map(bytes)))
@example(bytes(range(1, 255)))                   # one run of 254 non-zero bytes
@example(bytes(range(1, 254)) + b"\0")
@example(bytes(P.MAX_FRAME))
@example(b"")
def test_cobs_round_trip(data):
    n = len(data)
    buf = bytearray(n + 1)                       # exactly n + 1: IndexError if it needs more
    assert P.cobs_encode(data, n, buf, 0) == n + 1
    assert 0 not in buf
    assert bytes(P.cobs_decode(buf)) == data
    wire = P.serial_encode(data)
    assert wire == b"\0" + bytes(buf) + b"\0"
    assert P.serial_encode(data, lead=False) == bytes(buf) + b"\0"


@FAST
@given(st.binary(min_size=P.MAX_FRAME + 1, max_size=800))
def test_cobs_encode_long(data):
    n = len(data)
    buf = bytearray(n + 1 + n // 254)            # the documented bound
    o = P.cobs_encode(data, n, buf, 0)
    assert 0 not in buf[:o]


@st.composite
def frames(draw):
    auth = draw(st.booleans())
    flags = draw(st.sampled_from([0, P.HOST, P.LONG, P.HOST | P.LONG]))
    seq = draw(st.integers(0, 2 ** 48 - 1 if flags & P.LONG else 0xFFFF))
    room = P.MAX_FRAME - (P.HDR_LONG if flags & P.LONG else P.HDR_SHORT) \
        - (P.TAG_LEN if auth else P.CRC_LEN)
    payload = draw(st.binary(max_size=room))
    key = P.Key(draw(st.binary(min_size=16, max_size=64))) if auth else None
    return (flags, draw(st.integers(0, 255)), draw(st.integers(0, 255)), seq, payload, key,
            draw(st.binary(min_size=4, max_size=4)), draw(st.integers(0, 0xFFFF)))


@FAST
@given(frames())
def test_valid_frames_round_trip(fr):
    flags, ftype, node, seq, payload, key, epoch, roc = fr
    data = P.build(flags, ftype, node, seq, payload, key, epoch, roc)
    assert len(data) <= P.MAX_FRAME
    f = P.parse(data)
    assert (f.flags, f.type, f.node, f.seq, bytes(f.payload)) == (
        flags | (P.AUTH if key else 0), ftype, node, seq, payload)
    assert f.check(key, epoch, roc)
    if key is not None:
        assert not f.check(None, epoch, roc)
        assert not f.check(key, epoch, roc ^ 0x8000)
    wire = P.serial_encode(data)
    assert len(wire) == len(data) + 3 and 0 not in wire[1:-1]
    assert bytes(P.cobs_decode(wire[1:-1])) == data


_text = st.text(max_size=20)
_short = st.text(max_size=8)                     # HELLO: 6 strings must fit one frame
_u8, _u16, _u32 = st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
_i32, _u48 = st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(0, 2 ** 48 - 1)
_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _stats_loop(vals):
    return dict(zip(("ticks", "overruns", "skipped", "jitter_p99_us", "jitter_max_us",
                     "compute_mean_us", "compute_max_us"), vals))


@st.composite
def payloads(draw):
    """(type, payload, nloops, the dict parse_payload must give)."""
    t = draw(st.sampled_from(sorted(P.TYPE_NAMES)))
    if t == P.HELLO_REQ:
        n = draw(st.binary(min_size=8, max_size=8))
        return t, P.hello_req(n), 0, {"nonce": n}
    if t == P.HELLO:
        e, n, u = (draw(st.binary(min_size=k, max_size=k)) for k in (4, 8, 6))
        roc, caps = draw(_u16), draw(_u16)
        loops = draw(st.lists(_short, max_size=3))
        name, board, fw = draw(_short), draw(_short), draw(_short)
        tmo = draw(_u32)
        return t, P.hello(e, n, roc, caps, u, loops, name, board, fw, tmo), 0, {
            "epoch": e, "nonce": n, "roc": roc, "caps": caps, "uid": u, "loops": loops,
            "name": name, "board": board, "firmware": fw, "comms_timeout_ms": tmo}
    if t == P.TELEMETRY:
        nl = draw(st.integers(1, 3))
        ns = draw(st.integers(1, 3))
        tm = draw(_u32)
        s = [[tuple(draw(_i32) for _ in range(4)) for _ in range(nl)] for _ in range(ns)]
        p = struct.pack("<I", tm) + b"".join(struct.pack("<4i", *lp) for x in s for lp in x)
        return t, p, nl, {"t_ms": tm, "samples": s}
    if t == P.STATS:
        tm = draw(_u32)
        loops = [_stats_loop(draw(st.lists(_u32, min_size=7, max_size=7)))
                 for _ in range(draw(st.integers(0, 4)))]
        return t, P.stats(tm, loops), 0, {"t_ms": tm, "loops": loops}
    if t == P.HEARTBEAT:
        up, state = draw(_u32), draw(_u8)
        cs = draw(st.lists(_u16, min_size=len(P.COUNTERS), max_size=len(P.COUNTERS)))
        return t, P.heartbeat(up, state, cs), 0, dict(
            {"uptime_ms": up, "state": state}, **dict(zip(P.COUNTERS, cs)))
    if t == P.COMMAND:
        c = draw(st.sampled_from(sorted(P.CMD_NAMES)))
        if c in (P.CMD_SET, P.CMD_SET_SAVE):
            sets = draw(st.lists(st.tuples(_u8, _u8, _f32).map(list), min_size=1,
                                 max_size=P.MAX_SETS))
            return t, P.cmd_set_many(sets, c == P.CMD_SET_SAVE), 0, {"cmd": c, "sets": sets}
        if c == P.CMD_SUBSCRIBE:
            a, b, d = draw(_u16), draw(_u8), draw(_u8)
            return t, P.cmd_subscribe(a, b, d), 0, {"cmd": c, "period_ms": a, "batch": b,
                                                    "stats_s": d}
        if c == P.CMD_REBOOT:
            a = draw(_u16)
            return t, P.cmd_reboot(a), 0, {"cmd": c, "delay_ms": a}
        if c == P.CMD_CONFIG:
            s = draw(_text)
            return t, P.cmd_config(s), 0, {"cmd": c, "patch": s}
        if c == P.CMD_SET_PARAM:
            v, s = draw(_f32), draw(_text)
            return t, P.cmd_set_param(s, v), 0, {"cmd": c, "value": v, "name": s}
        if c == P.CMD_TUNE:
            op, lp = draw(st.sampled_from([P.TUNE_START, P.TUNE_ABORT, P.TUNE_FORGET])), draw(_u8)
            if op != P.TUNE_START:
                return t, P.cmd_tune(op, lp), 0, {"cmd": c, "op": op, "loop": lp}
            a, h = draw(_f32.map(abs)), draw(_f32.map(abs))
            rule, tmo, ap = draw(st.integers(0, len(P.TUNE_RULES) - 1)), draw(_u16), draw(st.booleans())
            return t, P.cmd_tune_start(lp, a, h, rule, tmo, ap), 0, {
                "cmd": c, "op": op, "loop": lp, "amplitude": a, "hyst": h, "rule": rule,
                "timeout_s": tmo, "apply": int(ap)}
        return t, bytes((c,)), 0, {"cmd": c}
    if t == P.ACK:
        ref, res = draw(_u48), draw(st.binary(max_size=32))
        return t, P.ack(P.u48(ref), res), 0, {"ref": ref, "result": res}
    if t == P.NACK:
        ref, why, s = draw(_u48), draw(_u8), draw(_text)
        return t, P.nack(P.u48(ref), why, s), 0, {"ref": ref, "reason": why, "text": s}
    if t == P.EVENT:
        k, tm, lp, code, val, s = (draw(_u8), draw(_u32), draw(_u8), draw(_u8), draw(_i32),
                                   draw(_text))
        return t, P.event(k, tm, lp, code, val, s), 0, {
            "kind": k, "t_ms": tm, "loop": lp, "code": code, "value": val, "text": s}
    if t == P.TIME:
        ms = draw(_u48)
        return t, P.time_req(ms), 0, {"host_ms": ms}
    if t == P.READ:
        s, off = draw(_text), draw(st.integers(0, 0xFFFF))
        return t, P.read_req(s, off), 0, {"path": s, "offset": off}
    return t, b"", 0, {}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads(), st.booleans(), st.integers(0, 0xFFFF))
def test_valid_payloads_round_trip(pl, auth, seq):
    t, p, nloops, want = pl
    key = KEY if auth else None
    data = P.build(0, t, 1, seq, p, key, EPOCH, 0)
    f = P.parse(P.cobs_decode(P.serial_encode(data)[1:-1]))
    assert f.check(key, EPOCH, 0)
    got = P.parse_payload(f.type, f.payload, nloops)
    assert got == want                           # (float32 values: exactly)


_LIMITS = ((P.EVENT, 160, lambda s: P.event(P.EV_LOG, 1, 0, 0, 0, s), "text"),
           (P.NACK, 160, lambda s: P.nack(P.u48(1), P.R_STATE, s), "text"),
           (P.READ, 200, P.read_req, "path"),
           (P.HELLO, 255, lambda s: P.hello(EPOCH, bytes(8), 0, 0, b"", [], s, "", ""), "name"))


@FAST
@given(st.text(min_size=30, max_size=300), st.integers(0, 3))
@example("\u20ac" * 100, 0)                      # 3-byte characters across every limit
@example("\u00e9" * 150, 1)
def test_long_text_is_cut_at_a_character(s, pad):
    """Builders cut texts to their byte limit without splitting a character: what they
    send always decodes (to a prefix of the text)."""
    s = "x" * pad + s
    for t, limit, make, field in _LIMITS:
        got = P.parse_payload(t, make(s))[field]
        n = len(got.encode())
        assert s.startswith(got) and n <= limit
        assert got == s or n > limit - 4
