"""Payload checks for one message: size, UTF-8, strict JSON, schema, envelope sender and kind.

UTF-8 and strict JSON (`policies.strict_json`) refuse, before any schema runs: duplicate
object keys, ``NaN``/``Infinity``, numbers beyond the double range (``1e400``), lone surrogate
escapes, nesting beyond the topic class's ``max_json_depth``. `check_payload` is total: whatever the
bytes, it returns a `Decision`; an exception from the schema validator (a library we do not
control) is an ``inspection_error`` refusal, never an exception. Refusal texts name the schema
location and keyword, never payload values.
"""

from __future__ import annotations

from typing import Any

from pki.identity import DeviceIdentity
from policies.decision import Action, Decision, ReasonCode
from policies.document import Policy
from policies.engine import evaluate
from policies.envelope import Claims, claims
from policies.strict_json import StrictJSONRefusal, parse_strict

_ACCEPTED = Decision.allow("payload accepted")


def _schema_decision(policy: Policy, schema: str, document: Any) -> Decision | None:
    """The schema's refusal, or None when the document conforms. ``jsonschema_rs`` is foreign
    code: any exception it raises is translated here, once, into a refusal (fail closed)."""
    validator = policy.validators[schema]
    try:
        if validator.is_valid(document):
            return None
        error = next(iter(validator.iter_errors(document)), None)
    except Exception as exc:  # noqa: BLE001 - the validator's own failure refuses the message
        return Decision.deny(
            ReasonCode.INSPECTION_ERROR,
            f"the validator for schema {schema!r} failed ({type(exc).__name__})",
        )
    if error is None:
        return Decision.deny(ReasonCode.PAYLOAD_SCHEMA_VIOLATION, f"fails schema {schema!r}")
    # The path's keys come from the payload: escaped to printable ASCII and cut short.
    where = ("/" + "/".join(str(p) for p in error.instance_path))[:160]
    where = where.encode("ascii", "backslashreplace").decode("ascii")
    keyword = error.schema_path[-1] if error.schema_path else "schema"
    return Decision.deny(
        ReasonCode.PAYLOAD_SCHEMA_VIOLATION,
        f"fails schema {schema!r} at {where} ({keyword})",
    )


def check_payload(policy: Policy, identity: DeviceIdentity, topic: str, payload: bytes) -> Decision:
    """Check a message ``identity`` published on ``topic``. Runs `evaluate` first, so a refusal
    for the topic comes back unchanged."""
    return check_payload_claims(policy, identity, topic, payload)[0]


def check_payload_claims(
    policy: Policy, identity: DeviceIdentity, topic: str, payload: bytes
) -> tuple[Decision, Claims | None]:
    """`check_payload`, and for an accepted payload the envelope `Claims` of the document it
    parsed (None with a refusal), so a caller that needs the message id does not parse the
    payload again (the relay's hot path)."""
    decision = evaluate(policy, identity, Action.PUBLISH, topic)
    if not decision.allowed:
        return decision, None
    return check_allowed_payload(
        policy, identity.path, topic[len(identity.topic_prefix) :], payload
    )


def check_allowed_payload(
    policy: Policy, sender: str, topic_class: str, payload: bytes
) -> tuple[Decision, Claims | None]:
    """`check_payload_claims` after `evaluate` allowed the device whose path is ``sender`` to
    publish ``topic_class`` (its topic without the device's prefix): the limits, size, strict
    JSON, schema and envelope checks. For a caller that remembers that decision and those
    strings per topic (the relay's inspector, ADR 0130): the same answer without evaluating the
    policy again."""
    limits = policy.limits.get(topic_class)
    if limits is None:
        return Decision.deny(
            ReasonCode.NO_LIMITS, f"no limits for topic class {topic_class!r}"
        ), None
    if len(payload) > limits.max_message_bytes:
        return Decision.deny(
            ReasonCode.PAYLOAD_TOO_LARGE,
            f"{len(payload)} bytes on {topic_class!r}; the limit is {limits.max_message_bytes}",
        ), None
    document = parse_strict(payload, max_depth=limits.max_json_depth)
    if isinstance(document, StrictJSONRefusal):
        return Decision.deny(document.code, document.reason), None
    refused = _schema_decision(policy, limits.schema, document)
    if refused is not None:
        return refused, None
    claimed = claims(document)
    if claimed.device != sender:
        return Decision.deny(
            ReasonCode.ENVELOPE_DEVICE_MISMATCH,
            f"envelope 'device' does not equal the sender {sender}",
        ), None
    if limits.envelope_kind is not None and claimed.kind != limits.envelope_kind:
        return Decision.deny(
            ReasonCode.ENVELOPE_KIND_MISMATCH,
            f"envelope 'kind' must be {limits.envelope_kind!r} on {topic_class!r}",
        ), None
    return _ACCEPTED, claimed
