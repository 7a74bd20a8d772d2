"""
A minimal decoder of Kubernetes protobuf request bodies, for the few kinds that imperative kubectl
commands send as protobuf: ``kubectl create namespace|configmap|secret|serviceaccount``.

Other kinds sent as protobuf are answered with ``415 Unsupported Media Type`` (the caller's business).
Responses are always JSON (clients accept it).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b"k8s\x00"

# Field schemas: field number -> (json name, type). Types: "string", "bytes", "int64", "bool", "time",
# "map:string", "map:bytes", "repeated:string", a nested schema name, or "repeated:<schema name>".
Schema = dict[int, tuple[str, str]]

SCHEMAS: dict[str, Schema] = {
    "Unknown": {
        1: ("typeMeta", "TypeMeta"),
        2: ("raw", "bytes"),
        3: ("contentEncoding", "string"),
        4: ("contentType", "string"),
    },
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        5: ("uid", "string"),
        6: ("resourceVersion", "string"),
        7: ("generation", "int64"),
        8: ("creationTimestamp", "time"),
        9: ("deletionTimestamp", "time"),
        10: ("deletionGracePeriodSeconds", "int64"),
        11: ("labels", "map:string"),
        12: ("annotations", "map:string"),
        13: ("ownerReferences", "repeated:OwnerReference"),
        14: ("finalizers", "repeated:string"),
    },
    "OwnerReference": {
        1: ("kind", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "ObjectReference": {
        1: ("kind", "string"),
        2: ("namespace", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("resourceVersion", "string"),
        7: ("fieldPath", "string"),
    },
    "LocalObjectReference": {1: ("name", "string")},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map:string"),
        3: ("binaryData", "map:bytes"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map:bytes"),
        3: ("type", "string"),
        4: ("stringData", "map:string"),
        5: ("immutable", "bool"),
    },
    "Namespace": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "NamespaceSpec"),
        3: ("status", "NamespaceStatus"),
    },
    "NamespaceSpec": {1: ("finalizers", "repeated:string")},
    "NamespaceStatus": {1: ("phase", "string")},
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta"),
        2: ("secrets", "repeated:ObjectReference"),
        3: ("imagePullSecrets", "repeated:LocalObjectReference"),
        4: ("automountServiceAccountToken", "bool"),
    },
    "Time": {1: ("seconds", "int64"), 2: ("nanos", "int64")},
}

SUPPORTED_KINDS = frozenset(
    {("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Namespace"), ("v1", "ServiceAccount")}
)


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """Split a message into (field number, wire type, value) — values: int or bytes."""
    result: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        result.append((number, wire, value))
    return result


def _scalar(kind: str, value: Any) -> Any:
    if kind == "string":
        return bytes(value).decode("utf-8")
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "bool":
        return bool(value)
    if kind == "int64":
        return value - (1 << 64) if value >= 1 << 63 else value
    if kind == "time":
        seconds = decode_message("Time", bytes(value)).get("seconds", 0)
        return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return decode_message(kind, bytes(value))


def decode_message(schema_name: str, data: bytes) -> dict[str, Any]:
    schema = SCHEMAS[schema_name]
    result: dict[str, Any] = {}
    for number, _wire, value in _fields(data):
        if number not in schema:
            continue  # unknown fields are skipped
        name, kind = schema[number]
        if kind.startswith("map:"):
            entry = {n: v for n, _w, v in _fields(bytes(value))}
            key = bytes(entry.get(1, b"")).decode("utf-8")
            result.setdefault(name, {})[key] = _scalar(kind[4:], entry.get(2, b""))
        elif kind.startswith("repeated:"):
            result.setdefault(name, []).append(_scalar(kind[9:], value))
        else:
            decoded = _scalar(kind, value)
            if decoded != "" and decoded != {}:  # Go's omitempty for the optional scalars & messages
                result[name] = decoded
    return result


def decode(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\0``-enveloped protobuf object of a supported kind into its JSON form."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf envelope")
    unknown = _fields(body[len(MAGIC) :])
    type_meta: dict[str, Any] = {}
    raw = b""
    for number, _wire, value in unknown:
        if number == 1:
            type_meta = decode_message("TypeMeta", bytes(value))
        elif number == 2:
            raw = bytes(value)
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    if (api_version, kind) not in SUPPORTED_KINDS:
        raise ProtobufError(f"protobuf is not supported for {api_version}/{kind}")
    obj = decode_message(kind, raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
