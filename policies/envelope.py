"""The message envelope and the provenance property names: the one owner of that contract
(docs/contracts.md section 4). The edge builds envelopes with it, the payload check and the
relay read untrusted documents through it, the demo does both.

``{"v": 1, "id", "ts", "device", "kind", "data"}``, compact UTF-8 JSON without NaN, in that
key order. ``id`` also travels as the MQTT 5 user property ``idmz-msg-id``; on the IT side the
relay adds ``idmz-device``, ``idmz-cert-sha256`` and ``idmz-policy-sha256``.

>>> Envelope("0190", "1970-01-01T00:00:00.000Z", "acme/p/a/l/c/gw", "status", {"ok": 1}).to_json()
b'{"v":1,"id":"0190","ts":"1970-01-01T00:00:00.000Z","device":"acme/p/a/l/c/gw","kind":"status","data":{"ok":1}}'
>>> claims({"id": "m-1", "device": 7}).device is None
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

VERSION = 1

# MQTT 5 user properties. The gateway sets the message id; the relay sets all four on IT.
MSG_ID_PROPERTY = "idmz-msg-id"
DEVICE_PROPERTY = "idmz-device"
CERT_SHA256_PROPERTY = "idmz-cert-sha256"
POLICY_SHA256_PROPERTY = "idmz-policy-sha256"
# On a Sparkplug birth-cache copy (ADR 0110): "online", or "stale" once its NDEATH/DDEATH came.
SPARKPLUG_BIRTH_PROPERTY = "idmz-sparkplug-birth"
PROVENANCE_PROPERTIES = (
    DEVICE_PROPERTY,
    CERT_SHA256_PROPERTY,
    POLICY_SHA256_PROPERTY,
    MSG_ID_PROPERTY,
)


class Kind(StrEnum):
    """What a message is; the policy's topic classes may pin one (``envelope_kind``)."""

    TELEMETRY = "telemetry"
    FEATURES = "features"
    ANOMALY = "anomaly"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message as a gateway (or the demo) publishes it. ``ts`` is ISO 8601 UTC with
    milliseconds and ``Z`` (``2026-11-22T10:00:00.000Z``)."""

    id: str
    ts: str
    device: str
    kind: str
    data: Mapping[str, object]
    v: int = VERSION

    def to_json(self) -> bytes:
        body = {
            "v": self.v,
            "id": self.id,
            "ts": self.ts,
            "device": self.device,
            "kind": self.kind,
            "data": self.data,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class Claims:
    """What an untrusted document says in the envelope's fields: a string, or None when the
    field is missing, not a string, or the document is not an object. Nothing is checked here;
    the payload check compares ``device`` with the verified sender."""

    id: str | None
    device: str | None
    kind: str | None


def claims(document: object) -> Claims:
    """The envelope fields ``document`` (parsed JSON) claims."""
    if not isinstance(document, dict):
        return Claims(None, None, None)

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) else None

    return Claims(text("id"), text("device"), text("kind"))
