"""The audit records the composition root writes itself (`idmz ca ...`, the provisioning
service creating its CA): built here once, with a typed outcome, recorded durably.

The action names are `audit.actions`'s; the actor is the operator (`idmz.operator`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.events import AuditEvent, Outcome
from idmz.home import Home


def record(home: Home, events: list[AuditEvent]) -> None:
    """Append ``events`` to the audit log under ``<home>/audit``; returns once they are durable
    (an audit failure fails the command before any certificate file is written)."""
    from idmz.audit_log import open_audit_log

    with open_audit_log(home, background_checkpoints=False) as log:
        log.record_batch(events)


def make_event(
    action: str, resource: str, outcome: Outcome, reason: str = "", **details: Any
) -> AuditEvent:
    from idmz.operator import operator_actor

    return AuditEvent(
        actor=operator_actor(),
        action=action,
        resource=resource,
        outcome=outcome,
        reason=reason,
        zone="idmz",
        details={k: v for k, v in details.items() if v is not None},
    )


def audit(
    home: Home, action: str, resource: str, outcome: Outcome, reason: str = "", **details: Any
) -> None:
    record(home, [make_event(action, resource, outcome, reason, **details)])


def ca_created_event(root_cert: Path, *, organization: str, **details: Any) -> AuditEvent:
    """``pki.ca.created`` for a new CA under ``<home>/ca``: the root's serial as the resource,
    its SHA-256 fingerprint (the pin gateways use) and organization in details. Written by
    `idmz ca init` and by the provisioning service when it creates the CA itself."""
    from cryptography import x509

    from pki.authority import fingerprint_sha256, format_serial

    root = x509.load_pem_x509_certificate(root_cert.read_bytes())
    return make_event(
        "pki.ca.created",
        format_serial(root.serial_number),
        Outcome.SUCCESS,
        fingerprint=fingerprint_sha256(root),
        organization=organization,
        subject=root.subject.rfc4514_string(),
        not_after=root.not_valid_after_utc.isoformat(),
        **details,
    )
