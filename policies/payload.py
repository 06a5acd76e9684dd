"""Payload checks for one message: size, UTF-8, strict JSON, schema, envelope sender and kind.

Strict JSON means: no duplicate object keys (a relay reading the first value and a consumer
reading the last would disagree), no ``NaN``/``Infinity``, bounded nesting. Refusal texts name
the schema location and keyword, never payload values.
"""

from __future__ import annotations

import json
from typing import Any

from pki.identity import DeviceIdentity
from policies.decision import Action, Decision, ReasonCode
from policies.document import Policy
from policies.engine import evaluate

_ACCEPTED = Decision.allow("payload accepted")


class _StrictJSONError(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _StrictJSONError("duplicate object key")
    return obj


def _constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not JSON")


# One decoder for every message: json.loads with hooks builds a new JSONDecoder per call
# (~6 % of a busy relay worker).
_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def check_payload(policy: Policy, identity: DeviceIdentity, topic: str, payload: bytes) -> Decision:
    """Check a message ``identity`` published on ``topic``. Runs `evaluate` first, so a refusal
    for the topic comes back unchanged."""
    decision = evaluate(policy, identity, Action.PUBLISH, topic)
    if not decision.allowed:
        return decision
    topic_class = topic[len(identity.topic_prefix) :]
    limits = policy.limits.get(topic_class)
    if limits is None:
        return Decision.deny(ReasonCode.NO_LIMITS, f"no limits for topic class {topic_class!r}")
    if len(payload) > limits.max_message_bytes:
        return Decision.deny(
            ReasonCode.PAYLOAD_TOO_LARGE,
            f"{len(payload)} bytes on {topic_class!r}; the limit is {limits.max_message_bytes}",
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Decision.deny(ReasonCode.PAYLOAD_NOT_UTF8, f"not UTF-8 at byte {exc.start}")
    try:
        document = _STRICT_JSON.decode(text)
    except (ValueError, RecursionError) as exc:
        what = str(exc) if isinstance(exc, _StrictJSONError) else type(exc).__name__
        if isinstance(exc, json.JSONDecodeError):
            what = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        return Decision.deny(ReasonCode.PAYLOAD_NOT_JSON, f"not strict JSON: {what}")
    validator = policy.validators[limits.schema]
    if not validator.is_valid(document):
        error = next(iter(validator.iter_errors(document)))
        where = "/" + "/".join(str(p) for p in error.instance_path)
        keyword = error.schema_path[-1] if error.schema_path else "schema"
        return Decision.deny(
            ReasonCode.PAYLOAD_SCHEMA_VIOLATION,
            f"fails schema {limits.schema!r} at {where} ({keyword})",
        )
    if not isinstance(document, dict) or document.get("device") != identity.path:
        return Decision.deny(
            ReasonCode.ENVELOPE_DEVICE_MISMATCH,
            f"envelope 'device' does not equal the sender {identity}",
        )
    if limits.envelope_kind is not None and document.get("kind") != limits.envelope_kind:
        return Decision.deny(
            ReasonCode.ENVELOPE_KIND_MISMATCH,
            f"envelope 'kind' must be {limits.envelope_kind!r} on {topic_class!r}",
        )
    return _ACCEPTED
