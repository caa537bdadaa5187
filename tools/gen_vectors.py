#!/usr/bin/env python3
"""Write tests/protocol/vectors.json: the protocol test vectors (docs/protocol.md).

Every vector is one frame built with cyphy.codec from fixed keys, epochs and fields,
so the output is deterministic: run `python tools/gen_vectors.py` and the file must not
change (`--check` exits 1 if it would). tests/protocol/test_vectors.py checks the vectors
on CPython and MicroPython, and cross-checks them against an independent CRC-32, HMAC and
COBS (they are not only "proto agrees with itself").

Fields of a vector:
  name, key (hex, or null for a CRC frame), epoch (hex), roc, nloops (telemetry: loops per
  sample; 0 otherwise), frame (hex), serial (hex: serial_encode(frame), the leading and the
  trailing 00 included), type, node, seq, flags (VF & 0x1F: AUTH, HOST, LONG), payload
  (hex), decoded (parse_payload(type, payload, nloops) as JSON: bytes as hex, tuples as
  lists; null if it raises), error (the ProtoError's reason code, or null).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    from cyphy import codec as P
except ImportError:  # not installed: use the source trees
    sys.path[:0] = [str(REPO / "host"), str(REPO / "firmware" / "lib")]
    from cyphy import codec as P

OUT = REPO / "tests" / "protocol" / "vectors.json"

# Fixed test keys (never used anywhere else): the shortest, a usual and the longest length.
KEY16 = bytes(range(0xA0, 0xB0))
KEY32 = bytes(range(0x10, 0x30))
KEY64 = bytes((i * 37 + 11) & 0xFF for i in range(64))
EPOCH_A = bytes.fromhex("c0ffee01")
EPOCH_B = bytes.fromhex("5eed0042")
NONCE = bytes.fromhex("0102030405060708")
ZERO_EPOCH = b"\0\0\0\0"

# The canonical telemetry sample (docs/protocol.md): node 1, one loop.
CANON_NODE, CANON_SEQ, CANON_T_MS = 1, 42, 123456
CANON_VALUES = (60000, 59500, -12, 0x81)  # setpoint, measurement, output (milli-units), status


def jsonable(x):
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).hex()
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    return x


def telemetry(t_ms, samples):
    """The TELEMETRY payload: t_ms(u32) then per sample per loop 4 x i32 (put_u32/put_i32,
    as the node's control pass writes it)."""
    nloops = len(samples[0])
    b = bytearray(4 + 16 * nloops * len(samples))
    P.put_u32(b, 0, t_ms)
    o = 4
    for s in samples:
        assert len(s) == nloops
        for loop in s:
            for v in loop:
                P.put_i32(b, o, v)
                o += 4
    return bytes(b)


def vector(name, flags, ftype, node, seq, payload, key=None, epoch=ZERO_EPOCH, roc=0,
           nloops=0):
    k = P.Key(key) if key is not None else None
    frame = P.build(flags, ftype, node, seq, payload, k, epoch, roc)
    f = P.parse(frame)
    assert f.check(k, epoch, roc), name
    assert bytes(f.payload) == bytes(payload), name
    try:
        decoded, error = jsonable(P.parse_payload(f.type, f.payload, nloops)), None
    except P.ProtoError as e:
        decoded, error = None, e.reason
    return {
        "name": name,
        "key": key.hex() if key is not None else None,
        "epoch": bytes(epoch).hex(),
        "roc": roc,
        "nloops": nloops,
        "frame": frame.hex(),
        "serial": P.serial_encode(frame).hex(),
        "type": f.type,
        "node": f.node,
        "seq": f.seq,
        "flags": f.flags,
        "payload": bytes(payload).hex(),
        "decoded": decoded,
        "error": error,
    }


def _no_zero_frame(make, want_last_zero=False, tries=100000):
    """The first make(i) frame with no zero byte (or: zero only as its last byte)."""
    for i in range(tries):
        v = make(i)
        fr = bytes.fromhex(v["frame"])
        if want_last_zero:
            if fr[-1] == 0 and 0 not in fr[:-1]:
                return v
        elif 0 not in fr:
            return v
    raise RuntimeError("no such frame found")


def _filler(i, n):
    """n printable non-zero ASCII bytes, varied by i."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    out = bytearray()
    x = i * 2654435761 + 12345
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(alphabet[(x >> 16) % len(alphabet)])
    return bytes(out)


def vectors():
    H, L, A = P.HOST, P.LONG, P.AUTH
    v = []
    add = v.append
    canon = telemetry(CANON_T_MS, [[CANON_VALUES]])
    host_seq = 0x0123456789AB  # hosts' SEQ: a 48-bit microsecond counter

    # HELLO_REQ / HELLO
    add(vector("hello_req_discovery", H, P.HELLO_REQ, P.NODE_ANY, 1, P.hello_req(NONCE)))
    add(vector("hello_req_long_auth", H | L, P.HELLO_REQ, 3, host_seq, P.hello_req(NONCE),
               KEY32, EPOCH_A))
    add(vector("hello_node_crc", 0, P.HELLO, 1, 0,
               P.hello(ZERO_EPOCH, NONCE, 0, P.CAP_SERIAL | P.CAP_AUTOTUNE | P.CAP_CONFIG,
                       bytes.fromhex("24a160112233"), ["temp"], "bench", "sim", "0.1.0")))
    add(vector("hello_node_auth_utf8", 0, P.HELLO, 7, 1,
               P.hello(EPOCH_A, NONCE, 3, P.CAP_AUTH | P.CAP_SERIAL | P.CAP_UDP | P.CAP_CONFIG,
                       bytes.fromhex("a0b1c2d3e4f5"), ["oven", "level", ""], "öfen-1 ✓",
                       "esp32", "0.1.0"), KEY32, EPOCH_A, 3))
    # TELEMETRY
    add(vector("telemetry_canonical_crc", 0, P.TELEMETRY, CANON_NODE, CANON_SEQ, canon,
               nloops=1))
    add(vector("telemetry_canonical_auth", 0, P.TELEMETRY, CANON_NODE, CANON_SEQ, canon,
               KEY32, EPOCH_A, nloops=1))
    batch = [[(60000 + 10 * k, 59500 + k, -12 - k, 0x81), (-2500, -2400 - k, 1000 * k, 0x105)]
             for k in range(3)]
    add(vector("telemetry_batch_2loops_3samples_auth", 0, P.TELEMETRY, 2, 1000,
               telemetry(CANON_T_MS + 300, batch), KEY32, EPOCH_A, nloops=2))
    add(vector("telemetry_roc_auth_key64", 0, P.TELEMETRY, 1, 0xFFFF,
               telemetry(0xFFFFFFFF, [[(-2 ** 31, 2 ** 31 - 1, -1, 0x1FF)]]),
               KEY64, EPOCH_B, 0x0102, nloops=1))
    # STATS / HEARTBEAT
    add(vector("stats_2loops_crc", 0, P.STATS, 1, 7, P.stats(987654, [
        {"ticks": 1000, "overruns": 1, "skipped": 0, "jitter_p99_us": 180,
         "jitter_max_us": 950, "compute_mean_us": 310, "compute_max_us": 1200},
        {"ticks": 0xFFFFFFFF, "overruns": 0, "skipped": 3, "jitter_p99_us": 0,
         "jitter_max_us": 1, "compute_mean_us": 2, "compute_max_us": 0x80000000}])))
    add(vector("stats_1loop_auth", 0, P.STATS, 2, 8, P.stats(12345, [
        {"ticks": 42, "overruns": 0, "skipped": 0, "jitter_p99_us": 12,
         "jitter_max_us": 40, "compute_mean_us": 95, "compute_max_us": 300}]), KEY32, EPOCH_A))
    add(vector("heartbeat_node_auth_key16", 0, P.HEARTBEAT, 1, 513,
               P.heartbeat(3600000, 2, [0xFFFF if i == 4 else i + 1
                                        for i in range(len(P.COUNTERS))]), KEY16, EPOCH_B, 1))
    add(vector("heartbeat_host_empty_long_crc", H | L, P.HEARTBEAT, 1, 0xFFFFFFFFFFFF, b""))
    # COMMAND
    add(vector("command_set_setpoint_long_auth", H | L, P.COMMAND, 1, host_seq,
               P.cmd_set(0, P.KEYS.index("setpoint"), 61.5), KEY32, EPOCH_A))
    add(vector("command_set_kp_crc", H, P.COMMAND, 2, 9, P.cmd_set(1, P.KEYS.index("kp"), -0.375)))
    add(vector("command_set_three_auth", H, P.COMMAND, 1, 12,
               P.cmd_set_many([(0, 0, 120.0), (0, 2, -5.0), (1, 1, 1.0)]), KEY32, EPOCH_A))
    add(vector("command_set_partial_crc", H, P.COMMAND, 2, 13,
               P.cmd_set(0, 0, 1.0) + b"\x00"))
    add(vector("command_set_seventeen_crc", H, P.COMMAND, 2, 14,
               P.cmd_set_many([(0, 0, 1.0)] * 16) + P.cmd_set(0, 0, 1.0)[1:]))
    add(vector("command_set_save_auth", H, P.COMMAND, 1, 17,
               P.cmd_set_many([(0, 0, 55.0), (0, 2, 3.25)], save=True), KEY32, EPOCH_A))
    add(vector("command_tune_start_auth", H, P.COMMAND, 1, 15,
               P.cmd_tune_start(0, 12.5, 0.25, P.TUNE_RULES.index("auto"), 600, True), KEY32, EPOCH_A))
    add(vector("command_tune_abort_crc", H, P.COMMAND, 1, 16, P.cmd_tune(P.TUNE_ABORT, 1)))
    add(vector("command_set_param_crc", H, P.COMMAND, 1, 18, P.cmd_set_param("mix.ratio", 1.5)))
    add(vector("command_tune_bad_rule_crc", H, P.COMMAND, 1, 17,
               P.cmd_tune_start(0, 1.0, 0.0, len(P.TUNE_RULES), 0, False)))
    add(vector("command_subscribe_long_auth", H | L, P.COMMAND, 1, host_seq + 1,
               P.cmd_subscribe(100, 4, 2), KEY32, EPOCH_A))
    add(vector("command_reboot_crc", H, P.COMMAND, 1, 10, P.cmd_reboot(250)))
    add(vector("command_clear_auth", H, P.COMMAND, 1, 11, bytes((P.CMD_CLEAR,)), KEY32,
               EPOCH_A))
    add(vector("command_config_long_auth", H | L, P.COMMAND, 1, host_seq + 2,
               P.cmd_config('{"name": "oven", "loops": [{"kp": 1.5}]}'), KEY32, EPOCH_A))
    # ACK / NACK
    add(vector("ack_auth", 0, P.ACK, 1, 43, P.ack(P.u48(host_seq)), KEY32, EPOCH_A))
    add(vector("ack_time_result_auth", 0, P.ACK, 1, 44,
               P.ack(P.u48(host_seq + 3), struct.pack("<I", 123456789)), KEY32, EPOCH_A))
    add(vector("nack_stale_auth", 0, P.NACK, 1, 45,
               P.nack(P.u48(host_seq + 4), P.R_STALE, P.REASONS[P.R_STALE]), KEY32, EPOCH_A))
    add(vector("nack_no_key_crc", 0, P.NACK, 1, 46, P.nack(P.u48(5), P.R_NO_KEY)))
    # EVENT
    add(vector("event_fault_auth", 0, P.EVENT, 1, 47,
               P.event(P.EV_FAULT, 123999, 0, 1, -5, "sensor: open circuit"),
               KEY32, EPOCH_A))
    add(vector("event_log_node_utf8_crc", 0, P.EVENT, 1, 48,
               P.event(P.EV_LOG, 5, 255, 0, 2 ** 31 - 1, "booted ✓ µs")))
    # TIME / READ / BYE
    add(vector("time_req_long_auth", H | L, P.TIME, 1, host_seq + 3,
               P.time_req(1700000000123), KEY32, EPOCH_A))
    add(vector("read_req_crc", H, P.READ, 1, 12, P.read_req("/config.json")))
    add(vector("bye_host_auth", H, P.BYE, 1, 13, b"", KEY32, EPOCH_A))
    add(vector("bye_node_crc_smallest", 0, P.BYE, 1, 0, b""))

    # COBS edge cases. A 254-byte frame (MAX_FRAME) with no zero byte is one run of 254
    # non-zero bytes: COBS must still add exactly one byte.
    add(vector("cobs_zeros_max_ack_crc", 0, P.ACK, 0, 0, bytes(P.MAX_FRAME - 5 - 4)))
    ref = P.u48(0x0102030405FF)
    add(_no_zero_frame(lambda i: vector(
        "cobs_no_zero_max_ack_crc", 0, P.ACK, 1, 0x0101,
        P.ack(ref, _filler(i, P.MAX_FRAME - 5 - 6 - 4)))))
    add(_no_zero_frame(lambda i: vector(
        "cobs_no_zero_max_config_long_auth", H | L, P.COMMAND, 1, host_seq + 4,
        P.cmd_config('{"n":"%s"}' % _filler(i, P.MAX_FRAME - 9 - 1 - 8 - 8).decode()),
        KEY32, EPOCH_A)))
    add(_no_zero_frame(lambda i: vector(
        "cobs_253_non_zero_then_zero_crc", 0, P.ACK, 1, 0x0101,
        P.ack(ref, _filler(i, P.MAX_FRAME - 5 - 6 - 4))), want_last_zero=True))
    add(vector("cobs_zero_first_payload_byte_crc", 0, P.EVENT, 1, 0x0100,
               P.event(0, 0, 0, 0, 0, "")))

    # Well-formed frames (a valid CRC or TAG) whose payload the decoder must refuse: the
    # ProtoError's reason code is part of the vector.
    add(vector("error_unknown_type_crc", 0, 13, 1, 14, b"\x01\x02"))
    add(vector("error_unknown_command_auth", H, P.COMMAND, 1, 15, b"\x09", KEY32, EPOCH_A))
    add(vector("error_set_nan_crc", H, P.COMMAND, 1, 16, bytes.fromhex("01000000 00c07f")))
    add(vector("error_set_inf_crc", H, P.COMMAND, 1, 17, bytes.fromhex("01000000 00807f")))
    add(vector("error_telemetry_wrong_nloops_crc", 0, P.TELEMETRY, 1, 18, canon, nloops=2))
    bad = P.hello(EPOCH_A, NONCE, 0, 1, b"\1" * 6, ["a"], "x", "y", "z")   # "z": 5th from the end
    add(vector("error_hello_bad_utf8_auth", 0, P.HELLO, 1, 19, bad[:-5] + b"\xff" + bad[-4:],
               KEY32, EPOCH_A))
    add(vector("error_ack_short_crc", 0, P.ACK, 1, 20, b"\1\2\3\4\5"))
    return v


def render(vs):
    # one vector per line: readable diffs, and a stable byte-for-byte output
    return "[\n" + ",\n".join(json.dumps(x)
                              for x in vs) + "\n]\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is not current")
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    a = ap.parse_args(argv)
    vs = vectors()
    names = [x["name"] for x in vs]
    assert len(set(names)) == len(names), "duplicate vector names"
    text = render(vs)
    if a.check:
        cur = a.output.read_text(encoding="utf-8") if a.output.exists() else ""
        if cur != text:
            print(f"{a.output} is not current: run tools/gen_vectors.py", file=sys.stderr)
            return 1
        return 0
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(text, encoding="utf-8")
    print(f"wrote {len(vs)} vectors to {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
