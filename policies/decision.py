"""What the policy says about one request: allowed or not, and why, as a stable code.

A `Decision` is not a boolean. ``if decision:`` raises `TypeError`, so a refusal can never be
read as a grant by accident; callers ask ``decision.allowed`` or call ``decision.enforce()``.

The relay counts refusals by ``reason_code`` (a `ReasonCode`, stable across releases) and
writes ``reason`` (human text naming the topic or identity, never the payload) to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from policies.errors import AccessDeniedError


class Action(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


class ReasonCode(StrEnum):
    """Stable codes for every decision. Add new codes; never rename or reuse one."""

    ALLOWED = "allowed"
    # the topic string itself
    TOPIC_EMPTY = "topic_empty"
    TOPIC_TOO_LONG = "topic_too_long"
    TOPIC_NOT_ASCII = "topic_not_ascii"  # any non-ASCII, including look-alike Unicode
    TOPIC_CONTROL_CHARACTER = "topic_control_character"  # NUL and other C0/DEL
    TOPIC_WILDCARD = "topic_wildcard"  # '+' or '#' where a topic name is required
    TOPIC_RESERVED = "topic_reserved"  # '$SYS/...', '$share/...', any '$' topic
    TOPIC_UPPER_CASE = "topic_upper_case"
    TOPIC_EMPTY_LEVEL = "topic_empty_level"  # leading, trailing or double '/'
    TOPIC_DOT_SEGMENT = "topic_dot_segment"  # '.' or '..' levels
    TOPIC_INVALID_LEVEL = "topic_invalid_level"  # any other character outside [a-z0-9_-]
    # who may do what where
    TOPIC_OUTSIDE_IDENTITY = "topic_outside_identity"  # not under the device's own path
    TOPIC_NOT_IN_CLASS = "topic_not_in_class"  # own path, but the class does not list it
    DEVICE_UNASSIGNED = "device_unassigned"  # no device class for this identity
    NO_CONDUIT = "no_conduit"  # no conduit permits this flow between the zones
    FLOW_INTO_OT = "flow_into_ot"  # anything that would move data toward OT
    CONSUMER_PUBLISH_FORBIDDEN = "consumer_publish_forbidden"
    CONSUMER_UNKNOWN = "consumer_unknown"  # no rule for this consumer
    TOPIC_OUTSIDE_GRANT = "topic_outside_grant"  # consumer filter outside its prefixes
    ENTERPRISE_MISMATCH = "enterprise_mismatch"
    # payload and rate
    NO_LIMITS = "no_limits"  # no limit rule for this topic class
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PAYLOAD_NOT_UTF8 = "payload_not_utf8"
    PAYLOAD_NOT_JSON = "payload_not_json"
    PAYLOAD_SCHEMA_VIOLATION = "payload_schema_violation"
    ENVELOPE_DEVICE_MISMATCH = "envelope_device_mismatch"
    ENVELOPE_KIND_MISMATCH = "envelope_kind_mismatch"
    RATE_LIMITED = "rate_limited"
    # strict JSON (policies.strict_json), before any schema runs
    PAYLOAD_LONE_SURROGATE = "payload_lone_surrogate"  # a "\\ud800"-style escape, unpaired
    PAYLOAD_NUMBER_OUT_OF_RANGE = "payload_number_out_of_range"  # 1e400: infinity as a double
    PAYLOAD_TOO_DEEP = "payload_too_deep"  # arrays/objects nested beyond max_json_depth
    # the check itself failed (a validator exception, a bug): refused, never passed or raised
    INSPECTION_ERROR = "inspection_error"
    # the relay's own checks (relay.inspector), before the policy's
    SENDER_UNKNOWN = "sender_unknown"  # the topic does not start with a device identity path
    CERTIFICATE_REVOKED = "certificate_revoked"  # every certificate of the sender is revoked
    # releases (policies.release): is a signed target for this gateway?
    RELEASE_OTHER_PREFIX = "release_other_prefix"  # bound to another site/area/line
    RELEASE_NOT_IN_CANARY = "release_not_in_canary"  # a canary that does not name the gateway
    # Sparkplug B (policies.sparkplug, relay.sparkplug; ADR 0110)
    SPARKPLUG_TOPIC_INVALID = "sparkplug_topic_invalid"  # not spBv1.0/<group>/<TYPE>/<node>[/<dev>]
    SPARKPLUG_NODE_UNKNOWN = "sparkplug_node_unknown"  # (group, node) not in [sparkplug.nodes]
    SPARKPLUG_COMMAND_FROM_OT = "sparkplug_command_from_ot"  # NCMD, DCMD, STATE from a device
    SPARKPLUG_DEVICE_NOT_ALLOWED = "sparkplug_device_not_allowed"  # device id not listed
    SPARKPLUG_MALFORMED = "sparkplug_malformed"  # not a Tahu protobuf payload
    SPARKPLUG_TOO_MANY_METRICS = "sparkplug_too_many_metrics"
    SPARKPLUG_SEQ_INVALID = "sparkplug_seq_invalid"  # missing, or outside 0-255
    SPARKPLUG_TIMESTAMP_INVALID = "sparkplug_timestamp_invalid"  # missing, or beyond the skew
    SPARKPLUG_BIRTH_INVALID = "sparkplug_birth_invalid"  # no bdSeq, unnamed/untyped metric, ...
    SPARKPLUG_BDSEQ_MISMATCH = "sparkplug_bdseq_mismatch"  # NDEATH of another session
    SPARKPLUG_NO_BIRTH = "sparkplug_no_birth"  # data or device message before its birth
    SPARKPLUG_METRIC_UNDEFINED = "sparkplug_metric_undefined"  # alias or name not in the birth
    SPARKPLUG_DATATYPE_MISMATCH = "sparkplug_datatype_mismatch"  # not the birth's datatype


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request. ``reason`` is short human text for logs and audit records."""

    allowed: bool
    reason_code: ReasonCode
    reason: str

    def __bool__(self) -> NoReturn:
        raise TypeError(
            "a Decision is not a bool: use decision.allowed or decision.enforce(), "
            "and record decision.reason_code"
        )

    def enforce(self) -> Decision:
        """Return self when allowed; raise `AccessDeniedError` otherwise."""
        if not self.allowed:
            raise AccessDeniedError(self)
        return self

    @staticmethod
    def allow(reason: str = "allowed by policy") -> Decision:
        return Decision(True, ReasonCode.ALLOWED, reason)

    @staticmethod
    def deny(code: ReasonCode, reason: str) -> Decision:
        if code is ReasonCode.ALLOWED:
            raise ValueError("a denial needs a refusal reason code")
        return Decision(False, code, reason)
