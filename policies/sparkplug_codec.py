"""Sparkplug B payloads: the Eclipse Tahu schema (``sparkplug_b.proto``) behind one module.

`protobuf` lives here and nowhere else (ADR 0110). The relay decodes every Sparkplug payload
with `decode_sparkplug`; the edge gateway builds its births, data and deaths with `encode_sparkplug`. Both sides
import this module, so it sits in `policies` (pure: no I/O), next to the topic grammar and the
checks in `policies.sparkplug`.

The schema is written here from the published specification (Sparkplug 3.0, chapter 6
"Payloads", and its ``sparkplug_b.proto``: package ``org.eclipse.tahu.protobuf``, proto2), as a
table turned into a descriptor at import time, in a pool of its own: no generated code, no
``protoc`` at build time, and no clash with another copy of the schema registered in the
default pool (a Sparkplug library in the same process, as in the tests).

Parsing is protobuf's own (upb, in C). What it accepts is bounded before it runs: the caller
checks the size first, and protobuf's recursion limit (100 messages deep) bounds the nesting
of templates, data sets and property sets. Every string must be valid UTF-8 (the schema is
declared as edition 2023 with proto2's wire behaviour and ``utf8_validation = VERIFY``).

>>> raw = encode_sparkplug(timestamp=1, seq=0, metrics=[{"name": "bdSeq", "datatype": UINT64, "long_value": 3}])
>>> decode_sparkplug(raw).metrics[0].long_value
3
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from policies.errors import MalformedPayloadError

PACKAGE = "org.eclipse.tahu.protobuf"

# DataType (Sparkplug 3.0 section 6.4.16): the value kinds a metric may declare.
(UNKNOWN, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN,
 STRING, DATETIME, TEXT, UUID, DATASET, BYTES, FILE, TEMPLATE, PROPERTYSET,
 PROPERTYSETLIST) = range(22)  # fmt: skip
FIRST_ARRAY, LAST_ARRAY = 22, 34  # Int8Array .. DateTimeArray, carried in bytes_value
LAST_DATATYPE = LAST_ARRAY

# The oneof ``value`` field each datatype is carried in (Sparkplug 3.0 section 6.4.17).
VALUE_FIELD: Mapping[int, str] = {
    **dict.fromkeys((INT8, INT16, INT32, UINT8, UINT16, UINT32), "int_value"),
    **dict.fromkeys((INT64, UINT64, DATETIME), "long_value"),
    FLOAT: "float_value",
    DOUBLE: "double_value",
    BOOLEAN: "boolean_value",
    **dict.fromkeys((STRING, TEXT, UUID), "string_value"),
    **dict.fromkeys((BYTES, FILE, *range(FIRST_ARRAY, LAST_ARRAY + 1)), "bytes_value"),
    DATASET: "dataset_value",
    TEMPLATE: "template_value",
}

_T = descriptor_pb2.FieldDescriptorProto
_SCALAR = {
    "uint32": _T.TYPE_UINT32, "uint64": _T.TYPE_UINT64, "float": _T.TYPE_FLOAT,
    "double": _T.TYPE_DOUBLE, "bool": _T.TYPE_BOOL, "string": _T.TYPE_STRING,
    "bytes": _T.TYPE_BYTES,
}  # fmt: skip
_MAX = 536870912  # "extensions N to max": field numbers end at 2^29 - 1

# One value oneof as it recurs in the schema: (field name, number, type); the extension message
# is the enclosing message's ``<Name>Extension``.
_VALUES = ("int_value", "uint32"), ("long_value", "uint64"), ("float_value", "float"), (
    "double_value", "double"), ("boolean_value", "bool"), ("string_value", "string")  # fmt: skip

# (message, fields, nested messages, first extension number or None). A field is
# (name, number, type, "optional"|"repeated", oneof or None); a type that is not a scalar names
# a message, relative to ``Payload``.
_Field = tuple[str, int, str, str, str | None]
_Msg = tuple[str, list[_Field], list[Any], int | None]


def _value_fields(first: int, extension: str, more: Iterable[tuple[str, str]] = ()) -> list[_Field]:
    pairs = [*_VALUES, *more, ("extension_value", extension)]
    return [(n, first + i, t, "optional", "value") for i, (n, t) in enumerate(pairs)]


_SCHEMA: _Msg = (
    "Payload",
    [
        ("timestamp", 1, "uint64", "optional", None),
        ("metrics", 2, "Metric", "repeated", None),
        ("seq", 3, "uint64", "optional", None),
        ("uuid", 4, "string", "optional", None),
        ("body", 5, "bytes", "optional", None),
    ],
    [
        ("Template", [
            ("version", 1, "string", "optional", None),
            ("metrics", 2, "Metric", "repeated", None),
            ("parameters", 3, "Template.Parameter", "repeated", None),
            ("template_ref", 4, "string", "optional", None),
            ("is_definition", 5, "bool", "optional", None),
        ], [
            ("Parameter", [
                ("name", 1, "string", "optional", None),
                ("type", 2, "uint32", "optional", None),
                *_value_fields(3, "Template.Parameter.ParameterValueExtension"),
            ], [("ParameterValueExtension", [], [], 1)], None),
        ], 6),
        ("DataSet", [
            ("num_of_columns", 1, "uint64", "optional", None),
            ("columns", 2, "string", "repeated", None),
            ("types", 3, "uint32", "repeated", None),
            ("rows", 4, "DataSet.Row", "repeated", None),
        ], [
            ("DataSetValue", _value_fields(1, "DataSet.DataSetValue.DataSetValueExtension"),
             [("DataSetValueExtension", [], [], 1)], None),
            ("Row", [("elements", 1, "DataSet.DataSetValue", "repeated", None)], [], 2),
        ], 5),
        ("PropertyValue", [
            ("type", 1, "uint32", "optional", None),
            ("is_null", 2, "bool", "optional", None),
            *_value_fields(3, "PropertyValue.PropertyValueExtension",
                           [("propertyset_value", "PropertySet"),
                            ("propertysets_value", "PropertySetList")]),
        ], [("PropertyValueExtension", [], [], 1)], None),
        ("PropertySet", [
            ("keys", 1, "string", "repeated", None),
            ("values", 2, "PropertyValue", "repeated", None),
        ], [], 3),
        ("PropertySetList", [("propertyset", 1, "PropertySet", "repeated", None)], [], 2),
        ("MetaData", [
            ("is_multi_part", 1, "bool", "optional", None),
            ("content_type", 2, "string", "optional", None),
            ("size", 3, "uint64", "optional", None),
            ("seq", 4, "uint64", "optional", None),
            ("file_name", 5, "string", "optional", None),
            ("file_type", 6, "string", "optional", None),
            ("md5", 7, "string", "optional", None),
            ("description", 8, "string", "optional", None),
        ], [], 9),
        ("Metric", [
            ("name", 1, "string", "optional", None),
            ("alias", 2, "uint64", "optional", None),
            ("timestamp", 3, "uint64", "optional", None),
            ("datatype", 4, "uint32", "optional", None),
            ("is_historical", 5, "bool", "optional", None),
            ("is_transient", 6, "bool", "optional", None),
            ("is_null", 7, "bool", "optional", None),
            ("metadata", 8, "MetaData", "optional", None),
            ("properties", 9, "PropertySet", "optional", None),
            *_value_fields(10, "Metric.MetricValueExtension",
                           [("bytes_value", "bytes"), ("dataset_value", "DataSet"),
                            ("template_value", "Template")]),
        ], [("MetricValueExtension", [], [], 1)], None),
    ],
    6,
)  # fmt: skip


def _message(spec: _Msg) -> descriptor_pb2.DescriptorProto:
    name, fields, nested, extensions_from = spec
    out = descriptor_pb2.DescriptorProto(name=name)
    oneofs: dict[str, int] = {}
    for fname, number, ftype, label, oneof in fields:
        field = out.field.add(name=fname, number=number)
        field.label = _T.LABEL_REPEATED if label == "repeated" else _T.LABEL_OPTIONAL
        if ftype in _SCALAR:
            field.type = _SCALAR[ftype]
        else:
            field.type = _T.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.Payload.{ftype}"
        if oneof is not None:
            if oneof not in oneofs:
                oneofs[oneof] = len(out.oneof_decl)
                out.oneof_decl.add(name=oneof)
            field.oneof_index = oneofs[oneof]
    out.nested_type.extend(_message(n) for n in nested)
    if extensions_from is not None:
        out.extension_range.add(start=extensions_from, end=_MAX)
    return out


def _payload_class() -> type[Message]:
    # The published schema is proto2; written as edition 2023 with proto2's behaviour
    # (explicit presence, unpacked repeated scalars: the same bytes on the wire) and one thing
    # proto2 cannot say: strings are verified UTF-8 when parsed. A proto2 parser (upb) hands an
    # invalid one out as ``bytes`` where every host application expects ``str``.
    proto = descriptor_pb2.FileDescriptorProto(
        name="idmz/sparkplug_b.proto",
        package=PACKAGE,
        syntax="editions",
        edition=descriptor_pb2.EDITION_2023,
    )
    features = proto.options.features
    features.field_presence = descriptor_pb2.FeatureSet.EXPLICIT
    features.repeated_field_encoding = descriptor_pb2.FeatureSet.EXPANDED
    features.utf8_validation = descriptor_pb2.FeatureSet.VERIFY
    proto.message_type.append(_message(_SCHEMA))
    pool = descriptor_pool.DescriptorPool()  # our own: never the default pool
    pool.Add(proto)
    cls: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.Payload")
    )
    return cls


Payload = _payload_class()


def decode_sparkplug(raw: bytes) -> Any:
    """The payload message parsed from ``raw`` (size-check it first). Raises
    `MalformedPayloadError` for anything protobuf cannot parse, foreign errors included."""
    message = Payload()
    try:
        message.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: recursion limit
        raise MalformedPayloadError(f"not a Sparkplug B payload ({type(exc).__name__})") from exc
    return message


def encode_sparkplug(
    *, timestamp: int, metrics: Iterable[Mapping[str, Any]], seq: int | None = None
) -> bytes:
    """A payload from plain values; each metric is a mapping of `Metric` field names (``name``,
    ``alias``, ``timestamp``, ``datatype``, ``is_null``, one ``*_value``, ``properties`` as
    ``{key: (type, field, value)}``)."""
    message = Payload(timestamp=timestamp)
    if seq is not None:
        message.seq = seq
    for spec in metrics:
        metric = message.metrics.add()
        for key, value in spec.items():
            if key == "properties":
                for pkey, (ptype, pfield, pvalue) in value.items():
                    metric.properties.keys.append(pkey)
                    prop = metric.properties.values.add(type=ptype)
                    setattr(prop, pfield, pvalue)
            else:
                setattr(metric, key, value)
    return bytes(message.SerializeToString())
