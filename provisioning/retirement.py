"""Certificates the service retires by itself: superseded ones whose switch-over grace is over
(ADR 0047) and ``pending`` ones left by a crash between issuance and activation (ADR 0045). Both
run from the periodic scans of ``idmz provisioning serve`` and from ``idmz provisioning expiry``;
the superseded sweep also runs after each renewal (`ProvisioningService.revoke_superseded`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from audit.events import AuditEvent, AuditSink, Outcome
from pki.authority import CertificateAuthority, RevocationReason
from pki.errors import PKIError
from provisioning.config import RenewalPolicy
from provisioning.errors import UpstreamError
from provisioning.recording import record
from provisioning.records import CertificateStatus
from provisioning.registry import Registry


def revoke_superseded(
    ca: CertificateAuthority,
    registry: Registry,
    audit: AuditSink,
    policy: RenewalPolicy,
    *,
    now: datetime,
    actor: str = "service:provisioning",
) -> list[str]:
    """Revoke (reason ``superseded``) the superseded certificates whose grace is over
    (`RenewalPolicy`, ADR 0047); returns their serials. Safe to run on several instances
    at once: each certificate is taken by one conditional update."""
    cutoff = now - timedelta(seconds=policy.superseded_grace_s)
    revoked: list[str] = []
    for serial, device in registry.supersessions_due(cutoff, limit=policy.sweep_batch):
        with registry.unit() as unit:
            if not unit.revoke_certificate_if(
                serial, device_path=device, status=CertificateStatus.SUPERSEDED
            ):
                continue
            try:
                ca.revoke(int(serial, 16), RevocationReason.SUPERSEDED, now=now)
            except PKIError as exc:
                raise UpstreamError(f"the CA could not revoke {serial}: {exc}") from exc
            record(
                audit,
                AuditEvent(
                    actor,
                    "pki.cert.revoked",
                    serial,
                    Outcome.SUCCESS,
                    reason="superseded: a newer certificate of the device is active and "
                    "the switch-over grace is over",
                    details={"device": device, "identity": device},
                ),
            )
        revoked.append(serial)
    return revoked


def withdraw_stale_pending(
    ca: CertificateAuthority,
    registry: Registry,
    audit: AuditSink,
    *,
    now: datetime,
    older_than: timedelta = timedelta(minutes=10),
    actor: str = "service:provisioning",
) -> list[str]:
    """Revoke certificates left ``pending`` by a crash between issuance and activation: they
    were never handed out with an audit record, so none may stay usable. Run with the expiry
    scan; returns the serials withdrawn."""
    withdrawn: list[str] = []
    for cert in registry.pending_certificates_before(now - older_than):
        with registry.unit() as unit:
            # Conditional, under the device lock: a late activation either ran first (the
            # certificate is active and stays so) or finds it revoked and refuses (ADR 0049).
            if not unit.revoke_certificate_if(
                cert.serial, device_path=cert.device_path, status=CertificateStatus.PENDING
            ):
                continue
            try:
                ca.revoke(int(cert.serial, 16), RevocationReason.CESSATION_OF_OPERATION, now=now)
            except PKIError as exc:
                raise UpstreamError(
                    f"the CA could not revoke pending {cert.serial}: {exc}"
                ) from exc
            audit.record(
                AuditEvent(
                    actor,
                    "pki.cert.revoked",
                    cert.serial,
                    Outcome.SUCCESS,
                    reason="cessation-of-operation: issued but never activated (no audit record)",
                    details={
                        "device": cert.device_path,
                        "identity": cert.device_path,
                        "issued_at": cert.issued_at.isoformat(),
                    },
                )
            )
        withdrawn.append(cert.serial)
    return withdrawn
