# The host's codec of the cyphy protocol (docs/protocol.md): everything of the node's codec,
# cyphy_node.proto, plus what only a host does. Host code imports this module, never proto
# directly:  from cyphy import codec as P.
#
# proto (firmware/lib/cyphy_node/proto.py) is the core both sides run: it defines every
# constant and every layout once (framing, header, seal/check, the frames a node builds, the
# requests it parses, what peer.py needs). This module adds, on top of it: the requests a
# host builds (cmd_set, cmd_reboot, cmd_config, time_req, read_req), the decoders of node
# frames (parse_stats, parse_heartbeat, parse_ack, parse_nack, parse_event), a
# parse_payload for every type, and names for display (REASONS, CMD_NAMES). It lives in
# host/, outside the firmware tree: never deployed, so it costs a node no RAM.
#
# Plain Python that MicroPython runs too: tests/protocol check the vectors and fuzz the
# decoders with it on both runtimes.
import struct

from cyphy_node.proto import *  # noqa: F401,F403 - the whole node codec, re-exported
from cyphy_node import proto as _proto
from cyphy_node.proto import (_STAT_FIELDS, ACK, CMD_CLEAR, CMD_CONFIG, CMD_REBOOT,
                              CMD_SET, CMD_SET_SAVE, CMD_SET_PARAM, CMD_SUBSCRIBE, CMD_TUNE, TUNE_START, COUNTERS, EVENT, HEARTBEAT, HELLO, NACK,
                              R_INTERNAL, R_MALFORMED, R_NO_KEY, R_OUT_OF_RANGE, R_STALE,
                              R_STATE, R_UNKNOWN_COMMAND, R_UNKNOWN_TARGET, STATS, TELEMETRY,
                              ProtoError, _Reader, _cut, _utf8, get_i32, get_u32, get_u48,
                              put_u16, u48)

# ---------------------------------------------------------------- names for display

CMD_NAMES = {CMD_SET: "set", CMD_SET_SAVE: "set --save", CMD_SET_PARAM: "set a block's parameter", CMD_CLEAR: "clear", CMD_REBOOT: "reboot",
             CMD_SUBSCRIBE: "subscribe", CMD_CONFIG: "config", CMD_TUNE: "tune"}
REASONS = {R_MALFORMED: "malformed", R_UNKNOWN_COMMAND: "unknown command",
           R_UNKNOWN_TARGET: "unknown target", R_OUT_OF_RANGE: "out of range",
           R_STATE: "not possible now", R_STALE: "stale sequence number",
           R_NO_KEY: "node has no key", R_INTERNAL: "internal error"}


# ---------------------------------------------------------------- requests a host builds

def cmd_set(loop, key, value):
    """value: float32, in engineering units (gains as they are; mode 1 auto / 0 manual)."""
    return cmd_set_many([(loop, key, value)])


def cmd_set_many(sets, save=False):
    """[(loop, key, value), ...]: 1 to MAX_SETS assignments the node applies all or none;
    save=True: and persists them (setpoints and gains, over the config's at every boot)."""
    if not 1 <= len(sets) <= MAX_SETS:
        raise ValueError(f"a SET holds 1 to {MAX_SETS} assignments, not {len(sets)}")
    return bytes((CMD_SET_SAVE if save else CMD_SET,)) + b"".join(struct.pack("<BBf", lp, k, v) for lp, k, v in sets)


def cmd_set_param(name, value):
    """A block's parameter by name ("ratio1.ratio"), value a float32 (protocol 1.2)."""
    return bytes((CMD_SET_PARAM,)) + struct.pack("<f", value) + name.encode()


def cmd_tune_start(loop, amplitude=0.0, hyst=0.0, rule=0, timeout_s=0, apply=True):
    """Start a relay autotune of loop (owned by this session). amplitude: output units (0:
    the node's default), hyst: measurement units (0: default), rule: index in TUNE_RULES
    (0 auto), timeout_s: 0 the node's default (scaled to the loop)."""
    return struct.pack("<BBBffBHB", CMD_TUNE, TUNE_START, loop, amplitude, hyst, rule,
                       timeout_s, 1 if apply else 0)


def cmd_tune(op, loop):
    """TUNE_ABORT or TUNE_FORGET of loop."""
    return bytes((CMD_TUNE, op, loop))


def cmd_reboot(delay_ms=100):
    b = bytearray(3)
    b[0] = CMD_REBOOT
    put_u16(b, 1, delay_ms)
    return bytes(b)


def cmd_config(patch_json):
    return bytes((CMD_CONFIG,)) + patch_json.encode()


def time_req(host_ms):
    """The host's Unix time in ms (u48); the ACK result is the node's ticks_ms (u32)."""
    return u48(host_ms)


def read_req(path, offset=0):
    """offset(u16) + path. The ACK result is total(u16) + up to READ_CHUNK bytes of the
    value's JSON text from offset: the host asks again from the next offset until it has
    the total (the node keeps the text of its last READ, so the pieces agree)."""
    b = bytearray(2)
    put_u16(b, 0, offset)
    return bytes(b) + _cut(path.encode(), 200)


# ---------------------------------------------------------------- node frames a host parses

class _HostReader(_Reader):
    def u32(self):
        return get_u32(self.take(4), 0)

    def i32(self):
        return get_i32(self.take(4), 0)


def parse_stats(p):
    if len(p) < 4 or (len(p) - 4) % 28:
        raise ProtoError("stats length %d is not 4 + 28 per loop" % len(p))
    out = []
    for o in range(4, len(p), 28):
        out.append({f: get_u32(p, o + 4 * i) for i, f in enumerate(_STAT_FIELDS)})
    return {"t_ms": get_u32(p, 0), "loops": out}


def parse_heartbeat(p):
    if len(p) == 0:
        return {}  # a host's heartbeat carries nothing
    r = _HostReader(p)
    d = {"uptime_ms": r.u32(), "state": r.u8()}
    for name in COUNTERS:
        d[name] = r.u16() if r.o + 2 <= len(p) else 0
    return d


def parse_ack(p):
    r = _Reader(p)
    return {"ref": get_u48(r.take(6), 0), "result": bytes(r.rest())}


def parse_nack(p):
    r = _Reader(p)
    d = {"ref": get_u48(r.take(6), 0), "reason": r.u8()}
    d["text"] = _utf8(r.rest(), "nack text")
    return d


def parse_event(p):
    r = _HostReader(p)
    d = {"kind": r.u8(), "t_ms": r.u32(), "loop": r.u8(), "code": r.u8(), "value": r.i32()}
    d["text"] = _utf8(r.rest(), "event text")
    return d


_NODE_FRAMES = {HELLO: _proto.parse_hello, STATS: parse_stats, HEARTBEAT: parse_heartbeat,
                ACK: parse_ack, NACK: parse_nack, EVENT: parse_event}


def parse_payload(ftype, p, nloops=0, nsig=0):
    """The payload of a frame of type ftype as a dict; ProtoError if malformed, and
    R_UNKNOWN_COMMAND-coded ProtoError for a type this version does not know. Node frames
    here; requests (HELLO_REQ, COMMAND, TIME, READ, BYE) with proto.parse_payload, the
    node's own decoder of them."""
    if ftype == TELEMETRY:
        return _proto.parse_telemetry(p, nloops, nsig)
    f = _NODE_FRAMES.get(ftype)
    if f is None:
        return _proto.parse_payload(ftype, p, nloops)
    return f(p)
