"""Compliance report rules: SR 2.8 categories, period bounds, certificate lifecycle, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit.actions import Category
from audit.events import AuditEvent, Outcome
from audit.keys import read_vkey
from audit.log import AuditLog
from audit.report import build_report, category_of
from audit.report_html import render_html
from bedrock.clock import FixedClock
from tests.audit.conftest import DEVICE, ORIGIN

T0 = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "outcome", "category"),
    [
        ("pki.cert.issued", "success", Category.ACCESS_CONTROL),
        ("provisioning.enroll.refused", "denied", Category.ACCESS_CONTROL),
        ("relay.message.refused", "denied", Category.ACCESS_CONTROL),
        ("relay.device.cutoff", "success", Category.ACCESS_CONTROL),
        ("provisioning.enroll.refused", "failure", Category.REQUEST_ERRORS),
        ("relay.batch.forwarded", "success", Category.CONTROL_SYSTEM),
        ("policy.document.loaded", "success", Category.CONFIGURATION),
        ("config.relay.changed", "success", Category.CONFIGURATION),
        ("operator.ca.rotated", "success", Category.CONFIGURATION),
        ("pki.ca.backup.created", "success", Category.BACKUP_RESTORE),
        ("audit.checkpoint.witnessed", "success", Category.AUDIT_LOG),
    ],
)
def test_actions_map_to_iec_62443_sr_2_8_categories(
    action: str, outcome: str, category: str
) -> None:
    assert category_of(action, outcome) == category


def _log_at(log_dir: Path, when: datetime, event: AuditEvent) -> None:
    with AuditLog.open(log_dir, origin=ORIGIN, clock=FixedClock(when)) as log:
        log.record(event)


def test_report_counts_only_its_period_and_lists_certificate_lifecycle(log_dir: Path) -> None:
    issued = AuditEvent(DEVICE, "pki.cert.issued", "0a1b", Outcome.SUCCESS)
    revoked = AuditEvent(DEVICE, "pki.cert.revoked", "0a1b", Outcome.SUCCESS, "keyCompromise")
    refused = AuditEvent(DEVICE, "relay.message.refused", "t", Outcome.DENIED, "topic not allowed")
    _log_at(log_dir, T0 - timedelta(seconds=1), refused)  # before the period
    _log_at(log_dir, T0, issued)  # first instant: included
    _log_at(log_dir, T0 + timedelta(hours=5), refused)
    _log_at(log_dir, T0 + timedelta(days=1), revoked)  # the end is exclusive
    report = build_report(
        log_dir, read_vkey(log_dir / "checkpoint.vkey"),
        start=T0, end=T0 + timedelta(days=1), now=T0 + timedelta(days=2),
    )  # fmt: skip
    assert report.total == 2 and (report.first_seq, report.last_seq) == (1, 2)
    assert [c["action"] for c in report.certificates] == ["pki.cert.issued"]
    assert report.refusals == {(DEVICE, "topic not allowed"): 1}
    html = render_html(report)
    assert "0a1b" in html and "topic not allowed" in html and "keyCompromise" not in html


def test_an_aggregated_refusal_record_counts_every_refusal_it_stands_for(log_dir: Path) -> None:
    """The broker plugin groups a flooding identity's refusals per second into one record with
    ``count`` (review S1); the report's refusal table counts them all, not the one record."""
    flood = AuditEvent(DEVICE, "relay.message.refused", "t", Outcome.DENIED, "acl_denied",
                       details={"code": "acl_denied", "count": 400})  # fmt: skip
    single = AuditEvent(DEVICE, "relay.message.refused", "t", Outcome.DENIED, "acl_denied")
    bogus = AuditEvent(DEVICE, "relay.message.refused", "t", Outcome.DENIED, "acl_denied",
                       details={"count": "many"})  # fmt: skip
    for offset, event in enumerate((flood, single, bogus)):
        _log_at(log_dir, T0 + timedelta(seconds=offset), event)
    report = build_report(
        log_dir, read_vkey(log_dir / "checkpoint.vkey"),
        start=T0, end=T0 + timedelta(hours=1), now=T0 + timedelta(hours=2),
    )  # fmt: skip
    assert report.total == 3  # records
    assert report.refusals == {(DEVICE, "acl_denied"): 400 + 1 + 1}  # refusals


def test_report_escapes_hostile_text(log_dir: Path) -> None:
    _log_at(log_dir, T0, AuditEvent(DEVICE, "relay.message.refused", "t", Outcome.DENIED,
                                    "<script>alert(1)</script>"))  # fmt: skip
    report = build_report(
        log_dir, read_vkey(log_dir / "checkpoint.vkey"),
        start=T0, end=T0 + timedelta(hours=1), now=T0,
    )  # fmt: skip
    html = render_html(report)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_certificate_lifecycle_shows_subject_profile_and_expiry_for_every_issuer(
    log_dir: Path,
) -> None:
    path, after = DEVICE, "2027-02-20T00:00:00+00:00"
    events = [
        AuditEvent("operator:alice", "pki.cert.issued", "0a1b", Outcome.SUCCESS,
                   details={"identity": path, "profile": "device", "not_after": after}),
        AuditEvent(path, "provisioning.enroll.accepted", "0c2d", Outcome.SUCCESS,
                   details={"identity": path, "profile": "device", "not_after": after}),
        AuditEvent(path, "provisioning.renew.accepted", "0e3f", Outcome.SUCCESS,
                   after={"serial": "0e3f", "not_after": after}),  # an older record
        AuditEvent("operator:bob", "provisioning.device.revoked", path, Outcome.SUCCESS,
                   "keyCompromise", details={"serials": "0c2d,0e3f", "count": 2}),
        AuditEvent("operator:bob", "pki.cert.issued", path, Outcome.DENIED, "bad CSR"),
    ]  # fmt: skip
    for i, event in enumerate(events):
        _log_at(log_dir, T0 + timedelta(minutes=i), event)
    report = build_report(
        log_dir, read_vkey(log_dir / "checkpoint.vkey"),
        start=T0, end=T0 + timedelta(hours=1), now=T0 + timedelta(hours=2),
    )  # fmt: skip
    rows = [(c["serial"], c["subject"], c["event"], c["actor"]) for c in report.certificates]
    assert rows == [
        ("0a1b", path, "issued", "operator:alice"),
        ("0c2d", path, "issued", path),
        ("0e3f", path, "renewed", path),
        ("0c2d,0e3f", path, "revoked", "operator:bob"),
    ]  # a refusal is not a lifecycle event
    assert [c["not_after"] for c in report.certificates[:3]] == [after] * 3
    html = render_html(report)
    section = html[html.index("5. Certificate lifecycle") : html.index("6. Manual")]
    assert "<th>subject</th>" in section and "operator:alice" in section
    assert section.count(f">{path}</td>") == 4 + 2  # four subjects, two enrolling actors
    assert "2027-02-20 00:00:00" in section
