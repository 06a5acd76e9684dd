"""The relay's per-message checks: pure, no I/O, time passed in.

For one message received from the OT-facing broker the `Inspector` answers: who sent it, may it
go through, and under which stable message id. The order of checks is cheapest-first and every
refusal names a stable reason code:

1. the topic names a device (``<enterprise>/<site>/<area>/<line>/<cell>/<device>/<sub-topic>``).
   The OT broker binds the MQTT username to the certificate CN and its ACL lets a device write
   only under its own path, so the topic prefix *is* the broker-verified sender; the relay
   re-derives the `DeviceIdentity` from it and re-checks everything below;
2. the sender's certificates are not all revoked (`RevocationState`, refreshed when the CRL
   file changes, so a revoked device is refused from that moment, before the broker evicts it);
3. the policy allows this device class to publish this sub-topic (`policies.evaluate`);
4. the per-device rate limit (`policies.RateLimiter`);
5. size, strict JSON, JSON Schema, envelope device == sender (`policies.check_payload_claims`).

A Sparkplug B topic (``spBv1.0/...``, ADR 0110) names no identity path: the policy maps its
(group, node) to the identity whose certificate the OT broker let write it
(`policies.sparkplug.route_sparkplug`); then revocation, and the node's session (`relay.sparkplug`: rate,
protobuf, limits, seq, bdSeq, aliases, datatypes, timestamps).

`Inspector.inspect` is total: whatever the topic, bytes and properties, it returns a `Verdict`.
An exception inside it (a bug, a library surprise) is a refusal with the code
``inspection_error`` that carries the exception in ``Verdict.error``, so the worker can log the
traceback and audit the refusal; it never reaches the OT link, where it would drop the
connection and have the broker redeliver the same message forever (security review H2).

The message id is the MQTT 5 user property ``idmz-msg-id``, else the envelope ``id``, else a
SHA-256 of topic and payload (docs/contracts.md section 4).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from pki.identity import DeviceIdentity
from policies import (
    MAX_TOPIC_CHARS,
    Action,
    Decision,
    Policy,
    RateLimiter,
    ReasonCode,
    check_allowed_payload,
    evaluate,
    split_device_topic,
)
from policies.envelope import claims
from policies.sparkplug import SPARKPLUG_PREFIX, route_sparkplug
from relay.revocation import RevocationState
from relay.sparkplug import SparkplugNote, SparkplugTracker

MAX_MSG_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one message: the policy `Decision` itself (ADR 0031: it cannot be read
    as a boolean, and neither can a verdict), the sender and the message id. ``reason_code`` is
    the decision's stable code for metrics and audit; the relay's own refusals
    (``sender_unknown``, ``certificate_revoked``) are `ReasonCode` members too. ``error`` is set
    only for ``inspection_error``: what the inspection raised, for the log."""

    decision: Decision
    device: DeviceIdentity | None
    msg_id: str
    error: Exception | None = None
    sparkplug: SparkplugNote | None = None  # an accepted Sparkplug message: what it changed

    @property
    def accepted(self) -> bool:
        return self.decision.allowed

    @property
    def reason_code(self) -> ReasonCode:
        return self.decision.reason_code

    @property
    def reason(self) -> str:
        return self.decision.reason

    def __bool__(self) -> NoReturn:
        raise TypeError("a Verdict is not a bool: use verdict.accepted and record its reason_code")


def _valid_msg_id(value: str | None) -> str | None:
    if value is None or not 0 < len(value) <= MAX_MSG_ID_CHARS or not value.isprintable():
        return None
    return value


def message_id(topic: str, payload: bytes, property_id: str | None) -> str:
    """The stable id of a message (see the module docstring)."""
    found = _valid_msg_id(property_id)
    if found is not None:
        return found
    try:
        found = _valid_msg_id(claims(json.loads(payload)).id)
    except (ValueError, RecursionError):
        found = None
    if found is not None:
        return found
    return _digest_id(topic, payload)


def _digest_id(topic: str, payload: bytes) -> str:
    try:  # a non-UTF-8 topic from the OT reader holds surrogateescape characters
        raw = topic.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates: only from a caller's own string
        raw = topic.encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(raw + b"\0" + bytes(payload)).hexdigest()


def inspection_failed(
    topic: str, payload: bytes, property_id: str | None, exc: Exception
) -> Verdict:
    """The refusal for a message whose inspection raised ``exc``: the sender as the topic names
    it (when it does), a message id that cannot fail, and no payload or exception text in the
    reason (an exception message may quote the payload)."""
    try:
        split = split_device_topic(topic)
        device = split[0] if split is not None else None
    except Exception:  # noqa: BLE001 - the refusal must not fail in turn
        device = None
    try:
        msg_id = message_id(topic, payload, property_id)
    except Exception:  # noqa: BLE001 - as above
        msg_id = _digest_id(topic, payload)
    reason = f"inspecting the message raised {type(exc).__name__}; refused (fail closed)"
    return Verdict(Decision.deny(ReasonCode.INSPECTION_ERROR, reason), device, msg_id, exc)


ROUTE_CACHE_MAX = 4096
# Per topic: the sender, the policy decision, the sender's path and the topic class (the topic
# without the sender's prefix), so a message costs no `evaluate` and no path formatting.
_Route = tuple[DeviceIdentity, Decision, str, str]


class Inspector:
    """Checks one message at a time. Not thread-safe (it owns a rate limiter): one per worker.

    The sender and the policy decision depend on the topic alone (the policy is fixed for the
    worker's life and `policies.evaluate` is pure), so they are remembered per topic, up to
    ``ROUTE_CACHE_MAX`` topics; revocation, rate and payload are checked on every message (the
    payload by `policies.check_allowed_payload`, the part of `policies.check_payload_claims`
    after the remembered decision)."""

    def __init__(
        self,
        policy: Policy,
        revocation: RevocationState,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.revocation = revocation
        self._limiter = RateLimiter(policy)
        self._routes: dict[str, _Route] = {}
        self._wall = wall_clock  # Sparkplug timestamps are wall-clock milliseconds
        self.sparkplug = SparkplugTracker(policy.sparkplug) if policy.sparkplug else None

    def _route(self, topic: str) -> _Route | None:
        found = self._routes.get(topic)
        if found is None:
            split = split_device_topic(topic)
            if split is None:
                return None
            device = split[0]
            decision = evaluate(self.policy, device, Action.PUBLISH, topic)
            found = (device, decision, device.path, topic[len(device.topic_prefix) :])
            if len(topic) > MAX_TOPIC_CHARS:
                return found  # denied by `evaluate`; never cached, so the cache stays small
            if len(self._routes) >= ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[topic] = found
        return found

    def inspect(self, topic: str, payload: bytes, property_id: str | None, now: float) -> Verdict:
        """The verdict on one message; never raises (see the module docstring)."""
        try:
            return self._inspect(topic, payload, property_id, now)
        except Exception as exc:  # noqa: BLE001 - total: a refusal the worker logs and audits
            return inspection_failed(topic, payload, property_id, exc)

    def _inspect(self, topic: str, payload: bytes, property_id: str | None, now: float) -> Verdict:
        if topic.startswith(SPARKPLUG_PREFIX):
            return self._sparkplug(topic, payload, property_id, now)
        route = self._route(topic)
        if route is None:
            reason = f"topic {topic[:120]!a} does not start with a device identity path"
            return Verdict(
                Decision.deny(ReasonCode.SENDER_UNKNOWN, reason),
                None,
                message_id(topic, payload, property_id),
            )
        device, decision, path, topic_class = route
        if path in self.revocation.revoked_devices:
            reason = f"every certificate of {device} is revoked (CRL {self.revocation.crl_number})"
            return Verdict(
                Decision.deny(ReasonCode.CERTIFICATE_REVOKED, reason),
                device,
                message_id(topic, payload, property_id),
            )
        if decision.allowed:
            decision = self._limiter.admit(device, topic, now)
        if decision.allowed:
            decision, claimed = check_allowed_payload(self.policy, path, topic_class, payload)
            if claimed is not None:  # accepted: the id from the document parsed once
                msg_id = _valid_msg_id(property_id) or _valid_msg_id(claimed.id)
                return Verdict(decision, device, msg_id or _digest_id(topic, payload))
        return Verdict(decision, device, message_id(topic, payload, property_id))

    def _sparkplug(
        self, topic: str, payload: bytes, property_id: str | None, now: float
    ) -> Verdict:
        node, parsed, decision = route_sparkplug(self.policy.sparkplug, topic)
        msg_id = _valid_msg_id(property_id) or _digest_id(topic, payload)
        if node is None or parsed is None or self.sparkplug is None:
            return Verdict(decision, None, msg_id)
        device = node.identity
        if device.path in self.revocation.revoked_devices:
            reason = f"every certificate of {device} is revoked (CRL {self.revocation.crl_number})"
            return Verdict(Decision.deny(ReasonCode.CERTIFICATE_REVOKED, reason), device, msg_id)
        if not self.policy.device_data_flows:
            decision = Decision.deny(
                ReasonCode.NO_CONDUIT, "device data needs the ot -> idmz and idmz -> it conduits"
            )
        if not decision.allowed:
            return Verdict(decision, device, msg_id)
        wall_ms = int(self._wall() * 1000)
        decision, note = self.sparkplug.judge(node, parsed, payload, now=now, now_ms=wall_ms)
        return Verdict(decision, device, msg_id, sparkplug=note)
