"""The inspector remembers sender and policy decision per topic; every other check still runs
on every message, so a remembered route never lets a revoked, rate-limited or malformed message
through, and a refused topic stays refused."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from pki.identity import DeviceIdentity
from policies import ReasonCode, check_payload_claims, load_policy
from policies.topic import MAX_TOPIC_CHARS
from relay.inspector import ROUTE_CACHE_MAX, Inspector, message_id
from relay.revocation import RevocationState
from tests.relay.conftest import POLICY_PATH, PRESS_1, PRESS_2, envelope

TOPIC = f"{PRESS_1}/telemetry"


def _inspector() -> Inspector:
    return Inspector(load_policy(POLICY_PATH.read_text(), source="test"), RevocationState())


def test_a_remembered_route_does_not_skip_revocation_or_payload_checks() -> None:
    inspector = _inspector()
    assert inspector.inspect(TOPIC, envelope(PRESS_1, "a").encode(), None, 0.0).accepted
    inspector.revocation = RevocationState(revoked_devices=frozenset({PRESS_1}))
    verdict = inspector.inspect(TOPIC, envelope(PRESS_1, "b").encode(), None, 1.0)
    assert (verdict.accepted, verdict.reason_code) == (False, ReasonCode.CERTIFICATE_REVOKED)
    inspector.revocation = RevocationState()
    verdict = inspector.inspect(TOPIC, b"not json", None, 2.0)
    assert not verdict.accepted and verdict.reason_code != "allowed"
    assert inspector.inspect(TOPIC, envelope(PRESS_1, "c").encode(), None, 3.0).accepted


def test_a_refused_topic_stays_refused_and_the_memory_is_bounded() -> None:
    inspector = _inspector()
    for i in range(3):
        verdict = inspector.inspect(f"{PRESS_1}/not-a-class-topic", b"{}", None, float(i))
        assert not verdict.accepted and verdict.reason_code not in ("allowed", "sender_unknown")
    for i in range(ROUTE_CACHE_MAX + 10):
        inspector.inspect(f"{PRESS_1}/x{i}", b"{}", None, 5.0)
    assert len(inspector._routes) <= ROUTE_CACHE_MAX


def test_overlong_topics_are_refused_and_never_remembered() -> None:
    """A stolen key sending 64 KiB topics must not fill the route memory with them."""
    inspector = _inspector()
    for i in range(20):
        topic = f"{PRESS_1}/telemetry/{i}/" + "x" * (MAX_TOPIC_CHARS + 1)
        verdict = inspector.inspect(topic, envelope(PRESS_1, "a").encode(), None, float(i))
        assert (verdict.accepted, verdict.reason_code) == (False, ReasonCode.TOPIC_TOO_LONG)
    assert inspector._routes == {}


_IDS = st.one_of(
    st.none(), st.integers(), st.text(max_size=140), st.sampled_from(["m-1", "", "a\nb", "x" * 129])
)


@given(
    doc_id=_IDS,
    property_id=st.one_of(st.none(), st.text(max_size=140)),
    kind=st.sampled_from(["telemetry", "status"]),
    duplicate_key=st.booleans(),
)
def test_the_message_id_is_the_contracts_whether_the_payload_is_accepted_or_not(
    doc_id: object, property_id: str | None, kind: str, duplicate_key: bool
) -> None:
    """Accepted payloads take their id from the document the checks parsed (one parse); it
    must be exactly the id `message_id` derives (property, else envelope id, else digest)."""
    body = json.loads(envelope(PRESS_1, "m"))
    body["kind"] = kind
    if doc_id is None:
        del body["id"]
    else:
        body["id"] = doc_id
    payload = json.dumps(body, separators=(",", ":")).encode()
    duplicate_key = duplicate_key and doc_id is not None
    if duplicate_key:  # lenient JSON takes the last value; strict JSON refuses
        payload = payload[:-1] + b',"id":"second"}'
    verdict = _inspector().inspect(TOPIC, payload, property_id, 0.0)
    assert verdict.msg_id == message_id(TOPIC, payload, property_id)
    valid_id = isinstance(doc_id, str) and 0 < len(doc_id) <= 128  # the envelope schema's
    assert verdict.accepted == (kind == "telemetry" and not duplicate_key and valid_id)


_DEVICES = [PRESS_1, PRESS_2, "acme/plant1/stamping/line1/cell3/probe-01", "acme/plant2/x/y/z/d-1"]
_CLASSES = ["telemetry", "features", "events/anomaly", "status", "commands", "telemetry/x"]


@given(
    sender=st.sampled_from(_DEVICES),
    claimed=st.sampled_from([*_DEVICES, None]),
    topic_class=st.sampled_from(_CLASSES),
    kind=st.sampled_from(["telemetry", "features", "anomaly", "status", "other", None]),
    tail=st.sampled_from(
        [b"", b',"id":"again"', b',"v":1e400', b',"x":"\\ud800"', b',"d":' + b"[" * 40 + b"]" * 40]
    ),
    pad=st.sampled_from([0, 20000, 70000]),
    property_id=st.one_of(st.none(), st.text(max_size=20)),
)
def test_a_remembered_route_judges_every_payload_as_check_payload_claims_does(
    sender: str, claimed: str | None, topic_class: str, kind: str | None, tail: bytes, pad: int,
    property_id: str | None,
) -> None:  # fmt: skip
    """The inspector keeps the policy decision, the sender's path and the topic class per topic
    and runs only the payload checks after it (ADR 0130): for any sender, topic class and
    payload (wrong sender or kind, duplicate key, huge number, lone surrogate, too deep, too
    large), twice on the same topic, its verdict is the one `check_payload_claims` gives."""
    inspector = _inspector()
    topic = f"{sender}/{topic_class}"
    body = json.loads(envelope(sender, "m-1"))
    body["device"], body["kind"], body["data"] = claimed, kind, {"pad": "p" * pad}
    payload = json.dumps(body, separators=(",", ":")).encode()[:-1] + tail + b"}"
    want, _ = check_payload_claims(inspector.policy, DeviceIdentity.parse(sender), topic, payload)
    for now in (0.0, 1.0):  # the first builds the route, the second uses it
        verdict = inspector.inspect(topic, payload, property_id, now)
        assert (verdict.reason_code, verdict.reason) == (want.reason_code, want.reason)
        assert verdict.msg_id == message_id(topic, payload, property_id)
