"""The inspector remembers sender and policy decision per topic; every other check still runs
on every message, so a remembered route never lets a revoked, rate-limited or malformed message
through, and a refused topic stays refused."""

from __future__ import annotations

from policies import ReasonCode, load_policy
from relay.inspector import ROUTE_CACHE_MAX, Inspector
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
