# The cyphy wire protocol, version 1: the node's codec, and the core of the host's.
# docs/protocol.md is the byte-by-byte spec; the names here follow it.
#
# This file is what a node needs, and it defines every constant and layout once: framing
# (COBS), the header, seal/check, the frames a node builds, the requests it parses, and what
# peer.py (a node following another node, as a host does) needs. The host's codec is
# cyphy.codec (host/cyphy/codec.py): all of this module plus what only a host does
# (building requests, parsing node frames, names for display). It is never deployed, so a
# node's RAM holds none of it: code only a host runs belongs there, not here (every
# function and every name here costs a node heap).
#
# A frame:   VF TYPE NODE SEQ(2, or 6 when LONG) PAYLOAD [TAG(8) | CRC(4)]
#   VF = version << 5 | flags. AUTH frames end in an 8-byte truncated HMAC-SHA256, others
#   in a CRC-32. Serial links carry COBS(frame) + 00; UDP carries one frame per datagram.
#
# What must not allocate (it runs in the node's control pass): put_header, put_i32,
# put_u32, cobs_encode. Everything else may allocate, and every decoder raises only
# ProtoError for bad input, whatever the bytes.
import binascii
import hashlib
import struct

try:
    from micropython import const
except ImportError:
    const = int  # CPython: const(x) is x

VERSION = const(1)
# VF flags
AUTH = const(0x10)        # an 8-byte TAG ends the frame (else a 4-byte CRC-32)
HOST = const(0x08)        # sent by a host (else by a node)
LONG = const(0x04)        # SEQ is 6 bytes (hosts' microsecond counters), else 2
RESERVED = const(0x03)    # must be 0: a receiver drops frames that set them
# frame types
HELLO_REQ = const(1)
HELLO = const(2)
TELEMETRY = const(3)
STATS = const(4)
HEARTBEAT = const(5)
COMMAND = const(6)
ACK = const(7)
NACK = const(8)
EVENT = const(9)
TIME = const(10)
READ = const(11)
BYE = const(12)
TYPE_NAMES = {HELLO_REQ: "hello_req", HELLO: "hello", TELEMETRY: "telemetry", STATS: "stats",
              HEARTBEAT: "heartbeat", COMMAND: "command", ACK: "ack", NACK: "nack",
              EVENT: "event", TIME: "time", READ: "read", BYE: "bye"}
# NODE field
NODE_ANY = const(255)     # every node (discovery)
# sizes
TAG_LEN = const(8)
CRC_LEN = const(4)
MAX_FRAME = const(254)    # so that COBS adds exactly one byte
HDR_SHORT = const(5)
HDR_LONG = const(9)
NONCE_LEN = const(8)
EPOCH_LEN = const(4)
REF_LEN = const(6)        # ACK/NACK name the request by its 6-byte SEQ
UDP_PORT = const(5477)
VALUES_PER_LOOP = const(4)  # telemetry: setpoint, measurement, output, status per loop

# COMMAND codes (first payload byte)
CMD_SET = const(1)        # (loop(1) key(1) value(float32)) x 1..MAX_SETS: all applied or none
CMD_CLEAR = const(2)      # clear latched faults
CMD_REBOOT = const(3)     # delay_ms(u16)
CMD_SUBSCRIBE = const(4)  # period_ms(u16) batch(u8) stats_s(u8); period 0 stops telemetry
CMD_CONFIG = const(5)     # a JSON object merged into /config.json (applied at the next boot)
CMD_TUNE = const(6)       # op(1) loop(1); start: amplitude(f32) hyst(f32) rule(1) timeout_s(u16) apply(1)
CMD_SET_SAVE = const(7)   # as SET, and the values persist (setpoints and gains; params.py)
CMD_SET_PARAM = const(8)  # value(float32) then the name "block.param" (UTF-8): a block's parameter
TUNE_START = const(0)     # a relay autotune of the loop, owned by this session
TUNE_ABORT = const(1)     # stop it: the loop returns to its previous gains and output
TUNE_FORGET = const(2)    # forget the persisted tuning: the config's gains, now and at boot
TUNE_RULES = ("auto", "ziegler_nichols", "ziegler_nichols_pi", "tyreus_luyben",
              "tyreus_luyben_pi", "some_overshoot", "no_overshoot")  # rule(1) indexes this
MAX_SETS = const(16)      # assignments in one SET
# CMD_SET keys, by index; mode: value 1 auto, 0 manual; output: manual output (switches the
# loop to manual)
KEYS = ("setpoint", "mode", "kp", "ki", "kd", "output")

# NACK reasons
R_MALFORMED = const(1)
R_UNKNOWN_COMMAND = const(2)
R_UNKNOWN_TARGET = const(3)
R_OUT_OF_RANGE = const(4)
R_STATE = const(5)        # not possible in the node's present state
R_STALE = const(6)        # SEQ not above the last accepted one: resend with a fresh SEQ
R_NO_KEY = const(7)       # an authenticated frame to a node that has no key
R_INTERNAL = const(8)

# EVENT kinds and telemetry status bits
EV_FAULT = const(1)
EV_LOG = const(2)
ST_ALARM_LOW = const(1)
ST_ALARM_HIGH = const(2)
ST_FAULT_SHIFT = const(2)  # loop fault bits (sensor 1, exception 2, comms 4, stop 8, peer 16) << 2
ST_AUTO = const(0x80)
ST_TUNING = const(0x100)


def loop_status(lp):
    """A control loop's telemetry status word (ST_* bits); allocation-free."""
    s = lp.alarms | (lp.fault << ST_FAULT_SHIFT)
    if lp.auto:
        s |= ST_AUTO
    if lp.tuner is not None:
        s |= ST_TUNING
    return s


# HELLO capability bits
CAP_AUTH = const(1)       # the node has a key and authenticates every frame
CAP_SERIAL = const(2)
CAP_UDP = const(4)
CAP_AUTOTUNE = const(8)
CAP_CONFIG = const(16)


class ProtoError(ValueError):
    """Bad input; .reason is one of the R_* codes."""

    def __init__(self, msg, reason=R_MALFORMED):
        super().__init__(msg)  # (MicroPython's ValueError has no __init__ attribute)
        self.reason = reason


# ---------------------------------------------------------------- allocation-free writers

def put_u16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def put_i32(b, o, v):
    """A signed 32-bit value, little-endian (v a small int: no allocation)."""
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


put_u32 = put_i32  # same bytes; values >= 2**30 allocate on ESP32 (only ticks_ms, < 2**30)


def put_header(b, flags, ftype, node, seq):
    """Short header (2-byte SEQ) at b[0:5]; returns 5."""
    b[0] = (VERSION << 5) | flags
    b[1] = ftype
    b[2] = node
    b[3] = seq & 0xFF
    b[4] = (seq >> 8) & 0xFF
    return HDR_SHORT


def cobs_encode(src, n, dst, o):
    """COBS-encode src[0:n] into dst at o (no trailing 00); returns the end offset.
    dst needs n + 1 + n // 254 bytes from o; a frame (n <= MAX_FRAME) takes exactly n + 1
    (a final run of 254 non-zero bytes ends the chunk: no empty block after it).
    Allocation-free."""
    code_at = o
    o += 1
    code = 1
    i = 0
    while i < n:
        c = src[i]
        if c == 0:
            dst[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            dst[o] = c
            o += 1
            code += 1
            if code == 0xFF and i + 1 < n:
                dst[code_at] = code
                code_at = o
                o += 1
                code = 1
        i += 1
    dst[code_at] = code
    return o


# ---------------------------------------------------------------- readers (may allocate)

def get_u16(b, o):
    return b[o] | (b[o + 1] << 8)


def get_u32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def get_i32(b, o):
    v = get_u32(b, o)
    return v - 0x100000000 if v & 0x80000000 else v


def get_u48(b, o):
    return get_u32(b, o) | (get_u16(b, o + 4) << 32)


def u48(v):
    return bytes([(v >> s) & 0xFF for s in (0, 8, 16, 24, 32, 40)])


def cobs_decode(data):
    """The frame inside one COBS chunk (without its 00 delimiter)."""
    n = len(data)
    if n > MAX_FRAME + 2:
        raise ProtoError("frame too long")
    out = bytearray()
    i = 0
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtoError("zero byte inside a COBS chunk")
        end = i + code
        if end > n:
            raise ProtoError("COBS block runs past the end")
        out.extend(data[i + 1:end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return out


def crc32(data):
    return binascii.crc32(data) & 0xFFFFFFFF


# ---------------------------------------------------------------- keys and the tag

class Key:
    """A node's key (16 to 64 bytes). HMAC-SHA256 (RFC 2104) written out, because
    MicroPython's hashlib has sha256 but no hmac; the pads are computed once."""

    def __init__(self, raw):
        if not isinstance(raw, (bytes, bytearray)) or not 16 <= len(raw) <= 64:
            raise ValueError("a key is 16 to 64 bytes")
        i = bytearray(b"\x36" * 64)
        o = bytearray(b"\x5c" * 64)
        for n in range(len(raw)):
            i[n] ^= raw[n]
            o[n] ^= raw[n]
        self._ipad = bytes(i)
        self._opad = bytes(o)

    def __repr__(self):
        return "<Key (secret)>"  # a key never appears in any output

    def tag(self, epoch, roc, body):
        """TAG = HMAC-SHA256(key, EPOCH(4) || ROC(2, LE) || body)[:8]."""
        h = hashlib.sha256(self._ipad)
        h.update(epoch)
        h.update(bytes((roc & 0xFF, (roc >> 8) & 0xFF)))
        h.update(body)
        o = hashlib.sha256(self._opad)
        o.update(h.digest())
        return o.digest()[:TAG_LEN]


def key_from_hex(text):
    try:
        raw = binascii.unhexlify(text.strip())
    except (ValueError, TypeError):
        raise ValueError("a key is written as hex digits (32 to 128 of them)")
    return Key(raw)


def same(a, b):
    """Constant-time comparison of two byte strings of the same length."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def seal(buf, n, key=None, epoch=b"\0\0\0\0", roc=0):
    """End the frame in buf[0:n] with its TAG (key given: sets AUTH) or CRC; returns the
    new length. buf must have 8 spare bytes."""
    if key is not None:
        buf[0] |= AUTH
        t = key.tag(epoch, roc, memoryview(buf)[:n])
        buf[n:n + TAG_LEN] = t
        return n + TAG_LEN
    buf[0] &= ~AUTH & 0xFF
    c = crc32(memoryview(buf)[:n])
    put_u16(buf, n, c & 0xFFFF)
    put_u16(buf, n + 2, c >> 16)
    return n + CRC_LEN


# ---------------------------------------------------------------- frames

class Frame:
    """A parsed frame. The integrity check is done by check() (a TAG needs the receiver's
    key and the sender's EPOCH/ROC), so parse() only checks structure."""

    def __init__(self, data, flags, ftype, node, seq, hdr, end):
        self.data = data          # the whole frame
        self.flags = flags
        self.type = ftype
        self.node = node
        self.seq = seq
        self.hdr = hdr            # header length (5 or 9)
        self.end = end            # payload end (start of TAG or CRC)

    @property
    def auth(self):
        return bool(self.flags & AUTH)

    @property
    def from_host(self):
        return bool(self.flags & HOST)

    @property
    def payload(self):
        return self.data[self.hdr:self.end]

    def check(self, key=None, epoch=b"\0\0\0\0", roc=0):
        """True if the frame's TAG (with key) or CRC is right."""
        d = self.data
        if self.flags & AUTH:
            if key is None:
                return False
            return same(key.tag(epoch, roc, d[:self.end]), d[self.end:])
        c = crc32(d[:self.end])
        return get_u32(d, self.end) == c

    def __repr__(self):
        return "<Frame %s node=%d seq=%d %s %d B>" % (
            TYPE_NAMES.get(self.type, "type%d" % self.type), self.node, self.seq,
            "auth" if self.auth else "crc", len(self.data))


def parse(data):
    """Split a frame (bytes) into its fields; ProtoError if it cannot be one."""
    n = len(data)
    if n < HDR_SHORT + CRC_LEN:
        raise ProtoError("frame too short (%d bytes)" % n)
    if n > MAX_FRAME:
        raise ProtoError("frame too long (%d bytes)" % n)
    vf = data[0]
    if vf >> 5 != VERSION:
        raise ProtoError("protocol version %d (this end speaks %d)" % (vf >> 5, VERSION))
    flags = vf & 0x1F
    if flags & RESERVED:
        raise ProtoError("reserved flag bits set")
    hdr = HDR_LONG if flags & LONG else HDR_SHORT
    end = n - (TAG_LEN if flags & AUTH else CRC_LEN)
    if end < hdr:
        raise ProtoError("frame too short (%d bytes)" % n)
    seq = get_u48(data, 3) if flags & LONG else get_u16(data, 3)
    return Frame(bytes(data), flags, data[1], data[2], seq, hdr, end)


def build(flags, ftype, node, seq, payload=b"", key=None, epoch=b"\0\0\0\0", roc=0):
    """A whole frame as bytes (host side and the node's non-telemetry frames)."""
    buf = bytearray(MAX_FRAME + TAG_LEN)
    if flags & LONG:
        buf[0] = (VERSION << 5) | flags
        buf[1] = ftype
        buf[2] = node
        buf[3:9] = u48(seq)
        n = HDR_LONG
    else:
        n = put_header(buf, flags, ftype, node, seq)
    m = len(payload)
    if n + m + (TAG_LEN if key is not None else CRC_LEN) > MAX_FRAME:
        raise ProtoError("payload too long (%d bytes)" % m)
    buf[n:n + m] = payload
    n = seal(buf, n + m, key, epoch, roc)
    return bytes(buf[:n])


def serial_encode(frame, lead=True):
    """A frame as serial bytes: [00] COBS(frame) 00. (The node encodes into its own
    buffers with cobs_encode; host tests use this one from proto.)"""
    out = bytearray(len(frame) + 4)
    o = 0
    if lead:
        o = 1
    o = cobs_encode(frame, len(frame), out, o)
    out[o] = 0
    return bytes(out[:o + 1])


# ---------------------------------------------------------------- payloads
# Strings are a length byte + UTF-8. Decoders ignore bytes after the fields they know
# (newer versions may append fields), except TELEMETRY, whose length is its sample count.

def _cut(b, n):
    """UTF-8 bytes b cut to at most n bytes, at a character boundary (so they decode)."""
    if len(b) <= n:
        return b
    while n > 0 and b[n] & 0xC0 == 0x80:
        n -= 1
    return b[:n]


def _utf8(b, what):
    try:
        return bytes(b).decode()
    except UnicodeError:
        raise ProtoError(what + " is not UTF-8")


def _str(s):
    b = _cut(s.encode(), 255)
    return bytes((len(b),)) + b


class _Reader:
    def __init__(self, p):
        self.p = p
        self.o = 0

    def take(self, n):
        o = self.o
        if o + n > len(self.p):
            raise ProtoError("payload too short")
        self.o = o + n
        return self.p[o:o + n]

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return get_u16(self.take(2), 0)

    def str(self):
        return _utf8(self.take(self.u8()), "text")

    def rest(self):
        r = self.p[self.o:]
        self.o = len(self.p)
        return r


# A host pads HELLO_REQ so that the whole frame is MAX_FRAME bytes: a node never answers an
# unauthenticated frame with more bytes than it got (no amplifier towards a spoofed address),
# and its HELLO always fits in that.
HELLO_REQ_PAD = const(MAX_FRAME - HDR_LONG - CRC_LEN - NONCE_LEN)


def hello_req(nonce, pad=0):
    """nonce(8), then pad zero bytes (hosts give HELLO_REQ_PAD)."""
    return bytes(nonce) + bytes(pad)


def parse_hello_req(p):
    return {"nonce": bytes(_Reader(p).take(NONCE_LEN))}


def hello(epoch, nonce, seq_hi, caps, uid, loops, name, board, firmware, timeout_ms=0,
          signals=()):
    """epoch(4) nonce(8) roc(2) caps(2) uid(6) nloops(1) loop names, name, board, firmware,
    comms timeout (u32 ms, 0: none), then (protocol 1.2, only when there are any) nsig(1)
    and the names of the signals each telemetry sample carries after its loops."""
    b = bytearray(epoch) + bytearray(nonce)
    b += bytes((seq_hi & 0xFF, seq_hi >> 8, caps & 0xFF, caps >> 8))
    b += bytes(uid[:6]) + bytes(6 - len(uid[:6])) + bytes((len(loops),))
    for n in loops:
        b += _str(n)
    b += _str(name) + _str(board) + _str(firmware)
    t = bytearray(4)
    put_u32(t, 0, timeout_ms)
    b += t
    if signals:
        b += bytes((len(signals),))
        for n in signals:
            b += _str(n)
    return bytes(b)


def parse_hello(p):
    r = _Reader(p)
    d = {"epoch": bytes(r.take(4)), "nonce": bytes(r.take(8)), "roc": r.u16(), "caps": r.u16(),
         "uid": bytes(r.take(6))}
    d["loops"] = [r.str() for _ in range(r.u8())]
    d["name"] = r.str()
    d["board"] = r.str()
    d["firmware"] = r.str()
    # appended in protocol 1.1: the node's comms timeout (None from an older node)
    d["comms_timeout_ms"] = get_u32(r.take(4), 0) if len(p) - r.o >= 4 else None
    # appended in protocol 1.2: the signals after the loops in each telemetry sample
    if len(p) - r.o >= 1:
        d["signals"] = [r.str() for _ in range(r.u8())]
    return d


def parse_telemetry(p, nloops, nsig=0):
    """{"t_ms", "samples": [[(sp, y, u, status) per loop] per sample], "signals": [[value
    per signal] per sample]}, values in milli-units (status an int, see ST_*); nsig: the
    signals HELLO named (protocol 1.2), 4 bytes each after a sample's loops."""
    per = nloops * VALUES_PER_LOOP * 4 + nsig * 4
    if len(p) < 4 or per == 0 or (len(p) - 4) % per:
        raise ProtoError("telemetry length %d does not fit %d loop(s) and %d signal(s)"
                         % (len(p), nloops, nsig))
    t = get_u32(p, 0)
    samples = []
    sigs = []
    o = 4
    while o < len(p):
        s = []
        for _ in range(nloops):
            s.append((get_i32(p, o), get_i32(p, o + 4), get_i32(p, o + 8), get_i32(p, o + 12)))
            o += 16
        samples.append(s)
        v = []
        for _ in range(nsig):
            v.append(get_i32(p, o))
            o += 4
        sigs.append(v)
    d = {"t_ms": t, "samples": samples}
    if nsig:
        d["signals"] = sigs
    return d


_STAT_FIELDS = ("ticks", "overruns", "skipped", "jitter_p99_us", "jitter_max_us",
                "compute_mean_us", "compute_max_us")


def stats(t_ms, loops):
    """t_ms(4), then per loop 7 x u32: ticks, overruns, skipped, jitter p99/max, compute
    mean/max (us); loops: a list of dicts from Scheduler.stats() order."""
    b = bytearray(4 + 28 * len(loops))
    put_u32(b, 0, t_ms)
    o = 4
    for st in loops:
        for f in _STAT_FIELDS:
            v = st.get(f) or 0
            put_u32(b, o, 0xFFFFFFFF if v > 0xFFFFFFFF else (0 if v < 0 else v))
            o += 4
    return bytes(b)


def heartbeat(uptime_ms, state, counters):
    """uptime(4) state(1) then the COUNTERS as u16 (saturating)."""
    b = bytearray(5 + 2 * len(counters))
    put_u32(b, 0, uptime_ms)
    b[4] = state
    for i, c in enumerate(counters):
        put_u16(b, 5 + 2 * i, c if c < 0xFFFF else 0xFFFF)
    return bytes(b)


# The node's counters, in HEARTBEAT order: frames that were not frames (or not for it),
# tags that did not verify, stale or replayed requests, unknown types, telemetry batches
# dropped (link too slow), duplicate requests answered again, requests applied.
COUNTERS = ("bad_frame", "bad_tag", "stale", "unknown", "dropped", "duplicate", "applied")
C_BAD_FRAME = const(0)
C_BAD_TAG = const(1)
C_STALE = const(2)
C_UNKNOWN = const(3)
C_DROPPED = const(4)
C_DUPLICATE = const(5)
C_APPLIED = const(6)


def cmd_subscribe(period_ms, batch=1, stats_s=1):
    b = bytearray(5)
    b[0] = CMD_SUBSCRIBE
    put_u16(b, 1, period_ms)
    b[3], b[4] = batch, stats_s
    return bytes(b)


def parse_command(p):
    r = _Reader(p)
    c = r.u8()
    d = {"cmd": c}
    if c == CMD_SET or c == CMD_SET_SAVE:
        n = len(p) - 1
        if n <= 0 or n % 6 or n // 6 > MAX_SETS:
            raise ProtoError("SET takes 1 to %d assignments of 6 bytes" % MAX_SETS)
        sets = []
        for _ in range(n // 6):
            lp = r.u8()
            key = r.u8()
            v = struct.unpack("<f", r.take(4))[0]
            if v - v != 0:               # NaN or an infinity (both give NaN here)
                raise ProtoError("value is not a finite number", R_OUT_OF_RANGE)
            sets.append([lp, key, v])
        d["sets"] = sets
    elif c == CMD_SET_PARAM:
        v = struct.unpack("<f", r.take(4))[0]
        if v - v != 0:
            raise ProtoError("value is not a finite number", R_OUT_OF_RANGE)
        d["value"] = v
        d["name"] = _utf8(r.rest(), "parameter name")
    elif c == CMD_SUBSCRIBE:
        d["period_ms"] = r.u16()
        d["batch"] = r.u8()
        d["stats_s"] = r.u8()
    elif c == CMD_REBOOT:
        d["delay_ms"] = r.u16()
    elif c == CMD_CONFIG:
        d["patch"] = _utf8(r.rest(), "config patch")
    elif c == CMD_TUNE:
        d["op"] = r.u8()
        d["loop"] = r.u8()
        if d["op"] == TUNE_START:
            a, h = struct.unpack("<ff", r.take(8))
            if a - a != 0 or h - h != 0 or a < 0 or h < 0:
                raise ProtoError("amplitude and hysteresis must be finite and >= 0",
                                 R_OUT_OF_RANGE)
            d["amplitude"], d["hyst"] = a, h
            d["rule"] = r.u8()
            d["timeout_s"] = r.u16()
            d["apply"] = r.u8()
            if d["rule"] >= len(TUNE_RULES):
                raise ProtoError("no rule %d" % d["rule"], R_OUT_OF_RANGE)
        elif d["op"] > TUNE_FORGET:
            raise ProtoError("no tune operation %d" % d["op"], R_UNKNOWN_COMMAND)
    elif c != CMD_CLEAR:
        raise ProtoError("unknown command %d" % c, R_UNKNOWN_COMMAND)
    return d


def ack(ref, result=b""):
    return bytes(ref) + bytes(result)


def nack(ref, reason, text=""):
    return bytes(ref) + bytes((reason,)) + _cut(text.encode(), 160)


def event(kind, t_ms, loop, code, value, text=""):
    """kind(1) t_ms(4) loop(1, 255 = node) code(1) value(i32) text."""
    b = bytearray(11)
    b[0] = kind
    put_u32(b, 1, t_ms)
    b[5], b[6] = loop & 0xFF, code
    put_i32(b, 7, value)
    return bytes(b) + _cut(text.encode(), 160)


def parse_time_req(p):
    return {"host_ms": get_u48(_Reader(p).take(6), 0)}


READ_CHUNK = const(200)     # result bytes per READ answer (a frame holds 254)


def parse_read_req(p):
    r = _Reader(p)
    return {"offset": r.u16(), "path": _utf8(r.rest(), "read path")}


def parse_payload(ftype, p, nloops=0):
    """The payload of a request a node gets from a host (HELLO_REQ, COMMAND, TIME, READ,
    BYE) as a dict; ProtoError if malformed, R_UNKNOWN_COMMAND-coded for any other type.
    cyphy.codec.parse_payload decodes every type (a node decodes HELLO and TELEMETRY, in
    peer.py, with parse_hello and parse_telemetry)."""
    if ftype == COMMAND:
        return parse_command(p)
    if ftype == READ:
        return parse_read_req(p)
    if ftype == TIME:
        return parse_time_req(p)
    if ftype == HELLO_REQ:
        return parse_hello_req(p)
    if ftype == BYE:
        return {}
    if ftype in TYPE_NAMES:
        raise ProtoError("%s is not a request" % TYPE_NAMES[ftype], R_UNKNOWN_COMMAND)
    raise ProtoError("unknown frame type %d" % ftype, R_UNKNOWN_COMMAND)
