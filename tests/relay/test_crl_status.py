"""The pure parts of CRL freshness: the verdict at each boundary, and which brokers a stale CRL
takes `crlfile` from under each zone's on_stale_crl (ADR 0016, ADR 0036)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import load_policy
from relay.crl_alarm import brokers_without_crl
from relay.revocation import CrlFreshness, crl_status
from tests.relay.conftest import POLICY_PATH

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WARN = timedelta(hours=12)


@pytest.mark.parametrize(
    ("left", "verdict"),
    [
        (timedelta(hours=12), CrlFreshness.FRESH),
        (timedelta(hours=12) - timedelta(seconds=1), CrlFreshness.EXPIRING),
        (timedelta(seconds=1), CrlFreshness.EXPIRING),
        (timedelta(0), CrlFreshness.STALE),
        (-timedelta(days=3), CrlFreshness.STALE),
    ],
)
def test_crl_verdict_at_each_boundary(left: timedelta, verdict: CrlFreshness) -> None:
    status = crl_status(NOW + left, now=NOW, warn_before=WARN)
    assert status.freshness is verdict
    assert status.seconds_to_next_update == left.total_seconds()


def test_no_crl_loaded_is_unknown_and_takes_no_crlfile_away() -> None:
    policy = load_policy(POLICY_PATH.read_text(), source="plant.toml")
    status = crl_status(None, now=NOW, warn_before=WARN)
    assert status.freshness is CrlFreshness.UNKNOWN
    assert brokers_without_crl(policy, status) == frozenset()


def test_only_keep_last_zones_lose_crlfile_and_only_while_stale() -> None:
    text = POLICY_PATH.read_text()
    default = load_policy(text, source="plant.toml")
    stale = crl_status(NOW - timedelta(seconds=1), now=NOW, warn_before=WARN)
    expiring = crl_status(NOW + timedelta(hours=1), now=NOW, warn_before=WARN)
    assert brokers_without_crl(default, stale) == frozenset({"ot"})
    assert brokers_without_crl(default, expiring) == frozenset()
    closed = load_policy(
        text.replace("[zones.ot]\n", '[zones.ot]\non_stale_crl = "fail-closed"\n', 1)
    )
    assert brokers_without_crl(closed, stale) == frozenset()
