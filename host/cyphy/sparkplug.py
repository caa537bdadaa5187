"""Sparkplug B 3.0.0: payload codec, topic namespace, STATE, seq and bdSeq (issue 16).

Written from the Eclipse Sparkplug 3.0.0 specification (section numbers below are the
specification's: chapter 4 "Topics and Messages", chapter 5 "Operational Behavior",
chapter 6 "Payloads") and the field numbers of its ``sparkplug_b.proto`` (listed in 6.4.1).
The protobuf wire format is written and read by hand (varints, fixed32/fixed64,
length-delimited); no generated code and no protobuf runtime is needed.

What ``decode`` promises: on *any* bytes it returns a ``Payload`` or raises
``SparkplugError`` (a ``ValueError``) with a one-line message that says where
(``metrics[3].value: ...``). ``encode`` raises ``SparkplugError`` the same way for values
that do not fit their datatype.

How values are carried (6.4.16, 6.4.17; the spec gives the protobuf field, not the bit
pattern, for signed types smaller than the field):

* Int8, Int16, Int32 travel in ``int_value`` (uint32) as two's complement in the type's own
  width: Int8 -1 is 0xFF, Int16 -1 is 0xFFFF, Int32 -1 is 0xFFFFFFFF. Decoding also
  accepts the form sign-extended to 32 bits (Int8 -1 as 0xFFFFFFFF), which the Eclipse
  Tahu reference implementation writes; anything else out of range is an error.
* UInt8, UInt16, UInt32 travel in ``int_value``; UInt32 is also accepted from
  ``long_value`` (Tahu writes it there).
* Int64 travels in ``long_value`` (uint64) as 64-bit two's complement; UInt64 and DateTime
  (milliseconds since the epoch, UTC) in ``long_value``.
* Float in ``float_value``, Double in ``double_value``, Boolean in ``boolean_value``;
  String, Text and UUID in ``string_value``; Bytes and File in ``bytes_value``.
* The array types (22..34) are packed little-endian into ``bytes_value``; BooleanArray is
  a 4-byte little-endian count and then the bits, most significant bit first; StringArray
  is NUL-terminated UTF-8 strings. (6.4.17's FloatArray and DoubleArray examples are
  printed big-endian; its text, Tahu and pysparkplug say little-endian, as here.)
* DataSet and Template are their own messages; PropertySet and PropertySetList are only
  property-value types.

A metric without a datatype (DATA and CMD messages SHOULD omit it, 6.4.6) decodes to
``datatype=None`` and the raw field value (``int`` unsigned, ``float``, ``bool``, ``str``,
``bytes``), unless ``decode`` is given the datatypes from the birth (``birth_datatypes``).
"""

from __future__ import annotations

import json
import math
import numbers
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from enum import Enum, IntEnum
from typing import Union

__all__ = [
    "BASIC_TYPES",
    "BDSEQ",
    "DEVICE_MESSAGE_TYPES",
    "NAMESPACE",
    "NODE_CONTROL_NEXT_SERVER",
    "NODE_CONTROL_REBIRTH",
    "NODE_CONTROL_REBOOT",
    "NODE_CONTROL_SCAN_RATE",
    "NODE_MESSAGE_TYPES",
    "PROPERTIES_HARDWARE_MAKE",
    "PROPERTIES_HARDWARE_MODEL",
    "PROPERTIES_OS",
    "PROPERTIES_OS_VERSION",
    "QUALITY",
    "DataSet",
    "DataType",
    "MessageType",
    "MetaData",
    "Metric",
    "Payload",
    "PropertySet",
    "PropertyValue",
    "Quality",
    "SeqCounter",
    "SparkplugError",
    "State",
    "Template",
    "TemplateParameter",
    "Topic",
    "bdseq_metric",
    "bdseq_of",
    "birth_datatypes",
    "decode",
    "decode_state",
    "device_topic",
    "encode",
    "encode_state",
    "next_bdseq",
    "node_topic",
    "now_ms",
    "parse_topic",
    "rebirth_metric",
    "state_topic",
    "topic",
    "validate_id",
]


class SparkplugError(ValueError):
    """A Sparkplug payload, topic or value that this module cannot encode or decode."""


# --- datatypes (6.4.16) ----------------------------------------------------------------


class DataType(IntEnum):
    """Sparkplug B datatypes, with the numbers of the spec's ``DataType`` enum (6.4.16)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


D = DataType
#: The "basic types" of 6.4.17: the only ones DataSet columns and Template parameters take.
BASIC_TYPES = frozenset(
    {D.Int8, D.Int16, D.Int32, D.Int64, D.UInt8, D.UInt16, D.UInt32, D.UInt64, D.Float,
     D.Double, D.Boolean, D.String, D.DateTime, D.Text}
)
#: What PropertyValue.type (6.4.9) and Template.Parameter.type (6.4.15) may be; Unknown
#: (0) is accepted as "untyped".
_PROPERTY_TYPES = BASIC_TYPES | {D.Unknown, D.PropertySet, D.PropertySetList}
_PARAMETER_TYPES = BASIC_TYPES | {D.Unknown}
_SIGNED_BITS = {D.Int8: 8, D.Int16: 16, D.Int32: 32}
_UNSIGNED_BITS = {D.UInt8: 8, D.UInt16: 16, D.UInt32: 32}
_STRINGS = frozenset({D.String, D.Text, D.UUID})
_ARRAY_FORMATS = {
    D.Int8Array: "b", D.Int16Array: "h", D.Int32Array: "i", D.Int64Array: "q",
    D.UInt8Array: "B", D.UInt16Array: "H", D.UInt32Array: "I", D.UInt64Array: "Q",
    D.FloatArray: "f", D.DoubleArray: "d", D.DateTimeArray: "Q",
}

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_MAX_DEPTH = 32  # nested DataSet/Template/PropertySet levels decode will follow

Scalar = Union[int, float, bool, str, bytes]
#: What a metric's ``value`` holds: a scalar, a list (array types), a DataSet, a Template.
MetricValue = Union[Scalar, list, "DataSet", "Template", None]
PropertyValueType = Union[Scalar, "PropertySet", list, None]


# --- the messages (6.4.5 .. 6.4.15) -------------------------------------------------------


@dataclass
class MetaData:
    """Metric metadata (6.4.7): every field optional, ``None`` is absent on the wire."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass
class PropertyValue:
    """One property (6.4.9): ``type`` a basic type, PropertySet (value a ``PropertySet``)
    or PropertySetList (value a list of ``PropertySet``); ``None`` when not sent."""

    type: DataType | None
    value: PropertyValueType = None
    is_null: bool = False


@dataclass
class PropertySet:
    """Custom key/value properties of a metric (6.4.8); keys in wire order, unique."""

    properties: dict[str, PropertyValue] = field(default_factory=dict)


class Quality(IntEnum):
    """Values of the 'Quality' property (Int32), 6.4.9.1."""

    BAD = 0
    GOOD = 192
    STALE = 500


@dataclass
class DataSet:
    """A table (6.4.11): column names, their basic datatypes, and rows of cells (``None``
    is a cell sent with no value). ``num_of_columns`` on the wire is ``len(columns)``."""

    columns: list[str]
    types: list[DataType]
    rows: list[list[Scalar | None]] = field(default_factory=list)


@dataclass
class TemplateParameter:
    """A template parameter (6.4.15): name, basic datatype and value."""

    name: str | None
    type: DataType | None
    value: Scalar | None = None


@dataclass
class Template:
    """A template definition or instance (6.4.14)."""

    metrics: list[Metric] = field(default_factory=list)
    parameters: list[TemplateParameter] = field(default_factory=list)
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool | None = None


@dataclass
class Metric:
    """A metric (6.4.6). ``name`` is required in births, replaced by ``alias`` in DATA/CMD
    when aliases are used; ``datatype`` ``None`` means not sent (see the module doc);
    ``timestamp`` is ms since the epoch (UTC); with ``is_null`` no value is sent."""

    name: str | None = None
    datatype: DataType | None = None
    value: MetricValue = None
    _: KW_ONLY
    alias: int | None = None
    timestamp: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    metadata: MetaData | None = None
    properties: PropertySet | None = None


@dataclass
class Payload:
    """A Sparkplug B payload (6.4.5): ``timestamp`` ms since the epoch (UTC), ``seq``
    0..255 in every Edge Node message but NDEATH, ``uuid`` and ``body`` rarely used."""

    timestamp: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# --- protobuf wire format -------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "start-group",
               4: "end-group", 5: "fixed32"}


def _put_varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_key(out: bytearray, number: int, wire: int) -> None:
    _put_varint(out, number << 3 | wire)


def _put_uint(out: bytearray, number: int, n: int) -> None:
    _put_key(out, number, _VARINT)
    _put_varint(out, n)


def _put_bytes(out: bytearray, number: int, data: bytes) -> None:
    _put_key(out, number, _LEN)
    _put_varint(out, len(data))
    out += data


def _read_varint(data: bytes, pos: int, where: object) -> tuple[int, int]:
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise SparkplugError(f"{where}: truncated varint")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise SparkplugError(f"{where}: varint longer than 64 bits")
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes, where: str) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message: ``int`` for varints,
    the raw 4 or 8 bytes for fixed32/fixed64, the contents for length-delimited fields."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise SparkplugError(f"{where}: invalid field number {number}")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos, _FieldWhere(where, number))
            yield number, wire, value
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if pos + size > end:
                raise SparkplugError(f"{where}: field {number}: truncated {_WIRE_NAMES[wire]}")
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire == _LEN:
            size, pos = _read_varint(data, pos, _FieldWhere(where, number))
            if size > end - pos:
                raise SparkplugError(f"{where}: field {number}: length {size} runs past the end "
                                     f"({end - pos} left)")
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire in (3, 4):
            raise SparkplugError(f"{where}: field {number}: protobuf groups are not supported")
        else:
            raise SparkplugError(f"{where}: field {number}: invalid wire type {wire}")


class _FieldWhere:
    """'WHERE: field N' for an error message, formatted only if one is raised (a payload
    has thousands of fields; the words are needed for none of them when it is good)."""

    __slots__ = ("where", "number")

    def __init__(self, where: str, number: int) -> None:
        self.where, self.number = where, number

    def __format__(self, spec: str) -> str:
        return f"{self.where}: field {self.number}"


def payload_seq(data: bytes) -> int | None:
    """The seq of a payload's protobuf bytes (field 3), without decoding its metrics: a
    host application that follows seq gaps reads only this. SparkplugError if malformed."""
    seq = None
    for number, wire, value in _fields(data, "payload"):
        if number == 3 and wire == _VARINT:
            seq = value  # type: ignore[assignment]
    return seq


def metric_ints(data: bytes, alias: int) -> list[int]:
    """The integer values (int_value, field 10) of the payload's metrics with this alias, in
    order, without decoding the others: e.g. a subscriber counting samples by the
    UInt32 metric each one carries. SparkplugError if malformed."""
    out: list[int] = []
    for number, wire, value in _fields(data, "payload"):
        if number != 2 or wire != _LEN:
            continue
        a = v = None
        for n, w, x in _fields(value, "metric"):  # type: ignore[arg-type]
            if n == 2 and w == _VARINT:
                a = x
            elif n == 10 and w == _VARINT:
                v = x
        if a == alias and v is not None:
            out.append(v)  # type: ignore[arg-type]
    return out


def _want(wire: int, expected: int, where: str) -> None:
    if wire != expected:
        raise SparkplugError(
            f"{where}: wire type {_WIRE_NAMES.get(wire, wire)}, expected {_WIRE_NAMES[expected]}"
        )


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SparkplugError(f"{where}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _utf8(text: str, where: str) -> bytes:
    if not isinstance(text, str):
        raise SparkplugError(f"{where}: expected str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SparkplugError(f"{where}: not encodable as UTF-8 ({exc.reason})") from None


def _short(value: object) -> str:
    """``repr(value)``, cut to keep an error message on one short line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _uint_arg(n: object, bits: int, where: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << bits:
        raise SparkplugError(f"{where}: {_short(n)} is not a uint{bits}")
    return n


# --- values: Python value <-> one of the oneof fields --------------------------------------

# The oneof members, and their field numbers in each message that has a value oneof.
_INT, _LONG, _FLOAT, _DOUBLE, _BOOL, _STRING, _BYTES, _DATASET, _TEMPLATE, _PSET, _PSETS, _EXT = (
    "int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value",
    "bytes_value", "dataset_value", "template_value", "propertyset_value",
    "propertysets_value", "extension_value",
)
_KIND_WIRE = {_INT: _VARINT, _LONG: _VARINT, _BOOL: _VARINT, _FLOAT: _I32, _DOUBLE: _I64}
_METRIC_VALUES = {10: _INT, 11: _LONG, 12: _FLOAT, 13: _DOUBLE, 14: _BOOL, 15: _STRING,
                  16: _BYTES, 17: _DATASET, 18: _TEMPLATE, 19: _EXT}
_PROPERTY_VALUES = {3: _INT, 4: _LONG, 5: _FLOAT, 6: _DOUBLE, 7: _BOOL, 8: _STRING,
                    9: _PSET, 10: _PSETS, 11: _EXT}
_DATASET_VALUES = {1: _INT, 2: _LONG, 3: _FLOAT, 4: _DOUBLE, 5: _BOOL, 6: _STRING, 7: _EXT}
_PARAMETER_VALUES = {3: _INT, 4: _LONG, 5: _FLOAT, 6: _DOUBLE, 7: _BOOL, 8: _STRING, 9: _EXT}


def _numbers(kinds: Mapping[int, str]) -> dict[str, int]:
    return {kind: number for number, kind in kinds.items()}


def _is_int(v: object) -> bool:
    """An integer but not a bool (numpy integers count: ``numbers.Integral``)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _value_to_wire(dt: DataType, value: object, where: str, depth: int) -> tuple[str, object]:
    """The oneof member and its raw value (int, float or bytes) that carry ``value``."""
    name = dt.name
    if dt in _SIGNED_BITS or dt is D.Int64:
        bits = _SIGNED_BITS.get(dt, 64)
        if not _is_int(value) or not -(1 << bits - 1) <= int(value) < 1 << bits - 1:  # type: ignore[call-overload]
            raise SparkplugError(f"{where}: {_short(value)} is not an {name}")
        return (_LONG if bits == 64 else _INT), int(value) & ((1 << bits) - 1)  # type: ignore[call-overload]
    if dt in _UNSIGNED_BITS or dt in (D.UInt64, D.DateTime):
        bits = _UNSIGNED_BITS.get(dt, 64)
        if not _is_int(value) or not 0 <= int(value) < 1 << bits:  # type: ignore[call-overload]
            raise SparkplugError(f"{where}: {_short(value)} is not a {name}")
        return (_LONG if bits == 64 else _INT), int(value)  # type: ignore[call-overload]
    if dt in (D.Float, D.Double):
        if not _is_real(value):
            raise SparkplugError(f"{where}: {_short(value)} is not a {name}")
        try:
            packed = struct.pack("<f" if dt is D.Float else "<d", float(value))  # type: ignore[arg-type]
        except (OverflowError, struct.error):
            raise SparkplugError(f"{where}: {_short(value)} is out of range for a {name}") from None
        return (_FLOAT if dt is D.Float else _DOUBLE), packed
    if dt is D.Boolean:
        if not isinstance(value, bool):
            raise SparkplugError(f"{where}: {_short(value)} is not a Boolean")
        return _BOOL, int(value)
    if dt in _STRINGS:
        return _STRING, _utf8(value, where)  # type: ignore[arg-type]
    if dt in (D.Bytes, D.File):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SparkplugError(f"{where}: {type(value).__name__} is not {name} (bytes)")
        return _BYTES, bytes(value)
    if dt in _ARRAY_FORMATS or dt in (D.BooleanArray, D.StringArray):
        return _BYTES, _pack_array(dt, value, where)
    if dt is D.DataSet:
        if not isinstance(value, DataSet):
            raise SparkplugError(f"{where}: {type(value).__name__} is not a DataSet")
        return _DATASET, _encode_dataset(value, where, depth + 1)
    if dt is D.Template:
        if not isinstance(value, Template):
            raise SparkplugError(f"{where}: {type(value).__name__} is not a Template")
        return _TEMPLATE, _encode_template(value, where, depth + 1)
    if dt is D.PropertySet:
        if not isinstance(value, PropertySet):
            raise SparkplugError(f"{where}: {type(value).__name__} is not a PropertySet")
        return _PSET, _encode_propertyset(value, where, depth + 1)
    if dt is D.PropertySetList:
        if not isinstance(value, (list, tuple)) or not all(isinstance(p, PropertySet) for p in value):
            raise SparkplugError(f"{where}: a PropertySetList is a list of PropertySet")
        out = bytearray()
        for i, pset in enumerate(value):
            _put_bytes(out, 1, _encode_propertyset(pset, f"{where}[{i}]", depth + 1))
        return _PSETS, bytes(out)
    raise SparkplugError(f"{where}: cannot encode a value of datatype {name}")


def _untyped_to_wire(value: object, where: str, depth: int) -> tuple[str, object]:
    """A value sent without a datatype: the field follows from its Python type."""
    if isinstance(value, bool):
        return _BOOL, int(value)
    if isinstance(value, int):
        if 0 <= value <= _U32:
            return _INT, value
        if 0 <= value <= _U64:
            return _LONG, value
        raise SparkplugError(f"{where}: {value} without a datatype must be a uint64")
    if isinstance(value, float):
        return _DOUBLE, struct.pack("<d", value)
    if isinstance(value, str):
        return _STRING, _utf8(value, where)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _BYTES, bytes(value)
    if isinstance(value, DataSet):
        return _value_to_wire(D.DataSet, value, where, depth)
    if isinstance(value, Template):
        return _value_to_wire(D.Template, value, where, depth)
    if isinstance(value, PropertySet):
        return _value_to_wire(D.PropertySet, value, where, depth)
    raise SparkplugError(f"{where}: cannot send a {type(value).__name__} without a datatype")


def _put_value(out: bytearray, numbers: Mapping[str, int], kind: str, raw: object,
               where: str) -> None:
    number = numbers.get(kind)
    if number is None:
        raise SparkplugError(f"{where}: this message cannot carry a {kind}")
    wire = _KIND_WIRE.get(kind, _LEN)
    if wire == _VARINT:
        _put_uint(out, number, raw)  # type: ignore[arg-type]
    elif wire == _LEN:
        _put_bytes(out, number, raw)  # type: ignore[arg-type]
    else:
        _put_key(out, number, wire)
        out += raw  # type: ignore[operator]


def _read_value(kind: str, wire: int, raw: int | bytes, where: str) -> object:
    """A oneof member's raw value: int (varints; uint32 members truncated to 32 bits as
    protobuf does), float, or the bytes of a length-delimited member (decoded later)."""
    _want(wire, _KIND_WIRE.get(kind, _LEN), where)
    if kind == _INT:
        return raw & _U32  # type: ignore[operator]
    if kind == _BOOL:
        return bool(raw)
    if kind == _FLOAT:
        return struct.unpack("<f", raw)[0]  # type: ignore[arg-type]
    if kind == _DOUBLE:
        return struct.unpack("<d", raw)[0]  # type: ignore[arg-type]
    return raw


def _value_from_wire(dt: DataType | None, kind: str, raw: object, where: str,
                     depth: int) -> object:
    """The Python value of a oneof member for datatype ``dt`` (``None``: untyped)."""
    if kind == _EXT:
        raise SparkplugError(f"{where}: extension_value is not supported")
    if dt is None or dt is D.Unknown:
        if kind == _STRING:
            return _text(raw, where)  # type: ignore[arg-type]
        if kind == _DATASET:
            return _decode_dataset(raw, where, depth + 1)  # type: ignore[arg-type]
        if kind == _TEMPLATE:
            return _decode_template(raw, where, depth + 1)  # type: ignore[arg-type]
        if kind == _PSET:
            return _decode_propertyset(raw, where, depth + 1)  # type: ignore[arg-type]
        if kind == _PSETS:
            return _decode_propertysets(raw, where, depth + 1)  # type: ignore[arg-type]
        return bytes(raw) if kind == _BYTES else raw  # type: ignore[arg-type]
    name = dt.name

    def expect(*kinds: str) -> None:
        if kind not in kinds:
            raise SparkplugError(f"{where}: {name} value in {kind}, expected {' or '.join(kinds)}")

    if dt in _SIGNED_BITS:
        expect(_INT)
        bits = _SIGNED_BITS[dt]
        n: int = raw  # type: ignore[assignment]
        if n < 1 << bits:  # the type's own width
            return n - (1 << bits) if n >> bits - 1 else n
        if n >= (1 << 32) - (1 << bits - 1):  # sign-extended to 32 bits (Tahu)
            return n - (1 << 32)
        raise SparkplugError(f"{where}: {n:#x} is out of range for an {name}")
    if dt is D.Int64:
        expect(_LONG)
        n = raw  # type: ignore[assignment]
        return n - (1 << 64) if n >> 63 else n
    if dt in _UNSIGNED_BITS:
        expect(*((_INT, _LONG) if dt is D.UInt32 else (_INT,)))
        bits = _UNSIGNED_BITS[dt]
        if raw >= 1 << bits:  # type: ignore[operator]
            raise SparkplugError(f"{where}: {raw} is out of range for a {name}")
        return raw
    if dt in (D.UInt64, D.DateTime):
        expect(_LONG)
        return raw
    if dt is D.Float:
        expect(_FLOAT)
        return raw
    if dt is D.Double:
        expect(_DOUBLE)
        return raw
    if dt is D.Boolean:
        expect(_BOOL)
        return raw
    if dt in _STRINGS:
        expect(_STRING)
        return _text(raw, where)  # type: ignore[arg-type]
    if dt in (D.Bytes, D.File):
        expect(_BYTES)
        return bytes(raw)  # type: ignore[arg-type]
    if dt in _ARRAY_FORMATS or dt in (D.BooleanArray, D.StringArray):
        expect(_BYTES)
        return _unpack_array(dt, raw, where)  # type: ignore[arg-type]
    if dt is D.DataSet:
        expect(_DATASET)
        return _decode_dataset(raw, where, depth + 1)  # type: ignore[arg-type]
    if dt is D.Template:
        expect(_TEMPLATE)
        return _decode_template(raw, where, depth + 1)  # type: ignore[arg-type]
    if dt is D.PropertySet:
        expect(_PSET)
        return _decode_propertyset(raw, where, depth + 1)  # type: ignore[arg-type]
    expect(_PSETS)  # PropertySetList, the last datatype
    return _decode_propertysets(raw, where, depth + 1)  # type: ignore[arg-type]


def _datatype(n: int, where: str, allowed: frozenset[DataType] | None = None) -> DataType:
    try:
        dt = DataType(n)
    except ValueError:
        raise SparkplugError(f"{where}: unknown datatype {n}") from None
    if allowed is not None and dt not in allowed:
        raise SparkplugError(f"{where}: datatype {dt.name} is not allowed here")
    return dt


# --- arrays (6.4.17, "Array Types") ---------------------------------------------------------


def _pack_array(dt: DataType, value: object, where: str) -> bytes:
    if not isinstance(value, (list, tuple)):
        raise SparkplugError(f"{where}: a {dt.name} value is a list, not {type(value).__name__}")
    if dt is D.BooleanArray:
        if not all(isinstance(v, bool) for v in value):
            raise SparkplugError(f"{where}: a BooleanArray holds only bools")
        bits = bytearray((len(value) + 7) // 8)
        for i, v in enumerate(value):
            if v:
                bits[i >> 3] |= 0x80 >> (i & 7)
        return struct.pack("<I", len(value)) + bytes(bits)
    if dt is D.StringArray:
        parts = [_utf8(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if any(b"\0" in p for p in parts):
            raise SparkplugError(f"{where}: a StringArray string cannot contain NUL")
        return b"".join(p + b"\0" for p in parts)
    fmt = _ARRAY_FORMATS[dt]
    check = _is_real if fmt in "fd" else _is_int
    if not all(check(v) for v in value):
        raise SparkplugError(f"{where}: a {dt.name} holds only {'numbers' if fmt in 'fd' else 'ints'}")
    try:
        return struct.pack(f"<{len(value)}{fmt}", *value)
    except (struct.error, OverflowError):
        raise SparkplugError(f"{where}: a value is out of range for a {dt.name}") from None


def _unpack_array(dt: DataType, raw: bytes, where: str) -> list:
    if dt is D.BooleanArray:
        if len(raw) < 4:
            raise SparkplugError(f"{where}: BooleanArray shorter than its 4-byte count")
        (count,) = struct.unpack_from("<I", raw)
        if len(raw) != 4 + (count + 7) // 8:
            raise SparkplugError(f"{where}: BooleanArray of {count} needs {(count + 7) // 8} bytes "
                                 f"after the count, has {len(raw) - 4}")
        return [bool(raw[4 + (i >> 3)] & (0x80 >> (i & 7))) for i in range(count)]
    if dt is D.StringArray:
        if not raw:
            return []
        if raw[-1:] != b"\0":
            raise SparkplugError(f"{where}: StringArray does not end with NUL")
        return [_text(p, where) for p in raw[:-1].split(b"\0")]
    fmt = _ARRAY_FORMATS[dt]
    size = struct.calcsize(fmt)
    if len(raw) % size:
        raise SparkplugError(f"{where}: {len(raw)} bytes is not a whole {dt.name} ({size} B each)")
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))


# --- messages: encode ---------------------------------------------------------------------

_METRIC_NUMBERS = _numbers(_METRIC_VALUES)
_PROPERTY_NUMBERS = _numbers(_PROPERTY_VALUES)
_DATASET_NUMBERS = _numbers(_DATASET_VALUES)
_PARAMETER_NUMBERS = _numbers(_PARAMETER_VALUES)


def _check_depth(depth: int, where: str) -> None:
    if depth > _MAX_DEPTH:
        raise SparkplugError(f"{where}: nested more than {_MAX_DEPTH} levels deep")


def _as_datatype(dt: object, where: str) -> DataType:
    if isinstance(dt, bool) or not isinstance(dt, int):
        raise SparkplugError(f"{where}: datatype {_short(dt)} is not a DataType")
    return _datatype(dt, where)


def _typed_value(dt: DataType | None, value: object, where: str, depth: int) -> tuple[str, object]:
    if dt is None or dt == D.Unknown:
        return _untyped_to_wire(value, where, depth)
    return _value_to_wire(_as_datatype(dt, where), value, where, depth)


def _encode_metadata(m: MetaData, where: str) -> bytes:
    out = bytearray()
    if m.is_multi_part is not None:
        _put_uint(out, 1, int(bool(m.is_multi_part)))
    if m.content_type is not None:
        _put_bytes(out, 2, _utf8(m.content_type, f"{where}.content_type"))
    if m.size is not None:
        _put_uint(out, 3, _uint_arg(m.size, 64, f"{where}.size"))
    if m.seq is not None:
        _put_uint(out, 4, _uint_arg(m.seq, 64, f"{where}.seq"))
    for number, name in ((5, "file_name"), (6, "file_type"), (7, "md5"), (8, "description")):
        text = getattr(m, name)
        if text is not None:
            _put_bytes(out, number, _utf8(text, f"{where}.{name}"))
    return bytes(out)


def _encode_propertyvalue(pv: PropertyValue, where: str, depth: int) -> bytes:
    out = bytearray()
    if pv.type is not None:
        dt = _as_datatype(pv.type, f"{where}.type")
        if dt not in _PROPERTY_TYPES:
            raise SparkplugError(f"{where}: a property value cannot be a {dt.name}")
        _put_uint(out, 1, int(dt))
    if pv.is_null:
        _put_uint(out, 2, 1)
    elif pv.value is not None:
        kind, raw = _typed_value(pv.type, pv.value, where, depth)
        _put_value(out, _PROPERTY_NUMBERS, kind, raw, where)
    return bytes(out)


def _encode_propertyset(ps: PropertySet, where: str, depth: int) -> bytes:
    _check_depth(depth, where)
    out = bytearray()
    for key in ps.properties:
        _put_bytes(out, 1, _utf8(key, f"{where}.keys"))
    for key, pv in ps.properties.items():
        _put_bytes(out, 2, _encode_propertyvalue(pv, f"{where}[{_short(key)}]", depth))
    return bytes(out)


def _encode_dataset(ds: DataSet, where: str, depth: int) -> bytes:
    _check_depth(depth, where)
    if len(ds.columns) != len(ds.types):
        raise SparkplugError(f"{where}: {len(ds.columns)} columns but {len(ds.types)} types")
    for i, t in enumerate(ds.types):
        if _as_datatype(t, f"{where}.types[{i}]") not in BASIC_TYPES:
            raise SparkplugError(f"{where}.types[{i}]: a DataSet column cannot be {DataType(t).name}")
    out = bytearray()
    _put_uint(out, 1, len(ds.columns))
    for i, col in enumerate(ds.columns):
        _put_bytes(out, 2, _utf8(col, f"{where}.columns[{i}]"))
    for t in ds.types:
        _put_uint(out, 3, int(t))
    for r, row in enumerate(ds.rows):
        if len(row) != len(ds.types):
            raise SparkplugError(f"{where}.rows[{r}]: {len(row)} cells for {len(ds.types)} columns")
        row_out = bytearray()
        for c, (t, cell) in enumerate(zip(ds.types, row)):
            cell_out = bytearray()
            if cell is not None:
                here = f"{where}.rows[{r}][{c}]"
                kind, raw = _value_to_wire(DataType(t), cell, here, depth)
                _put_value(cell_out, _DATASET_NUMBERS, kind, raw, here)
            _put_bytes(row_out, 1, bytes(cell_out))
        _put_bytes(out, 4, bytes(row_out))
    return bytes(out)


def _encode_template(t: Template, where: str, depth: int) -> bytes:
    _check_depth(depth, where)
    out = bytearray()
    if t.version is not None:
        _put_bytes(out, 1, _utf8(t.version, f"{where}.version"))
    for i, m in enumerate(t.metrics):
        _put_bytes(out, 2, _encode_metric(m, f"{where}.metrics[{i}]", depth, True))
    for i, p in enumerate(t.parameters):
        here = f"{where}.parameters[{i}]"
        p_out = bytearray()
        if p.name is not None:
            _put_bytes(p_out, 1, _utf8(p.name, f"{here}.name"))
        if p.type is not None:
            dt = _as_datatype(p.type, f"{here}.type")
            if dt not in _PARAMETER_TYPES:
                raise SparkplugError(f"{here}: a template parameter cannot be {dt.name}")
            _put_uint(p_out, 2, int(dt))
        if p.value is not None:
            kind, raw = _typed_value(p.type, p.value, here, depth)
            _put_value(p_out, _PARAMETER_NUMBERS, kind, raw, here)
        _put_bytes(out, 3, bytes(p_out))
    if t.template_ref is not None:
        _put_bytes(out, 4, _utf8(t.template_ref, f"{where}.template_ref"))
    if t.is_definition is not None:
        _put_uint(out, 5, int(bool(t.is_definition)))
    return bytes(out)


_U64_LIMIT = 1 << 64
_PACK_DOUBLE = struct.Struct("<d").pack


def _encode_data_metric(m: Metric) -> bytes | None:
    """The metric of a DATA message as a gateway sends thousands a second (alias,
    timestamp, maybe is_historical, a Double, String, Boolean, UInt32 or UInt64 value):
    the same bytes as the general path, without its per-field bookkeeping. None: not such
    a metric, or a value the general path must judge (it encodes it or says why not)."""
    a, ts, v, dt = m.alias, m.timestamp, m.value, m.datatype
    if type(a) is not int or type(ts) is not int or not 0 <= a < _U64_LIMIT \
            or not 0 <= ts < _U64_LIMIT:
        return None
    out = bytearray(b"\x10")                 # alias (2), varint
    _put_varint(out, a)
    out.append(0x18)                         # timestamp (3), varint
    _put_varint(out, ts)
    if m.is_historical:
        out += b"\x28\x01"                   # is_historical (5) = true
    t = type(v)
    if dt is D.Double and t is float:
        out.append(13 << 3 | _I64)
        out += _PACK_DOUBLE(v)
    elif dt is D.String and t is str:
        try:
            b = v.encode()
        except UnicodeEncodeError:
            return None
        out.append(15 << 3 | _LEN)
        _put_varint(out, len(b))
        out += b
    elif dt is D.Boolean and t is bool:
        out += b"\x70\x01" if v else b"\x70\x00"
    elif dt is D.UInt32 and t is int and 0 <= v < 1 << 32:
        out.append(10 << 3 | _VARINT)
        _put_varint(out, v)
    elif dt is D.UInt64 and t is int and 0 <= v < _U64_LIMIT:
        out.append(11 << 3 | _VARINT)
        _put_varint(out, v)
    else:
        return None
    return bytes(out)


def _encode_metric(m: Metric, where: str, depth: int, include_datatype: bool) -> bytes:
    if m.name is None and not include_datatype and m.metadata is None \
            and m.properties is None and not m.is_null and not m.is_transient:
        fast = _encode_data_metric(m)
        if fast is not None:
            return fast
    out = bytearray()
    if m.name is not None:
        _put_bytes(out, 1, _utf8(m.name, f"{where}.name"))
    if m.alias is not None:
        _put_uint(out, 2, _uint_arg(m.alias, 64, f"{where}.alias"))
    if m.timestamp is not None:
        _put_uint(out, 3, _uint_arg(m.timestamp, 64, f"{where}.timestamp"))
    if m.datatype is not None and include_datatype:
        _put_uint(out, 4, int(_as_datatype(m.datatype, f"{where}.datatype")))
    if m.is_historical:
        _put_uint(out, 5, 1)
    if m.is_transient:
        _put_uint(out, 6, 1)
    if m.is_null:
        _put_uint(out, 7, 1)
    if m.metadata is not None:
        _put_bytes(out, 8, _encode_metadata(m.metadata, f"{where}.metadata"))
    if m.properties is not None:
        _put_bytes(out, 9, _encode_propertyset(m.properties, f"{where}.properties", depth + 1))
    if m.value is not None and not m.is_null:
        here = f"{where}.value"
        if m.datatype in (D.PropertySet, D.PropertySetList):
            raise SparkplugError(f"{here}: a metric cannot be a {m.datatype.name}")  # type: ignore[union-attr]
        kind, raw = _typed_value(m.datatype, m.value, here, depth)
        _put_value(out, _METRIC_NUMBERS, kind, raw, here)
    return bytes(out)


def encode(payload: Payload, *, include_datatypes: bool = True) -> bytes:
    """The protobuf bytes of ``payload`` (6.4.1 schema, 6.4.5 Payload, 6.4.6 Metric).

    Values are checked against their metric's datatype (range, type) and carried as the
    module doc says. ``include_datatypes=False`` leaves the metrics' datatype fields out
    (values are still encoded by datatype): 6.4.6 says NDATA, DDATA, NCMD and DCMD SHOULD
    NOT include datatypes; a receiver then needs the birth (``decode(..., datatypes=)``).
    Raises ``SparkplugError`` for a value that does not fit.
    """
    out = bytearray()
    if payload.timestamp is not None:
        _put_uint(out, 1, _uint_arg(payload.timestamp, 64, "timestamp"))
    for i, m in enumerate(payload.metrics):
        if not isinstance(m, Metric):
            raise SparkplugError(f"metrics[{i}]: {type(m).__name__} is not a Metric")
        _put_bytes(out, 2, _encode_metric(m, f"metrics[{i}]", 0, include_datatypes))
    if payload.seq is not None:
        _put_uint(out, 3, _uint_arg(payload.seq, 64, "seq"))
    if payload.uuid is not None:
        _put_bytes(out, 4, _utf8(payload.uuid, "uuid"))
    if payload.body is not None:
        if not isinstance(payload.body, (bytes, bytearray, memoryview)):
            raise SparkplugError(f"body: {type(payload.body).__name__} is not bytes")
        _put_bytes(out, 5, bytes(payload.body))
    return bytes(out)


# --- messages: decode ---------------------------------------------------------------------
# Protobuf rules kept: fields in any order, unknown field numbers skipped, the last of a
# repeated singular field wins (also for the value oneof). Stricter than protobuf: a known
# field with the wrong wire type is an error (protobuf would keep it as an unknown field),
# and a repeated singular message field is replaced, not merged.


def _decode_metadata(data: bytes, where: str) -> MetaData:
    m = MetaData()
    strings = {2: "content_type", 5: "file_name", 6: "file_type", 7: "md5", 8: "description"}
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _VARINT, f"{where}.is_multi_part")
            m.is_multi_part = bool(raw)
        elif number in (3, 4):
            name = "size" if number == 3 else "seq"
            _want(wire, _VARINT, f"{where}.{name}")
            setattr(m, name, raw)
        elif number in strings:
            _want(wire, _LEN, f"{where}.{strings[number]}")
            setattr(m, strings[number], _text(raw, f"{where}.{strings[number]}"))  # type: ignore[arg-type]
    return m


def _decode_oneof(kinds: Mapping[int, str], number: int, wire: int, raw: int | bytes,
                  where: str) -> tuple[str, object]:
    kind = kinds[number]
    return kind, _read_value(kind, wire, raw, f"{where}.{kind}")


def _decode_propertyvalue(data: bytes, where: str, depth: int) -> PropertyValue:
    type_n: int | None = None
    is_null = False
    value: tuple[str, object] | None = None
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _VARINT, f"{where}.type")
            type_n = raw & _U32  # type: ignore[operator]
        elif number == 2:
            _want(wire, _VARINT, f"{where}.is_null")
            is_null = bool(raw)
        elif number in _PROPERTY_VALUES:
            value = _decode_oneof(_PROPERTY_VALUES, number, wire, raw, where)
    dt = None if type_n is None else _datatype(type_n, f"{where}.type", _PROPERTY_TYPES)
    if is_null or value is None:
        return PropertyValue(dt, None, is_null)
    return PropertyValue(dt, _value_from_wire(dt, *value, f"{where}.value", depth), False)


def _decode_propertyset(data: bytes, where: str, depth: int) -> PropertySet:
    _check_depth(depth, where)
    keys: list[str] = []
    values: list[PropertyValue] = []
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _LEN, f"{where}.keys")
            keys.append(_text(raw, f"{where}.keys[{len(keys)}]"))  # type: ignore[arg-type]
        elif number == 2:
            _want(wire, _LEN, f"{where}.values")
            values.append(_decode_propertyvalue(raw, f"{where}.values[{len(values)}]", depth))  # type: ignore[arg-type]
    if len(keys) != len(values):
        raise SparkplugError(f"{where}: {len(keys)} keys but {len(values)} values")
    props = dict(zip(keys, values))
    if len(props) != len(keys):
        raise SparkplugError(f"{where}: duplicate keys")
    return PropertySet(props)


def _decode_propertysets(data: bytes, where: str, depth: int) -> list[PropertySet]:
    _check_depth(depth, where)
    out = []
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _LEN, f"{where}.propertyset")
            out.append(_decode_propertyset(raw, f"{where}[{len(out)}]", depth + 1))  # type: ignore[arg-type]
    return out


def _decode_dataset(data: bytes, where: str, depth: int) -> DataSet:
    _check_depth(depth, where)
    num: int | None = None
    columns: list[str] = []
    type_ns: list[int] = []
    raw_rows: list[bytes] = []
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _VARINT, f"{where}.num_of_columns")
            num = raw  # type: ignore[assignment]
        elif number == 2:
            _want(wire, _LEN, f"{where}.columns")
            columns.append(_text(raw, f"{where}.columns[{len(columns)}]"))  # type: ignore[arg-type]
        elif number == 3:
            if wire == _LEN:  # packed repeated uint32
                pos, packed = 0, raw
                while pos < len(packed):  # type: ignore[arg-type]
                    n, pos = _read_varint(packed, pos, f"{where}.types")  # type: ignore[arg-type]
                    type_ns.append(n & _U32)
            else:
                _want(wire, _VARINT, f"{where}.types")
                type_ns.append(raw & _U32)  # type: ignore[operator]
        elif number == 4:
            _want(wire, _LEN, f"{where}.rows")
            raw_rows.append(raw)  # type: ignore[arg-type]
    types = [_datatype(n, f"{where}.types[{i}]", BASIC_TYPES) for i, n in enumerate(type_ns)]
    if len(columns) != len(types):
        raise SparkplugError(f"{where}: {len(columns)} columns but {len(types)} types")
    if num is not None and num != len(types):
        raise SparkplugError(f"{where}: num_of_columns {num} but {len(types)} types")
    rows: list[list[Scalar | None]] = []
    for r, row_data in enumerate(raw_rows):
        here = f"{where}.rows[{r}]"
        cells: list[Scalar | None] = []
        for number, wire, raw in _fields(row_data, here):
            if number != 1:
                continue
            _want(wire, _LEN, f"{here}.elements")
            c = len(cells)
            if c >= len(types):
                raise SparkplugError(f"{here}: more cells than the {len(types)} columns")
            value: tuple[str, object] | None = None
            for n2, w2, raw2 in _fields(raw, f"{here}[{c}]"):  # type: ignore[arg-type]
                if n2 in _DATASET_VALUES:
                    value = _decode_oneof(_DATASET_VALUES, n2, w2, raw2, f"{here}[{c}]")
            cells.append(None if value is None
                         else _value_from_wire(types[c], *value, f"{here}[{c}]", depth))  # type: ignore[arg-type]
        if len(cells) != len(types):
            raise SparkplugError(f"{here}: {len(cells)} cells for {len(types)} columns")
        rows.append(cells)
    return DataSet(columns, types, rows)


def _decode_parameter(data: bytes, where: str, depth: int) -> TemplateParameter:
    name: str | None = None
    type_n: int | None = None
    value: tuple[str, object] | None = None
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _LEN, f"{where}.name")
            name = _text(raw, f"{where}.name")  # type: ignore[arg-type]
        elif number == 2:
            _want(wire, _VARINT, f"{where}.type")
            type_n = raw & _U32  # type: ignore[operator]
        elif number in _PARAMETER_VALUES:
            value = _decode_oneof(_PARAMETER_VALUES, number, wire, raw, where)
    dt = None if type_n is None else _datatype(type_n, f"{where}.type", _PARAMETER_TYPES)
    v = None if value is None else _value_from_wire(dt, *value, f"{where}.value", depth)
    return TemplateParameter(name, dt, v)  # type: ignore[arg-type]


def _decode_template(data: bytes, where: str, depth: int) -> Template:
    _check_depth(depth, where)
    t = Template()
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _LEN, f"{where}.version")
            t.version = _text(raw, f"{where}.version")  # type: ignore[arg-type]
        elif number == 2:
            _want(wire, _LEN, f"{where}.metrics")
            here = f"{where}.metrics[{len(t.metrics)}]"
            t.metrics.append(_decode_metric(raw, here, depth, None))  # type: ignore[arg-type]
        elif number == 3:
            _want(wire, _LEN, f"{where}.parameters")
            here = f"{where}.parameters[{len(t.parameters)}]"
            t.parameters.append(_decode_parameter(raw, here, depth))  # type: ignore[arg-type]
        elif number == 4:
            _want(wire, _LEN, f"{where}.template_ref")
            t.template_ref = _text(raw, f"{where}.template_ref")  # type: ignore[arg-type]
        elif number == 5:
            _want(wire, _VARINT, f"{where}.is_definition")
            t.is_definition = bool(raw)
    return t


def _decode_metric(data: bytes, where: str, depth: int,
                   datatypes: Mapping[str | int, DataType] | None) -> Metric:
    m = Metric()
    datatype_n: int | None = None
    value: tuple[str, object] | None = None
    for number, wire, raw in _fields(data, where):
        if number == 1:
            _want(wire, _LEN, f"{where}.name")
            m.name = _text(raw, f"{where}.name")  # type: ignore[arg-type]
        elif number in (2, 3):
            name = "alias" if number == 2 else "timestamp"
            _want(wire, _VARINT, f"{where}.{name}")
            setattr(m, name, raw)
        elif number == 4:
            _want(wire, _VARINT, f"{where}.datatype")
            datatype_n = raw & _U32  # type: ignore[operator]
        elif number in (5, 6, 7):
            name = {5: "is_historical", 6: "is_transient", 7: "is_null"}[number]
            _want(wire, _VARINT, f"{where}.{name}")
            setattr(m, name, bool(raw))
        elif number == 8:
            _want(wire, _LEN, f"{where}.metadata")
            m.metadata = _decode_metadata(raw, f"{where}.metadata")  # type: ignore[arg-type]
        elif number == 9:
            _want(wire, _LEN, f"{where}.properties")
            m.properties = _decode_propertyset(raw, f"{where}.properties", depth + 1)  # type: ignore[arg-type]
        elif number in _METRIC_VALUES:
            value = _decode_oneof(_METRIC_VALUES, number, wire, raw, where)
    if datatype_n is not None:
        m.datatype = _datatype(datatype_n, f"{where}.datatype")
    elif datatypes:
        if m.alias is not None and m.alias in datatypes:
            m.datatype = datatypes[m.alias]
        elif m.name is not None and m.name in datatypes:
            m.datatype = datatypes[m.name]
    if value is not None and not m.is_null:
        m.value = _value_from_wire(m.datatype, *value, f"{where}.value", depth)  # type: ignore[arg-type]
    return m


def decode(data: bytes | bytearray | memoryview, *,
           datatypes: Mapping[str | int, DataType] | None = None) -> Payload:
    """The ``Payload`` in protobuf bytes (6.4.1 schema, 6.4.5 Payload, 6.4.6 Metric).

    ``datatypes`` (from ``birth_datatypes``) types the metrics that arrive without a
    datatype, by alias and then by name; other untyped metrics keep the raw field value.
    A metric with ``is_null`` set decodes to ``value=None`` even if a value was sent.
    Raises ``SparkplugError``, and nothing else, for bytes that are not such a payload.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SparkplugError(f"cannot decode a {type(data).__name__}, only bytes")
    data = bytes(data)
    p = Payload()
    for number, wire, raw in _fields(data, "payload"):
        if number in (1, 3):
            name = "timestamp" if number == 1 else "seq"
            _want(wire, _VARINT, name)
            setattr(p, name, raw)
        elif number == 2:
            _want(wire, _LEN, "metrics")
            here = f"metrics[{len(p.metrics)}]"
            p.metrics.append(_decode_metric(raw, here, 0, datatypes))  # type: ignore[arg-type]
        elif number == 4:
            _want(wire, _LEN, "uuid")
            p.uuid = _text(raw, "uuid")  # type: ignore[arg-type]
        elif number == 5:
            _want(wire, _LEN, "body")
            p.body = bytes(raw)  # type: ignore[arg-type]
    return p


def birth_datatypes(birth: Payload) -> dict[str | int, DataType]:
    """Datatype by metric name and by alias, from an NBIRTH or DBIRTH (6.4.6: births carry
    name, alias and datatype; DATA and CMD messages may carry only the alias)."""
    out: dict[str | int, DataType] = {}
    for m in birth.metrics:
        if m.datatype is None:
            continue
        if m.name is not None:
            out[m.name] = m.datatype
        if m.alias is not None:
            out[m.alias] = m.datatype
    return out


# --- topics (4.1, 4.2) -------------------------------------------------------------------

NAMESPACE = "spBv1.0"  # 4.1.1, Sparkplug B


class MessageType(str, Enum):
    """The message_type topic element (4.1.3)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"
    STATE = "STATE"

    def __str__(self) -> str:
        return self.value


NODE_MESSAGE_TYPES = frozenset({MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA,
                                MessageType.NCMD})
DEVICE_MESSAGE_TYPES = frozenset({MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA,
                                  MessageType.DCMD})


def validate_id(value: str, what: str = "id") -> str:
    """``value`` if it can be a group_id, edge_node_id, device_id or host id: a non-empty
    UTF-8 string without '+', '/' or '#' (4.1.2, 4.1.4, 4.1.5) and without NUL (MQTT).
    Non-empty is this module's rule: an empty id would be an empty topic level."""
    if not isinstance(value, str):
        raise SparkplugError(f"{what}: expected str, got {type(value).__name__}")
    if not value:
        raise SparkplugError(f"{what}: empty")
    bad = sorted({c for c in value if c in "+/#\0"})
    if bad:
        raise SparkplugError(f"{what} {_short(value)}: contains reserved {''.join(bad)!r}")
    _utf8(value, what)
    return value


def _message_type(message_type: MessageType | str) -> MessageType:
    try:
        return MessageType(message_type)
    except ValueError:
        raise SparkplugError(f"unknown message type {_short(message_type)}") from None


@dataclass(frozen=True)
class Topic:
    """A parsed Sparkplug topic: an Edge Node or Device topic (``group_id``,
    ``edge_node_id``, ``device_id`` for D* types), or STATE (``host_id``)."""

    message_type: MessageType
    group_id: str | None = None
    edge_node_id: str | None = None
    device_id: str | None = None
    host_id: str | None = None

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return state_topic(self.host_id)  # type: ignore[arg-type]
        return topic(self.message_type, self.group_id, self.edge_node_id, self.device_id)  # type: ignore[arg-type]

    @property
    def is_device(self) -> bool:
        return self.message_type in DEVICE_MESSAGE_TYPES


def topic(message_type: MessageType | str, group_id: str, edge_node_id: str,
          device_id: str | None = None) -> str:
    """``spBv1.0/group_id/message_type/edge_node_id[/device_id]`` (4.1); device_id is
    required for DBIRTH, DDEATH, DDATA, DCMD and not allowed for the N* types (4.1.5).
    STATE topics: ``state_topic``."""
    mt = _message_type(message_type)
    if mt is MessageType.STATE:
        raise SparkplugError("STATE topics are spBv1.0/STATE/<host_id>: use state_topic()")
    parts = [NAMESPACE, validate_id(group_id, "group_id"), mt.value,
             validate_id(edge_node_id, "edge_node_id")]
    if mt in DEVICE_MESSAGE_TYPES:
        if device_id is None:
            raise SparkplugError(f"{mt.value} topics need a device_id")
        parts.append(validate_id(device_id, "device_id"))
    elif device_id is not None:
        raise SparkplugError(f"{mt.value} topics have no device_id")
    return "/".join(parts)


def node_topic(message_type: MessageType | str, group_id: str, edge_node_id: str) -> str:
    """An Edge Node topic (NBIRTH, NDEATH, NDATA, NCMD), 4.2.1."""
    return topic(message_type, group_id, edge_node_id)


def device_topic(message_type: MessageType | str, group_id: str, edge_node_id: str,
                 device_id: str) -> str:
    """A Device topic (DBIRTH, DDEATH, DDATA, DCMD), 4.2.2."""
    return topic(message_type, group_id, edge_node_id, device_id)


def state_topic(host_id: str) -> str:
    """``spBv1.0/STATE/<host_id>``, the Host Application's STATE topic (4.2.3)."""
    return f"{NAMESPACE}/STATE/{validate_id(host_id, 'host_id')}"


def parse_topic(text: str) -> Topic:
    """The ``Topic`` of a Sparkplug B topic name; ``SparkplugError`` if it is not one
    (4.1; Sparkplug 2.x's ``STATE/<host_id>`` without the namespace is not accepted)."""
    if not isinstance(text, str):
        raise SparkplugError(f"topic: expected str, got {type(text).__name__}")
    parts = text.split("/")
    if parts[0] != NAMESPACE:
        raise SparkplugError(f"topic {_short(text)}: does not start with {NAMESPACE}/")
    if len(parts) == 3 and parts[1] == "STATE":
        return Topic(MessageType.STATE, host_id=validate_id(parts[2], "host_id"))
    if len(parts) not in (4, 5):
        raise SparkplugError(f"topic {_short(text)}: {len(parts)} levels, expected 4 or 5 "
                             f"(or spBv1.0/STATE/<host_id>)")
    try:
        mt = MessageType(parts[2])
    except ValueError:
        raise SparkplugError(f"topic {_short(text)}: unknown message type {_short(parts[2])}") from None
    if mt is MessageType.STATE:
        raise SparkplugError(f"topic {_short(text)}: STATE topics are spBv1.0/STATE/<host_id>")
    want = 5 if mt in DEVICE_MESSAGE_TYPES else 4
    if len(parts) != want:
        raise SparkplugError(f"topic {_short(text)}: a {mt.value} topic has {want} levels")
    return Topic(mt, validate_id(parts[1], "group_id"), validate_id(parts[3], "edge_node_id"),
                 validate_id(parts[4], "device_id") if want == 5 else None)


# --- STATE payloads (4.2.3, 6.4.27) ------------------------------------------------------


@dataclass(frozen=True)
class State:
    """A Host Application's STATE: online or not, and the timestamp (ms, UTC) of its
    MQTT CONNECT's Will Message (birth and death carry the same one)."""

    online: bool
    timestamp: int


def encode_state(online: bool, timestamp: int) -> bytes:
    """The STATE payload: UTF-8 JSON ``{"online": bool, "timestamp": ms}`` (4.2.3.1.2,
    4.2.3.2.2); Sparkplug B protobuf is not used for STATE."""
    if not isinstance(online, bool):
        raise SparkplugError(f"STATE online: {_short(online)} is not a bool")
    _uint_arg(timestamp, 64, "STATE timestamp")
    return json.dumps({"online": online, "timestamp": timestamp}, separators=(",", ":")).encode()


def decode_state(data: bytes | bytearray | memoryview) -> State:
    """The ``State`` in a STATE payload; ``SparkplugError`` unless it is a JSON object with
    a boolean ``online`` and a non-negative integral ``timestamp`` (other keys ignored)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SparkplugError(f"STATE payload: a {type(data).__name__}, not bytes")
    text = _text(bytes(data), "STATE payload")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SparkplugError(f"STATE payload: not JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise SparkplugError("STATE payload: not a JSON object")
    online, ts = obj.get("online"), obj.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugError(f"STATE payload: online is {_short(online)}, not a boolean")
    if isinstance(ts, float) and math.isfinite(ts) and ts.is_integer():
        ts = int(ts)
    if not _is_int(ts) or ts < 0:  # type: ignore[operator]
        raise SparkplugError(f"STATE payload: timestamp is {_short(ts)}, not ms since the epoch")
    return State(online, ts)  # type: ignore[arg-type]


# --- seq, bdSeq and well-known metrics -----------------------------------------------------

#: 5.4 (Edge Node Session Establishment): the Will Message's and NBIRTH's bdSeq metric.
BDSEQ = "bdSeq"
#: 4.2.1.1.2 and 5.17: every NBIRTH carries it (Boolean false, no alias); NCMD true asks for
#: a rebirth.
NODE_CONTROL_REBIRTH = "Node Control/Rebirth"
#: 4.2.1.1.2: examples of further Node Control metrics.
NODE_CONTROL_REBOOT = "Node Control/Reboot"
NODE_CONTROL_NEXT_SERVER = "Node Control/Next Server"
NODE_CONTROL_SCAN_RATE = "Node Control/Scan Rate"
#: 4.2.1.1.2: examples of Edge Node property metrics.
PROPERTIES_HARDWARE_MAKE = "Properties/Hardware Make"
PROPERTIES_HARDWARE_MODEL = "Properties/Hardware Model"
PROPERTIES_OS = "Properties/OS"
PROPERTIES_OS_VERSION = "Properties/OS Version"
#: 6.4.9.1: the property key of a metric's quality (Int32, a ``Quality``).
QUALITY = "Quality"


def now_ms() -> int:
    """Milliseconds since the epoch, UTC: Sparkplug's timestamps (5.1, 6.4.5)."""
    return time.time_ns() // 1_000_000


class SeqCounter:
    """The Edge Node's message sequence number (6.4.5 ``seq``; 4.2): NBIRTH carries 0
    (``reset``), each later message of the node and its devices one more, 255 wraps to 0.
    NDEATH carries none."""

    def __init__(self, start: int = 0) -> None:
        self._next = _uint_arg(start, 8, "seq")

    @property
    def value(self) -> int:
        """The seq the next message will carry."""
        return self._next

    def next(self) -> int:
        """The seq for the message about to be sent; the counter moves on."""
        seq = self._next
        self._next = (seq + 1) & 0xFF
        return seq

    def reset(self) -> int:
        """Start again for an NBIRTH: returns 0 (the NBIRTH's seq), the next is 1."""
        self._next = 0
        return self.next()


def next_bdseq(previous: int | None) -> int:
    """The bdSeq for a new MQTT CONNECT: 0 first, then one more than the previous, 255
    wraps to 0 (5.4; 6.4.25 NDEATH)."""
    return 0 if previous is None else (_uint_arg(previous, 8, "bdSeq") + 1) & 0xFF


def bdseq_metric(value: int, timestamp: int | None = None,
                 datatype: DataType = DataType.Int64) -> Metric:
    """The bdSeq metric for the NDEATH Will Message and the NBIRTH. 5.4 (normative) says
    Int64; the 6.4.25 NDEATH example shows UInt64, hence ``datatype``."""
    if datatype not in (DataType.Int64, DataType.UInt64):
        raise SparkplugError(f"bdSeq: datatype {_short(datatype)} is not Int64 or UInt64")
    return Metric(BDSEQ, datatype, _uint_arg(value, 8, "bdSeq"), timestamp=timestamp)


def bdseq_of(payload: Payload) -> int | None:
    """The bdSeq in an NBIRTH or NDEATH (Int64 or UInt64, or untyped); ``None`` if absent."""
    for m in payload.metrics:
        if m.name == BDSEQ and m.datatype in (DataType.Int64, DataType.UInt64, None):
            if _is_int(m.value):
                return m.value  # type: ignore[return-value]
    return None


def rebirth_metric(value: bool = False, timestamp: int | None = None) -> Metric:
    """'Node Control/Rebirth' (Boolean, no alias): false in an NBIRTH, true in the NCMD a
    Host Application sends to ask for a rebirth (5.17)."""
    return Metric(NODE_CONTROL_REBIRTH, DataType.Boolean, value, timestamp=timestamp)
