"""The inspector remembers sender and policy decision per topic; every other check still runs
on every message, so a remembered route never lets a revoked, rate-limited or malformed message
through, and a refused topic stays refused."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from policies import ReasonCode, load_policy
from relay.inspector import ROUTE_CACHE_MAX, Inspector, message_id
from relay.revocation import RevocationState
from tests.relay.conftest import POLICY_PATH, PRESS_1, envelope

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
