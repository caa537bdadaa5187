"""Tests for cyphy.sparkplug, the Sparkplug B 3.0.0 codec.

Interoperability is checked against an independent implementation: pysparkplug, both its
public API (NBirth, DData, ...) and the protobuf classes it generated from the official
sparkplug_b.proto (``PB``), in both directions. Random and mutated bytes (hypothesis) must
decode or raise SparkplugError, nothing else.
"""

from __future__ import annotations

import datetime
import json
import math
import struct

import pysparkplug as psp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pysparkplug._protobuf import Payload as PB

from cyphy import sparkplug as sp
from cyphy.sparkplug import DataSet, DataType, Metric, Payload, SparkplugError, Template

D = DataType
F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
TS = 1_764_678_000_123  # ms since the epoch, a plausible 2025 timestamp


def f32(x: float) -> float:
    """``x`` rounded to a float32, as a Float metric carries it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# (datatype, value we send, oneof field on the wire, raw protobuf value there)
CASES: list[tuple[DataType, object, str, object]] = [
    (D.Int8, 0, "int_value", 0),
    (D.Int8, -1, "int_value", 0xFF),
    (D.Int8, -128, "int_value", 0x80),
    (D.Int8, 127, "int_value", 0x7F),
    (D.Int16, -32768, "int_value", 0x8000),
    (D.Int16, -87, "int_value", 0xFFA9),
    (D.Int16, 32767, "int_value", 0x7FFF),
    (D.Int32, -(2**31), "int_value", 0x80000000),
    (D.Int32, -1, "int_value", 0xFFFFFFFF),
    (D.Int32, 2**31 - 1, "int_value", 0x7FFFFFFF),
    (D.Int64, -(2**63), "long_value", 2**63),
    (D.Int64, -1, "long_value", 2**64 - 1),
    (D.Int64, 2**63 - 1, "long_value", 2**63 - 1),
    (D.UInt8, 255, "int_value", 255),
    (D.UInt16, 65535, "int_value", 65535),
    (D.UInt32, 0, "int_value", 0),
    (D.UInt32, 2**32 - 1, "int_value", 2**32 - 1),
    (D.UInt64, 2**64 - 1, "long_value", 2**64 - 1),
    (D.Float, 1.5, "float_value", 1.5),
    (D.Float, -F32_MAX, "float_value", -F32_MAX),
    (D.Float, math.inf, "float_value", math.inf),
    (D.Float, -math.inf, "float_value", -math.inf),
    (D.Float, math.nan, "float_value", math.nan),
    (D.Double, 0.1, "double_value", 0.1),
    (D.Double, -0.0, "double_value", -0.0),
    (D.Double, 5e-324, "double_value", 5e-324),
    (D.Double, 1.7976931348623157e308, "double_value", 1.7976931348623157e308),
    (D.Double, math.nan, "double_value", math.nan),
    (D.Double, -math.inf, "double_value", -math.inf),
    (D.Boolean, True, "boolean_value", True),
    (D.Boolean, False, "boolean_value", False),
    (D.String, "", "string_value", ""),
    (D.String, "Ofen 🔥 Temperatur °C", "string_value", "Ofen 🔥 Temperatur °C"),
    (D.DateTime, TS, "long_value", TS),
    (D.DateTime, 0, "long_value", 0),
    (D.Text, "line 1\nline 2\0x", "string_value", "line 1\nline 2\0x"),
    (D.UUID, "123e4567-e89b-12d3-a456-426614174000", "string_value",
     "123e4567-e89b-12d3-a456-426614174000"),
    (D.Bytes, b"", "bytes_value", b""),
    (D.Bytes, bytes(range(256)), "bytes_value", bytes(range(256))),
    (D.File, b"%PDF-1.7\n", "bytes_value", b"%PDF-1.7\n"),
    # 6.4.17 examples (the Float/Double examples there are printed big-endian; the text,
    # Tahu and pysparkplug say little-endian, which is what is checked here)
    (D.Int8Array, [-23, 123], "bytes_value", bytes([0xE9, 0x7B])),
    (D.Int16Array, [-30000, 30000], "bytes_value", bytes([0xD0, 0x8A, 0x30, 0x75])),
    (D.Int32Array, [-1, 315338746], "bytes_value",
     bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFA, 0xAF, 0xCB, 0x12])),
    (D.Int64Array, [-4270929666821191986, -3601064768563266876], "bytes_value",
     bytes([0xCE, 0x06, 0x72, 0xAC, 0x18, 0x9C, 0xBA, 0xC4,
            0xC4, 0xBA, 0x9C, 0x18, 0xAC, 0x72, 0x06, 0xCE])),
    (D.UInt8Array, [23, 250], "bytes_value", bytes([0x17, 0xFA])),
    (D.UInt16Array, [30, 52360], "bytes_value", bytes([0x1E, 0x00, 0x88, 0xCC])),
    (D.UInt32Array, [52, 3293969225], "bytes_value",
     bytes([0x34, 0, 0, 0, 0x49, 0xFB, 0x55, 0xC4])),
    (D.UInt64Array, [52, 16444743074749521625], "bytes_value",
     bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0xD9, 0x9E, 0x02, 0xD1, 0xB2, 0x76, 0x37, 0xE4])),
    (D.FloatArray, [1.5, -2.25], "bytes_value", struct.pack("<2f", 1.5, -2.25)),
    (D.DoubleArray, [12.354213, 1022.9123213], "bytes_value",
     struct.pack("<2d", 12.354213, 1022.9123213)),
    (D.BooleanArray, [False, False, True, True, False, True, False, False, True, True,
                      False, True], "bytes_value", bytes([0x0C, 0, 0, 0, 0x34, 0xD0])),
    (D.BooleanArray, [], "bytes_value", bytes(4)),
    (D.StringArray, ["ABC", "hello"], "bytes_value", b"ABC\0hello\0"),
    (D.StringArray, ["", "ü"], "bytes_value", b"\0\xc3\xbc\0"),
    (D.StringArray, [], "bytes_value", b""),
    (D.DateTimeArray, [1256102875335, 1656107875000], "bytes_value",
     struct.pack("<2Q", 1256102875335, 1656107875000)),
    (D.Int32Array, [], "bytes_value", b""),
]
CASE_IDS = [f"{dt.name}={v!r}"[:40] for dt, v, _, _ in CASES]


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and -0.0 told from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def expected(dt: DataType, value: object) -> object:
    if dt is D.Float:
        return f32(value)  # type: ignore[arg-type]
    if dt is D.FloatArray:
        return [f32(v) for v in value]  # type: ignore[union-attr]
    return value


def pb_value(pm: object) -> tuple[str | None, object]:
    field = pm.WhichOneof("value")  # type: ignore[attr-defined]
    return field, (getattr(pm, field) if field else None)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(("dt", "value", "field", "raw"), CASES, ids=CASE_IDS)
def test_round_trip_every_datatype(dt: DataType, value: object, field: str, raw: object) -> None:
    m = Metric("m", dt, value, alias=7, timestamp=TS)
    out = sp.decode(sp.encode(Payload(timestamp=TS, metrics=[m], seq=3))).metrics[0]
    assert (out.name, out.datatype, out.alias, out.timestamp) == ("m", dt, 7, TS)
    assert same(out.value, expected(dt, value)) or (
        isinstance(value, list) and all(map(same, out.value, expected(dt, value)))  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("dt", "value", "field", "raw"), CASES, ids=CASE_IDS)
def test_ours_to_official_proto(dt: DataType, value: object, field: str, raw: object) -> None:
    """Our bytes parsed by protobuf's own parser of sparkplug_b.proto: the value is in the
    spec's field with the spec's bit pattern, and the bytes are the ones protobuf writes."""
    data = sp.encode(Payload(timestamp=TS, metrics=[Metric("m", dt, value, alias=7)], seq=9))
    pb = PB.FromString(data)
    assert (pb.timestamp, pb.seq, len(pb.metrics)) == (TS, 9, 1)
    pm = pb.metrics[0]
    assert (pm.name, pm.alias, pm.datatype) == ("m", 7, int(dt))
    got_field, got = pb_value(pm)
    assert got_field == field
    assert same(got, expected(dt, raw)) if isinstance(raw, float) else got == raw
    assert pb.SerializeToString() == data  # byte for byte what protobuf itself writes


@pytest.mark.parametrize(("dt", "value", "field", "raw"), CASES, ids=CASE_IDS)
def test_official_proto_to_ours(dt: DataType, value: object, field: str, raw: object) -> None:
    pb = PB(timestamp=TS, seq=255)
    pm = pb.metrics.add(name="m", alias=2**64 - 1, datatype=int(dt), timestamp=TS)
    setattr(pm, field, raw)
    out = sp.decode(pb.SerializeToString())
    assert (out.timestamp, out.seq) == (TS, 255)
    m = out.metrics[0]
    assert (m.name, m.alias, m.datatype, m.timestamp) == ("m", 2**64 - 1, dt, TS)
    want = expected(dt, value)
    assert same(m.value, want) or all(map(same, m.value, want))  # type: ignore[arg-type]


def test_is_null_and_aliases_without_names() -> None:
    """A null metric carries no value; DDATA metrics may carry only an alias (6.4.6)."""
    p = Payload(timestamp=TS, seq=4, metrics=[
        Metric("oven/setpoint", D.Double, None, alias=1, is_null=True, timestamp=TS),
        Metric(None, D.Int32, -5, alias=2, timestamp=TS, is_historical=True, is_transient=True),
    ])
    data = sp.encode(p)
    assert sp.decode(data) == p
    pb = PB.FromString(data)
    assert pb.metrics[0].is_null and pb.metrics[0].WhichOneof("value") is None
    assert not pb.metrics[1].HasField("name") and pb.metrics[1].is_historical
    # is_null wins over a value that is sent anyway (Tahu does the same)
    pb.metrics[0].double_value = 3.0
    assert sp.decode(pb.SerializeToString()).metrics[0].value is None


def test_empty_payload_and_body() -> None:
    assert sp.encode(Payload()) == b""
    assert sp.decode(b"") == Payload()
    p = Payload(timestamp=0, seq=0, uuid="schema-1", body=b"\x00\xff")
    data = sp.encode(p)
    assert sp.decode(data) == p
    pb = PB.FromString(data)
    assert (pb.uuid, pb.body, pb.HasField("seq")) == ("schema-1", b"\x00\xff", True)


def test_datatypes_left_out_of_data_messages() -> None:
    """6.4.6: DATA/CMD SHOULD NOT carry datatypes; the birth's types decode them."""
    birth = Payload(timestamp=TS, seq=0, metrics=[
        Metric("oven/temp", D.Int8, 0, alias=1), Metric("oven/pv", D.Float, 0.0, alias=2),
        Metric("oven/count", D.UInt64, 0, alias=3),
    ])
    ddata = Payload(timestamp=TS, seq=1, metrics=[
        Metric(None, D.Int8, -3, alias=1), Metric(None, D.Float, 21.5, alias=2),
        Metric(None, D.UInt64, 2**40, alias=3),
    ])
    data = sp.encode(ddata, include_datatypes=False)
    assert all(not m.HasField("datatype") for m in PB.FromString(data).metrics)
    assert sp.decode(data, datatypes=sp.birth_datatypes(birth)) == ddata
    raw = sp.decode(data)  # no birth: the raw field values, untyped
    assert [(m.datatype, m.value) for m in raw.metrics] == [(None, 0xFD), (None, 21.5),
                                                            (None, 2**40)]
    # untyped values re-encode into a field chosen by their Python type
    assert sp.decode(sp.encode(raw)) == raw


def test_tahu_conventions_accepted() -> None:
    """Eclipse Tahu sign-extends Int8/Int16 to 32 bits and puts UInt32 in long_value."""
    pb = PB(timestamp=TS)
    pb.metrics.add(name="a", datatype=D.Int8, int_value=0xFFFFFFFF)
    pb.metrics.add(name="b", datatype=D.Int16, int_value=0xFFFFFFA9)
    pb.metrics.add(name="c", datatype=D.Int8, int_value=0xFFFFFF80)
    pb.metrics.add(name="d", datatype=D.UInt32, long_value=2**32 - 1)
    assert [m.value for m in sp.decode(pb.SerializeToString()).metrics] == [-1, -87, -128,
                                                                            2**32 - 1]


def test_metadata_and_properties() -> None:
    props = sp.PropertySet({
        "engUnit": sp.PropertyValue(D.String, "°C"),
        sp.QUALITY: sp.PropertyValue(D.Int32, int(sp.Quality.STALE)),
        "min": sp.PropertyValue(D.Double, -40.0),
        "note": sp.PropertyValue(D.String, None, is_null=True),
        "nested": sp.PropertyValue(D.PropertySet, sp.PropertySet({
            "x": sp.PropertyValue(D.Int8, -2)})),
        "list": sp.PropertyValue(D.PropertySetList, [
            sp.PropertySet({"a": sp.PropertyValue(D.Boolean, True)}), sp.PropertySet()]),
    })
    meta = sp.MetaData(is_multi_part=False, content_type="application/pdf", size=9, seq=0,
                       file_name="r.pdf", file_type="pdf", md5="abc", description="report")
    m = Metric("oven/pv", D.File, b"%PDF-1.7\n", metadata=meta, properties=props)
    data = sp.encode(Payload(timestamp=TS, metrics=[m]))
    assert sp.decode(data).metrics[0] == m
    pm = PB.FromString(data).metrics[0]
    assert list(pm.properties.keys) == ["engUnit", "Quality", "min", "note", "nested", "list"]
    v = pm.properties.values
    assert (v[0].type, v[0].string_value) == (D.String, "°C")
    assert (v[1].type, v[1].int_value) == (D.Int32, 500)
    assert v[3].is_null and v[3].WhichOneof("value") is None
    assert v[4].propertyset_value.keys == ["x"] and v[4].propertyset_value.values[0].int_value == 0xFE
    assert v[5].propertysets_value.propertyset[0].values[0].boolean_value is True
    assert (pm.metadata.content_type, pm.metadata.size, pm.metadata.file_name) == (
        "application/pdf", 9, "r.pdf")
    assert pm.metadata.HasField("is_multi_part") and pm.metadata.HasField("seq")


def test_dataset_and_template_against_official_proto() -> None:
    ds = DataSet(["t", "name", "ok", "x"], [D.Int64, D.String, D.Boolean, D.Float],
                 [[-1, "a", True, 1.5], [2, "", None, -0.25]])
    udt = Template(
        metrics=[Metric("kp", D.Double, 1.2), Metric("mode", D.String, "auto"),
                 Metric("hist", D.DataSet, ds)],
        parameters=[sp.TemplateParameter("loop", D.String, "oven"),
                    sp.TemplateParameter("n", D.Int16, -7)],
        version="1.0", is_definition=True,
    )
    inst = Template(metrics=[Metric("kp", D.Double, 2.0)], template_ref="Loop",
                    is_definition=False)
    p = Payload(timestamp=TS, seq=0, metrics=[
        Metric("Loop", D.Template, udt), Metric("oven", D.Template, inst),
        Metric("table", D.DataSet, ds),
    ])
    data = sp.encode(p)
    assert sp.decode(data) == p
    pb = PB.FromString(data)
    assert pb.SerializeToString() == data
    pds = pb.metrics[2].dataset_value
    assert (pds.num_of_columns, list(pds.columns), list(pds.types)) == (
        4, ["t", "name", "ok", "x"], [4, 12, 11, 9])
    assert pds.rows[0].elements[0].long_value == 2**64 - 1
    assert pds.rows[1].elements[2].WhichOneof("value") is None
    pt = pb.metrics[0].template_value
    assert (pt.version, pt.is_definition, pt.parameters[1].int_value) == ("1.0", True, 0xFFF9)
    assert pb.metrics[1].template_value.template_ref == "Loop"
    # and back: protobuf's own bytes decode to the same thing
    assert sp.decode(pb.SerializeToString()) == p
    # packed repeated types (proto3-style writers) are read too
    packed = PB(timestamp=TS)
    dsv = packed.metrics.add(name="d", datatype=D.DataSet).dataset_value
    dsv.columns.extend(["a", "b"])
    dsv.types.extend([3, 12])
    row = dsv.rows.add()
    row.elements.add(int_value=0xFFFFFFFE)
    row.elements.add(string_value="s")
    raw = packed.SerializeToString()
    types_field = bytes([0x1A, 2, 3, 12])  # field 3, length-delimited, [3, 12]
    repacked = raw.replace(bytes([0x18, 3, 0x18, 12]), types_field)
    assert repacked != raw
    for data in (raw, repacked):
        got = sp.decode(data).metrics[0].value
        assert got == DataSet(["a", "b"], [D.Int32, D.String], [[-2, "s"]])


# --- pysparkplug's public API -----------------------------------------------------------

# pysparkplug's Python values for ours (DateTime: aware datetimes; arrays: tuples)
def to_psp(dt: DataType, v: object) -> object:
    if dt is D.DateTime:
        return datetime.datetime.fromtimestamp(v / 1000, datetime.timezone.utc)  # type: ignore[operator]
    if dt is D.DateTimeArray:
        return tuple(to_psp(D.DateTime, x) for x in v)  # type: ignore[union-attr]
    return tuple(v) if isinstance(v, list) else v


def from_psp(dt: DataType, v: object) -> object:
    if dt is D.DateTime:
        return round(v.timestamp() * 1000)  # type: ignore[union-attr]
    if dt is D.DateTimeArray:
        return [from_psp(D.DateTime, x) for x in v]  # type: ignore[union-attr]
    return list(v) if isinstance(v, tuple) else v


PSP_CASES = [c for c in CASES if not (c[0] is D.DateTime and c[1] == 0)]


def test_pysparkplug_reads_our_births_and_data() -> None:
    metrics = [Metric(f"m{i}", dt, v, alias=i + 10, timestamp=TS)
               for i, (dt, v, _, _) in enumerate(PSP_CASES)]
    theirs = psp.NBirth.decode(sp.encode(Payload(timestamp=TS, seq=0, metrics=metrics)))
    assert (theirs.timestamp, theirs.seq) == (TS, 0)
    for ours, m in zip(metrics, theirs.metrics):
        assert (m.name, m.alias, int(m.datatype), m.timestamp) == (
            ours.name, ours.alias, int(ours.datatype), TS)
        want = expected(ours.datatype, ours.value)  # type: ignore[arg-type]
        got = from_psp(ours.datatype, m.value)  # type: ignore[arg-type]
        assert same(got, want) or all(map(same, got, want)), ours  # type: ignore[arg-type]
    # DDATA with aliases only and no datatypes, decoded by pysparkplug with the birth
    data = [Metric(None, m.datatype, m.value, alias=m.alias, timestamp=TS) for m in metrics]
    ddata = psp.DData.decode(sp.encode(Payload(timestamp=TS, seq=1, metrics=data),
                                       include_datatypes=False), birth=theirs)
    assert [m.name for m in ddata.metrics] == [m.name for m in metrics]
    assert [m.datatype for m in ddata.metrics] == [m.datatype for m in theirs.metrics]


def test_we_read_pysparkplug_births_and_data() -> None:
    their_metrics = tuple(
        psp.Metric(timestamp=TS, name=f"m{i}", datatype=psp.DataType(int(dt)),
                   value=to_psp(dt, v), alias=i + 10)
        for i, (dt, v, _, _) in enumerate(PSP_CASES)
    )
    birth = psp.DBirth(timestamp=TS, seq=5, metrics=their_metrics)
    ours = sp.decode(birth.encode())
    assert (ours.timestamp, ours.seq) == (TS, 5)
    for (dt, v, _, _), m in zip(PSP_CASES, ours.metrics):
        assert (m.datatype, m.timestamp) == (dt, TS)
        want = expected(dt, v)
        if dt is D.DateTime:  # pysparkplug goes through float seconds: within 1 ms
            assert abs(m.value - want) <= 1  # type: ignore[operator]
        elif dt is D.DateTimeArray:
            assert all(abs(a - b) <= 1 for a, b in zip(m.value, want))  # type: ignore[arg-type]
        else:
            assert same(m.value, want) or all(map(same, m.value, want)), (dt, v)  # type: ignore[arg-type]
    # their DDATA (no datatypes, pysparkplug's default) decoded with our birth's types
    data = psp.DData(timestamp=TS, seq=6, metrics=tuple(
        psp.Metric(timestamp=TS, name=None, alias=m.alias, datatype=m.datatype, value=m.value)
        for m in their_metrics))
    got = sp.decode(data.encode(), datatypes=sp.birth_datatypes(ours))
    assert [(m.alias, m.datatype) for m in got.metrics] == [
        (m.alias, m.datatype) for m in ours.metrics]


# --- realistic cyphy messages ------------------------------------------------------------


def cyphy_nbirth(bdseq: int) -> Payload:
    return Payload(timestamp=TS, seq=0, metrics=[
        sp.bdseq_metric(bdseq, TS),
        sp.rebirth_metric(False, TS),
        Metric(sp.NODE_CONTROL_REBOOT, D.Boolean, False, timestamp=TS),
        Metric(sp.PROPERTIES_HARDWARE_MAKE, D.String, "cyphy", timestamp=TS),
        Metric(sp.PROPERTIES_OS, D.String, "Linux", timestamp=TS),
        Metric("gateway/nodes", D.UInt32, 3, alias=1, timestamp=TS),
    ])


def cyphy_dbirth() -> Payload:
    eng = sp.PropertySet({"engUnit": sp.PropertyValue(D.String, "°C")})
    return Payload(timestamp=TS, seq=1, metrics=[
        Metric("oven/setpoint", D.Double, 180.0, alias=10, timestamp=TS, properties=eng),
        Metric("oven/pv", D.Float, 21.25, alias=11, timestamp=TS, properties=eng),
        Metric("oven/out", D.Double, 0.0, alias=12, timestamp=TS),
        Metric("oven/mode", D.String, "auto", alias=13, timestamp=TS),
        Metric("oven/kp", D.Double, 2.5, alias=14, timestamp=TS),
        Metric("oven/ki", D.Double, 0.05, alias=15, timestamp=TS),
        Metric("oven/kd", D.Double, 0.0, alias=16, timestamp=TS),
        Metric("alarms", D.Int32, 0, alias=17, timestamp=TS),
        Metric("faults", D.Int32, -1, alias=18, timestamp=TS),
        Metric("oven/jitter_p99_us", D.Int64, 412, alias=19, timestamp=TS),
        Metric("uptime_ms", D.UInt64, 2**40 + 7, alias=20, timestamp=TS),
        Metric("Device Control/Rebirth", D.Boolean, False, alias=21, timestamp=TS),
    ])


def cyphy_ddata() -> Payload:
    return Payload(timestamp=TS + 100, seq=2, metrics=[
        Metric(None, D.Float, 180.5, alias=11, timestamp=TS + 99),
        Metric(None, D.Double, 37.5, alias=12, timestamp=TS + 99),
        Metric(None, D.Int32, 4, alias=17, timestamp=TS + 99),
        Metric(None, D.Int64, -3, alias=19, timestamp=TS + 99),
        Metric(None, D.Double, None, alias=10, timestamp=TS + 99, is_null=True),
    ])


def cyphy_dcmd() -> Payload:
    return Payload(timestamp=TS + 200, metrics=[
        Metric("oven/setpoint", D.Double, 200.0),
        Metric("oven/mode", D.String, "manual"),
    ])


@pytest.mark.parametrize("make", [lambda: cyphy_nbirth(7), cyphy_dbirth, cyphy_ddata, cyphy_dcmd,
                                  lambda: Payload(timestamp=TS, metrics=[sp.bdseq_metric(7)])],
                         ids=["NBIRTH", "DBIRTH", "DDATA", "DCMD", "NDEATH"])
def test_realistic_payloads_both_ways(make) -> None:  # type: ignore[no-untyped-def]
    p = make()
    data = sp.encode(p)
    assert sp.decode(data) == p
    pb = PB.FromString(data)
    assert pb.SerializeToString() == data
    assert sp.decode(pb.SerializeToString()) == p
    assert len(pb.metrics) == len(p.metrics)
    for ours, theirs in zip(p.metrics, pb.metrics):
        assert theirs.name == (ours.name or "") and theirs.datatype == ours.datatype


def test_realistic_session_with_pysparkplug() -> None:
    """NBIRTH, DBIRTH, DDATA from us read by pysparkplug; DCMD and NCMD from it read by us."""
    nb = psp.NBirth.decode(sp.encode(cyphy_nbirth(7)))
    assert {m.name: m.value for m in nb.metrics}["bdSeq"] == 7
    assert {m.name: m.value for m in nb.metrics}["Node Control/Rebirth"] is False
    db = psp.DBirth.decode(sp.encode(cyphy_dbirth()))
    by_name = {m.name: m for m in db.metrics}
    assert by_name["oven/mode"].value == "auto" and by_name["faults"].value == -1
    assert by_name["oven/jitter_p99_us"].datatype == psp.DataType.INT64
    dd = psp.DData.decode(sp.encode(cyphy_ddata(), include_datatypes=False), birth=db)
    assert [(m.name, m.value) for m in dd.metrics] == [
        ("oven/pv", 180.5), ("oven/out", 37.5), ("alarms", 4), ("oven/jitter_p99_us", -3),
        ("oven/setpoint", None)]
    assert dd.metrics[-1].is_null
    # a host writes the setpoint and asks for a rebirth
    dcmd = psp.DCmd(timestamp=TS, metrics=(
        psp.Metric(timestamp=None, name="oven/setpoint", datatype=psp.DataType.DOUBLE,
                   value=200.0),
        psp.Metric(timestamp=None, name="faults", datatype=psp.DataType.INT32, value=-2)))
    got = sp.decode(dcmd.encode(include_dtypes=True))
    assert [(m.name, m.datatype, m.value) for m in got.metrics] == [
        ("oven/setpoint", D.Double, 200.0), ("faults", D.Int32, -2)]
    ncmd = psp.NCmd(timestamp=TS, metrics=(psp.Metric(
        timestamp=None, name=sp.NODE_CONTROL_REBIRTH, datatype=psp.DataType.BOOLEAN,
        value=True),))
    got = sp.decode(ncmd.encode(), datatypes=sp.birth_datatypes(cyphy_nbirth(7)))
    assert got.metrics == [Metric(sp.NODE_CONTROL_REBIRTH, D.Boolean, True)]
    # NDEATH: bdSeq and no seq
    nd = psp.NDeath.decode(sp.encode(Payload(timestamp=TS, metrics=[sp.bdseq_metric(7)])))
    assert (nd.bd_seq_metric.name, nd.bd_seq_metric.value) == ("bdSeq", 7)
    nd = psp.NDeath(timestamp=TS, bd_seq_metric=psp.Metric(
        timestamp=TS, name="bdSeq", datatype=psp.DataType.UINT64, value=255))
    assert sp.bdseq_of(sp.decode(nd.encode())) == 255


# --- errors -------------------------------------------------------------------------------


def one_metric(**fields: object) -> bytes:
    pb = PB(timestamp=TS)
    pb.metrics.add(**fields)
    return pb.SerializeToString()


@pytest.mark.parametrize(("data", "message"), [
    (b"\x08", "payload: field 1: truncated varint"),
    (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "longer than 64 bits"),
    (b"\x12\x05\x0a\x01", "runs past the end"),
    (b"\x0a\x00", "timestamp: wire type length-delimited, expected varint"),
    (b"\x12\x02\x08\x01", "metrics[0].name: wire type varint, expected length-delimited"),
    (b"\x0f", "invalid wire type 7"),
    (b"\x0b\x0c", "groups are not supported"),
    (b"\x00\x01", "invalid field number 0"),
    (b"\x0d\x00\x00", "truncated fixed32"),
    (one_metric(name="x", datatype=99, int_value=1), "metrics[0].datatype: unknown datatype 99"),
    (one_metric(name="x", datatype=D.Int8, string_value="1"),
     "metrics[0].value: Int8 value in string_value, expected int_value"),
    (one_metric(name="x", datatype=D.Int8, int_value=0x1234), "out of range for an Int8"),
    (one_metric(name="x", datatype=D.UInt16, int_value=0x10000), "out of range for a UInt16"),
    (one_metric(name="x", datatype=D.Double, float_value=1.0), "Double value in float_value"),
    (one_metric(name="x", datatype=D.Int64, int_value=1), "Int64 value in int_value"),
    (one_metric(name="x", datatype=D.PropertySet, int_value=1), "PropertySet value in int_value"),
    (one_metric(name="x", datatype=D.Int32Array, bytes_value=b"\x01\x02\x03"), "not a whole"),
    (one_metric(name="x", datatype=D.BooleanArray, bytes_value=b"\x09\0\0\0\xff"),
     "BooleanArray of 9 needs 2 bytes"),
    (one_metric(name="x", datatype=D.StringArray, bytes_value=b"abc"), "does not end with NUL"),
    (b"\x12\x04\x0a\x02\xc3\x28", "metrics[0].name: invalid UTF-8"),
    (b"\x12\x04\x4a\x02\x0a\x00", "metrics[0].properties: 1 keys but 0 values"),
    (one_metric(name="x", datatype=D.DataSet, dataset_value=PB.DataSet(columns=["a"])),
     "1 columns but 0 types"),
    (one_metric(name="x", datatype=D.DataSet, dataset_value=PB.DataSet(
        columns=["a"], types=[D.Bytes])), "datatype Bytes is not allowed here"),
    (one_metric(name="x", datatype=D.Template, template_value=PB.Template(
        metrics=[PB.Metric(name="y", datatype=D.Boolean, int_value=1)])),
     "metrics[0].value.metrics[0].value: Boolean value in int_value"),
])
def test_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(SparkplugError) as info:
        sp.decode(data)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def nested(levels: int, kind: str) -> bytes:
    pb = PB(timestamp=TS)
    if kind == "template":  # Metric.template_value -> Template.metrics -> Metric -> ...
        m = pb.metrics.add(name="t", datatype=D.Template)
        for _ in range(levels):
            m = m.template_value.metrics.add(name="t", datatype=D.Template)
    else:  # Metric.properties -> PropertyValue.propertyset_value -> ...
        ps = pb.metrics.add(name="p", datatype=D.Int8, int_value=1).properties
        for _ in range(levels):
            ps.keys.append("k")
            ps = ps.values.add(type=D.PropertySet).propertyset_value
    return pb.SerializeToString()


@pytest.mark.parametrize("kind", ["template", "propertyset"])
def test_nesting_limit(kind: str) -> None:
    sp.decode(nested(10, kind))
    with pytest.raises(SparkplugError, match="nested more than 32 levels"):
        sp.decode(nested(90, kind))
    with pytest.raises(SparkplugError, match="nested more than 32 levels"):
        sp.decode(nested(5000, kind)[:100_000])  # deeper than Python's recursion limit


@pytest.mark.parametrize(("metric", "message"), [
    (Metric("x", D.Int8, 128), "128 is not an Int8"),
    (Metric("x", D.Int16, -32769), "is not an Int16"),
    (Metric("x", D.Int64, 2**63), "is not an Int64"),
    (Metric("x", D.UInt8, -1), "-1 is not a UInt8"),
    (Metric("x", D.UInt64, 2**64), "is not a UInt64"),
    (Metric("x", D.Int32, True), "True is not an Int32"),
    (Metric("x", D.Int32, 1.0), "1.0 is not an Int32"),
    (Metric("x", D.Float, 1e40), "out of range for a Float"),
    (Metric("x", D.Double, "1"), "'1' is not a Double"),
    (Metric("x", D.Boolean, 1), "1 is not a Boolean"),
    (Metric("x", D.String, b"x"), "expected str, got bytes"),
    (Metric("x", D.String, "\udcff"), "not encodable as UTF-8"),
    (Metric("x", D.Bytes, "x"), "str is not Bytes"),
    (Metric("x", D.UInt8Array, [256]), "out of range for a UInt8Array"),
    (Metric("x", D.BooleanArray, [1]), "only bools"),
    (Metric("x", D.StringArray, ["a\0b"]), "cannot contain NUL"),
    (Metric("x", D.DataSet, [1]), "list is not a DataSet"),
    (Metric("x", D.DataSet, DataSet(["a"], [D.Int8], [[1, 2]])), "2 cells for 1 columns"),
    (Metric("x", D.PropertySet, sp.PropertySet()), "a metric cannot be a PropertySet"),
    (Metric("x", 99, 1), "unknown datatype 99"),  # type: ignore[arg-type]
    (Metric("x", None, -1), "without a datatype must be a uint64"),
    (Metric("x", D.Int8, 1, alias=-1), "alias: -1 is not a uint64"),
])
def test_encode_rejects(metric: Metric, message: str) -> None:
    with pytest.raises(SparkplugError) as info:
        sp.encode(Payload(metrics=[metric]))
    assert message in str(info.value), str(info.value)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(SparkplugError):
        sp.decode("spBv1.0")  # type: ignore[arg-type]
    with pytest.raises(SparkplugError):
        sp.decode(5)  # type: ignore[arg-type]


# --- fuzz ---------------------------------------------------------------------------------

SEEDS = [sp.encode(p) for p in (cyphy_nbirth(3), cyphy_dbirth(), cyphy_ddata(), cyphy_dcmd())]
SEEDS.append(sp.encode(Payload(metrics=[
    Metric("t", D.Template, Template(metrics=[Metric("d", D.DataSet, DataSet(
        ["a", "b"], [D.Int8, D.String], [[1, "x"]]))],
        parameters=[sp.TemplateParameter("p", D.Float, 1.0)])),
    Metric("ps", D.Int8Array, [1, -1], properties=sp.PropertySet({
        "l": sp.PropertyValue(D.PropertySetList, [sp.PropertySet()])})),
    Metric("b", D.BooleanArray, [True] * 9),
])))


def decode_or_error(data: bytes) -> None:
    try:
        p = sp.decode(data)
    except SparkplugError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(p, Payload)
    again = sp.encode(p)  # whatever decodes re-encodes, and is then stable
    assert sp.encode(sp.decode(again)) == again


FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    decode_or_error(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                        max_size=4), st.integers(0, 10_000))
def test_fuzz_mutated_payloads(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    decode_or_error(bytes(data[: max(cut, len(data) // 2)]))


SCALARS = {
    D.Int8: st.integers(-(2**7), 2**7 - 1), D.Int16: st.integers(-(2**15), 2**15 - 1),
    D.Int32: st.integers(-(2**31), 2**31 - 1), D.Int64: st.integers(-(2**63), 2**63 - 1),
    D.UInt8: st.integers(0, 2**8 - 1), D.UInt16: st.integers(0, 2**16 - 1),
    D.UInt32: st.integers(0, 2**32 - 1), D.UInt64: st.integers(0, 2**64 - 1),
    D.DateTime: st.integers(0, 2**64 - 1),
    D.Float: st.floats(width=32, allow_nan=False), D.Double: st.floats(allow_nan=False),
    D.Boolean: st.booleans(), D.String: st.text(), D.Text: st.text(), D.UUID: st.text(),
    D.Bytes: st.binary(), D.File: st.binary(),
    D.Int16Array: st.lists(st.integers(-(2**15), 2**15 - 1)),
    D.BooleanArray: st.lists(st.booleans()),
    D.StringArray: st.lists(st.text().filter(lambda s: "\0" not in s)),
    D.DoubleArray: st.lists(st.floats(allow_nan=False)),
}
METRICS = st.sampled_from(sorted(SCALARS)).flatmap(lambda dt: st.builds(
    Metric, st.one_of(st.none(), st.text()), st.just(dt), SCALARS[dt],
    alias=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    timestamp=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    is_historical=st.booleans(), is_transient=st.booleans()))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(METRICS, max_size=5), st.one_of(st.none(), st.integers(0, 255)))
def test_fuzz_round_trip_against_protobuf(metrics: list[Metric], seq: int | None) -> None:
    p = Payload(timestamp=TS, metrics=metrics, seq=seq)
    data = sp.encode(p)
    assert sp.decode(data) == p
    pb = PB.FromString(data)
    assert pb.SerializeToString() == data
    assert [m.datatype for m in pb.metrics] == [m.datatype for m in metrics]


DATA_METRICS = st.sampled_from(sorted(SCALARS)).flatmap(lambda dt: st.builds(
    Metric, st.none(), st.just(dt), SCALARS[dt],
    alias=st.integers(0, 2**64 - 1), timestamp=st.integers(0, 2**64 - 1),
    is_historical=st.booleans()))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(DATA_METRICS, max_size=6, unique_by=lambda m: m.alias), st.integers(0, 255))
def test_fuzz_data_messages_against_protobuf(metrics: list[Metric], seq: int) -> None:
    # DATA messages (aliases, no names, no datatypes) take the encoder's fast path for the
    # common datatypes: the same bytes as the general path and as protobuf's, and they
    # decode back with the birth's datatypes
    p = Payload(timestamp=TS, metrics=metrics, seq=seq)
    data = sp.encode(p, include_datatypes=False)
    fast = sp._encode_data_metric
    try:
        sp._encode_data_metric = lambda m: None   # type: ignore[assignment]
        assert sp.encode(p, include_datatypes=False) == data
    finally:
        sp._encode_data_metric = fast
    pb = PB.FromString(data)
    assert pb.SerializeToString() == data
    assert [(m.alias, m.is_historical) for m in pb.metrics] == \
        [(m.alias, m.is_historical) for m in metrics]
    back = sp.decode(data, datatypes={m.alias: m.datatype for m in metrics})
    assert [(m.alias, m.value) for m in back.metrics] == [(m.alias, m.value) for m in metrics]


# --- topics and STATE (4.1, 4.2) -------------------------------------------------------------


def test_topics() -> None:
    assert sp.topic("NBIRTH", "cyphy", "gw1") == "spBv1.0/cyphy/NBIRTH/gw1"
    assert sp.topic(sp.MessageType.DDATA, "cyphy", "gw1", "oven-1") == \
        "spBv1.0/cyphy/DDATA/gw1/oven-1"
    assert sp.node_topic("NCMD", "g", "e") == "spBv1.0/g/NCMD/e"
    assert sp.device_topic("DCMD", "g", "e", "d") == "spBv1.0/g/DCMD/e/d"
    assert sp.state_topic("scada") == "spBv1.0/STATE/scada"
    # ids may be any UTF-8 without + / # (spaces as in the spec's own examples)
    t = sp.topic("DBIRTH", "Sparkplug B Devices", "Raspberry Pi", "Pibrella ü")
    assert sp.parse_topic(t) == sp.Topic(sp.MessageType.DBIRTH, "Sparkplug B Devices",
                                         "Raspberry Pi", "Pibrella ü")
    for mt in sp.MessageType:
        if mt is sp.MessageType.STATE:
            continue
        device = "d" if mt in sp.DEVICE_MESSAGE_TYPES else None
        text = sp.topic(mt, "g", "e", device)
        parsed = sp.parse_topic(text)
        assert (parsed.message_type, parsed.device_id, str(parsed)) == (mt, device, text)
        assert parsed.is_device == (device is not None)
        # pysparkplug reads it the same way
        theirs = psp.Topic.from_str(text)
        assert (theirs.group_id, theirs.message_type, theirs.edge_node_id, theirs.device_id) == (
            "g", mt.value, "e", device)
    state = sp.parse_topic("spBv1.0/STATE/host 1")
    assert (state.message_type, state.host_id, str(state)) == (
        sp.MessageType.STATE, "host 1", "spBv1.0/STATE/host 1")
    # a group called STATE is still a group
    assert sp.parse_topic("spBv1.0/STATE/NDATA/e").group_id == "STATE"


@pytest.mark.parametrize("call", [
    lambda: sp.topic("NBIRTH", "a+b", "e"),
    lambda: sp.topic("NBIRTH", "g", "e#"),
    lambda: sp.topic("DDATA", "g", "e", "d/x"),
    lambda: sp.topic("NBIRTH", "", "e"),
    lambda: sp.topic("NBIRTH", "g", "e\0"),
    lambda: sp.topic("DDATA", "g", "e"),
    lambda: sp.topic("NDATA", "g", "e", "d"),
    lambda: sp.topic("STATE", "g", "e"),
    lambda: sp.topic("NFOO", "g", "e"),
    lambda: sp.state_topic("a/b"),
    lambda: sp.topic("NBIRTH", 5, "e"),  # type: ignore[arg-type]
])
def test_topic_rejects(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SparkplugError):
        call()


@pytest.mark.parametrize("text", [
    "spAv1.0/g/NBIRTH/e", "STATE/host", "spBv1.0/g/NBIRTH", "spBv1.0/g/NBIRTH/e/d",
    "spBv1.0/g/DBIRTH/e", "spBv1.0/g/NFOO/e", "spBv1.0/g/STATE/e", "spBv1.0/+/NDATA/e",
    "spBv1.0/g/NDATA/#", "spBv1.0/g/NDATA/", "spBv1.0/STATE/", "spBv1.0/STATE/a/b",
    "spBv1.0/g/DDATA/e/d/x", "",
])
def test_parse_topic_rejects(text: str) -> None:
    with pytest.raises(SparkplugError):
        sp.parse_topic(text)


def test_state_payloads() -> None:
    data = sp.encode_state(True, TS)
    assert json.loads(data) == {"online": True, "timestamp": TS}
    assert sp.decode_state(data) == sp.State(True, TS)
    # pysparkplug's STATE, and ours read by it
    assert sp.decode_state(psp.State(timestamp=TS, online=False).encode()) == sp.State(False, TS)
    theirs = psp.State.decode(sp.encode_state(False, TS))
    assert (theirs.online, theirs.timestamp) == (False, TS)
    assert sp.decode_state(b'{"timestamp": 5.0, "online": false, "x": 1}') == sp.State(False, 5)
    for bad in (b"", b"\xff", b"[]", b'{"online": 1, "timestamp": 5}', b'{"online": true}',
                b'{"online": true, "timestamp": -1}', b'{"online": true, "timestamp": NaN}',
                b'{"online": true, "timestamp": "5"}', b"[" * 100_000, b"1" * 5000):
        with pytest.raises(SparkplugError):
            sp.decode_state(bad)
    with pytest.raises(SparkplugError):
        sp.encode_state(1, TS)  # type: ignore[arg-type]


# --- seq and bdSeq --------------------------------------------------------------------------


def test_seq_counter_wraps() -> None:
    seq = sp.SeqCounter()
    assert [seq.next() for _ in range(258)] == [*range(256), 0, 1]
    assert seq.value == 2
    assert seq.reset() == 0 and seq.next() == 1
    assert sp.SeqCounter(255).next() == 255
    with pytest.raises(SparkplugError):
        sp.SeqCounter(256)


def test_bdseq() -> None:
    assert [sp.next_bdseq(x) for x in (None, 0, 254, 255)] == [0, 1, 255, 0]
    m = sp.bdseq_metric(5, TS)
    assert (m.name, m.datatype, m.value, m.timestamp) == ("bdSeq", D.Int64, 5, TS)
    assert sp.bdseq_metric(5, datatype=D.UInt64).datatype is D.UInt64
    death = sp.decode(sp.encode(Payload(timestamp=TS, metrics=[m])))
    assert sp.bdseq_of(death) == 5 and death.seq is None
    assert sp.bdseq_of(Payload()) is None
    pb = PB.FromString(sp.encode(Payload(metrics=[m])))
    assert (pb.metrics[0].datatype, pb.metrics[0].long_value) == (D.Int64, 5)
    for bad in (256, -1):
        with pytest.raises(SparkplugError):
            sp.bdseq_metric(bad)
    r = sp.rebirth_metric()
    assert (r.name, r.datatype, r.value, r.alias) == ("Node Control/Rebirth", D.Boolean, False, None)


def test_datatype_numbers_match_the_proto() -> None:
    enum = PB.DESCRIPTOR.file.enum_types_by_name["DataType"]
    assert {d.name: d.value for d in DataType} == {v.name: v.number for v in enum.values}


def test_numpy_numbers_and_short_messages() -> None:
    np = pytest.importorskip("numpy")
    p = Payload(metrics=[Metric("a", D.Int16, np.int16(-3)), Metric("b", D.Float, np.float32(1.5)),
                         Metric("c", D.UInt64, np.uint64(2**64 - 1)),
                         Metric("d", D.Int32Array, list(np.arange(-2, 2, dtype=np.int32)))])
    assert [m.value for m in sp.decode(sp.encode(p)).metrics] == [-3, 1.5, 2**64 - 1,
                                                                  [-2, -1, 0, 1]]
    with pytest.raises(SparkplugError) as info:
        sp.encode(Payload(metrics=[Metric("x", D.Double, 10**400)]))
    assert len(str(info.value)) < 100
    with pytest.raises(SparkplugError) as info:
        sp.parse_topic("x" * 10_000)
    assert len(str(info.value)) < 100
