"""Section 2, the protocol: bytes per telemetry sample for cyphy and the protocols it is
compared with (host/cyphy/wire_sizes.py builds every encoding's actual bytes), and how
many frames per second the host encodes and decodes, cyphy next to pymavlink and
protobuf (the anchors' own libraries) on the same sample.

Decoding means what a receiver does before it may use a sample:
- cyphy: proto.parse + Frame.check (the HMAC-SHA256 tag, or the CRC-32) + parse_payload;
- MAVLink: pymavlink's MAVLink.decode (header, CRC-16 with CRC_EXTRA, payload; signed:
  the SHA-256 signature and the link's timestamp, each frame with a newer timestamp as on
  a real link);
- Sparkplug B and ESPHome: protobuf's ParseFromString of the payload (message classes
  built at run time from the fields wire_sizes.py encodes; the MQTT/ESPHome framing is
  parsed too);
- JSON: json.loads of the compact object (CPython's C decoder).
Each rate is the median of several timed batches of the same frame.
"""

from __future__ import annotations

import json
import struct
import time

import common as C



def _rate(fn, budget_s: float, repeats: int) -> float:
    """Frames per second: the median over `repeats` batches of about budget_s each."""
    n = 1
    while True:  # calibrate the batch size
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= budget_s / 4 or n >= 1 << 22:
            break
        n *= 2
    n = max(1, int(n * budget_s / max(dt, 1e-9)))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - t0))
    return round(C.median(rates))


def sizes() -> list[dict]:
    from cyphy import wire_sizes as W

    out = []
    for e in W.encodings():
        p: dict = {"encoding": e.name, "auth": e.auth}
        if e.system == "cyphy":
            p["link"] = "serial" if "serial" in e.name else "udp"
        out.append(C.record("telemetry_frame_bytes", e.size, "B", e.system, **p))
    return out


# ------------------------------------------------------------------ codecs


def cyphy_codecs():
    from cyphy import wire_sizes as W
    from cyphy import codec as P

    key, epoch = W.KEY, b"\0\0\0\1"
    auth = W.cyphy_frame(W.SAMPLE, key, epoch)
    plain = W.cyphy_frame(W.SAMPLE)

    def dec_auth():
        f = P.parse(auth)
        if not f.check(key, epoch, 0):
            raise AssertionError("tag")
        return P.parse_payload(f.type, f.payload, 1)

    def dec_plain():
        f = P.parse(plain)
        if not f.check():
            raise AssertionError("crc")
        return P.parse_payload(f.type, f.payload, 1)

    assert dec_auth()["samples"][0][0][0] == 60000
    return [
        ("cyphy", {"encoding": "cyphy v1, authenticated", "auth": True},
         lambda: W.cyphy_frame(W.SAMPLE, key, epoch), dec_auth),
        ("cyphy", {"encoding": "cyphy v1, CRC-32", "auth": False},
         lambda: W.cyphy_frame(W.SAMPLE), dec_plain),
    ]


def mavlink_codecs(n_signed: int):
    from cyphy import wire_sizes as W
    from pymavlink.dialects.v20 import common as M

    s = W.SAMPLE
    args = (s.t_ms, *s.floats[:4], 0, 0)
    tx = M.MAVLink(None, srcSystem=s.node, srcComponent=1)
    tx.seq = s.seq
    frame = bytes(tx.manual_setpoint_encode(*args).pack(tx))
    if frame != W.mavlink_v2(s):
        raise AssertionError("pymavlink's bytes differ from wire_sizes.mavlink_v2")
    rx = M.MAVLink(None)

    def dec():
        return rx.decode(bytearray(frame))

    def enc():
        return tx.manual_setpoint_encode(*args).pack(tx)

    # Signed: the receiver rejects a timestamp it has seen, so it gets a stream of frames,
    # each signed with a newer timestamp, as a real link carries.
    stx = M.MAVLink(None, srcSystem=s.node, srcComponent=1)
    stx.signing.secret_key = W.MAVLINK_SECRET
    stx.signing.link_id = 0
    stx.signing.timestamp = 1
    stx.signing.sign_outgoing = True
    signed = [bytes(stx.manual_setpoint_encode(*args).pack(stx)) for _ in range(n_signed)]
    assert len(signed[0]) == len(W.mavlink_v2(s, W.MAVLINK_SECRET))
    state = {"rx": None, "i": 0}

    def fresh():
        r = M.MAVLink(None)
        r.signing.secret_key = W.MAVLINK_SECRET
        r.signing.timestamp = 0
        state["rx"], state["i"] = r, 0

    fresh()

    def dec_signed():
        i = state["i"]
        if i >= len(signed):
            fresh()
            i = 0
        state["i"] = i + 1
        m = state["rx"].decode(bytearray(signed[i]))
        return m

    m = dec_signed()
    if m.get_type() != "MANUAL_SETPOINT" or not state["rx"].signing.goodsig_count:
        raise AssertionError("pymavlink did not verify the signed frame")
    fresh()

    def enc_signed():
        return stx.manual_setpoint_encode(*args).pack(stx)

    return [
        ("MAVLink", {"encoding": "MAVLink v2, unsigned (pymavlink)", "auth": False}, enc, dec),
        ("MAVLink", {"encoding": "MAVLink v2, signed (pymavlink)", "auth": True},
         enc_signed, dec_signed),
    ]


def _pb_classes():
    """Sparkplug B's Payload/Metric and ESPHome's SensorStateResponse, with the fields
    wire_sizes.py encodes (numbers and types from sparkplug_b.proto and api.proto)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="cyphy_bench_anchors.proto",
                                             package="cyphybench", syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("Metric", [("name", 1, F.TYPE_STRING, OPT, None), ("alias", 2, F.TYPE_UINT64, OPT, None),
                   ("timestamp", 3, F.TYPE_UINT64, OPT, None),
                   ("datatype", 4, F.TYPE_UINT32, OPT, None),
                   ("float_value", 12, F.TYPE_FLOAT, OPT, None)])
    msg("Payload", [("timestamp", 1, F.TYPE_UINT64, OPT, None),
                    ("metrics", 2, F.TYPE_MESSAGE, REP, ".cyphybench.Metric"),
                    ("seq", 3, F.TYPE_UINT64, OPT, None)])
    msg("SensorStateResponse", [("key", 1, F.TYPE_FIXED32, OPT, None),
                                ("state", 2, F.TYPE_FLOAT, OPT, None),
                                ("missing_state", 3, F.TYPE_BOOL, OPT, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("cyphybench.Payload")),
            get(pool.FindMessageTypeByName("cyphybench.SensorStateResponse")))


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7


def protobuf_codecs():
    from cyphy import wire_sizes as W

    Payload, SensorState = _pb_classes()
    s = W.SAMPLE
    spb = W.sparkplug_ndata(s)
    mqtt = W.mqtt_publish(W.SPARKPLUG_TOPIC, spb)

    def enc_spb():
        p = Payload(timestamp=s.utc_ms, seq=s.seq & 0xFF)
        for alias, v in enumerate(s.floats, start=1):
            p.metrics.add(alias=alias, timestamp=s.utc_ms, float_value=v)
        return W.mqtt_publish(W.SPARKPLUG_TOPIC, p.SerializeToString())

    if enc_spb() != mqtt:
        raise AssertionError("protobuf's Sparkplug bytes differ from wire_sizes.sparkplug_ndata")

    def dec_spb():
        # MQTT PUBLISH: fixed header, remaining length, topic; then the protobuf payload
        _, i = _varint(mqtt, 1)
        tlen = struct.unpack_from(">H", mqtt, i)[0]
        p = Payload()
        p.ParseFromString(mqtt[i + 2 + tlen:])
        return p

    assert abs(dec_spb().metrics[1].float_value - 59.5) < 1e-6

    states = [W.esphome_plain(W.esphome_sensor_state(k, v)) for k, v in enumerate(s.floats, 1)]
    stream = b"".join(states)

    def enc_esp():
        return b"".join(W.esphome_plain(SensorState(key=k, state=v).SerializeToString())
                        for k, v in enumerate(s.floats, 1))

    if enc_esp() != stream:
        raise AssertionError("protobuf's ESPHome bytes differ from wire_sizes.esphome_plain")

    def dec_esp():
        out = []
        i = 0
        while i < len(stream):  # 0x00, varint size, varint type, message
            size, j = _varint(stream, i + 1)
            _, j = _varint(stream, j)
            m = SensorState()
            m.ParseFromString(stream[j:j + size])
            out.append(m)
            i = j + size
        return out

    assert len(dec_esp()) == 4
    return [
        ("Sparkplug B", {"encoding": "Sparkplug B NDATA over MQTT (protobuf)", "auth": False},
         enc_spb, dec_spb),
        ("ESPHome", {"encoding": "ESPHome native API, plaintext, 4 messages (protobuf)",
                     "auth": False}, enc_esp, dec_esp),
    ]


def json_codecs():
    from cyphy import wire_sizes as W

    obj = W.compact_object(W.SAMPLE)
    text = W.to_json(obj)
    return [("JSON/MQTT", {"encoding": "JSON, compact (stdlib json)", "auth": False},
             lambda: W.to_json(obj), lambda: json.loads(text))]


def run(ctx) -> list[dict]:
    out = sizes()
    budget = 0.05 if ctx.quick else 0.25
    repeats = 5 if ctx.quick else 7
    groups = [("cyphy", cyphy_codecs, ())]
    groups.append(("pymavlink", mavlink_codecs, (20000 if ctx.quick else 100000,)))
    groups.append(("protobuf", protobuf_codecs, ()))
    groups.append(("json", json_codecs, ()))
    anchors = {"pymavlink": ["MAVLink"], "protobuf": ["Sparkplug B", "ESPHome"]}
    try:
        from google.protobuf.internal import api_implementation
        pb_impl = api_implementation.Type()
    except ImportError:
        pb_impl = None
    for lib, make, args in groups:
        try:
            codecs = make(*args)
        except Exception as e:  # noqa: BLE001 - recorded; the other codecs go on
            if isinstance(e, ImportError):
                reason = (f"{lib} is not installed ({e.name}); make bench installs "
                          f"bench/requirements.txt")
            else:
                reason = C.why(e)
                ctx.error(e)
            for system in anchors.get(lib, [lib]):
                out.append(C.skipped("decode_frames_per_s", "frames/s", reason, system))
                out.append(C.skipped("encode_frames_per_s", "frames/s", reason, system))
            continue
        for system, params, enc, dec in codecs:
            params = dict(params, library=lib if lib != "json" else "json (stdlib)")
            if lib == "protobuf" and pb_impl:
                params["library"] = f"protobuf ({pb_impl})"
            ctx.log(f"protocol: {params['encoding']}")
            out.append(C.record("encode_frames_per_s", _rate(enc, budget, repeats), "frames/s",
                                system, **params))
            out.append(C.record("decode_frames_per_s", _rate(dec, budget, repeats), "frames/s",
                                system, **params))
    return out
