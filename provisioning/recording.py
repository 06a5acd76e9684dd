"""How the provisioning services write to the audit log: an operator change or a refusal that
cannot be recorded fails as an upstream error (503 / exit 3), and a request that failed because
an upstream failed is audited like a refusal (ADR 0024). Functions over an `AuditSink`, shared by
the composed services (ADR 0090) instead of a base class they would inherit it from."""

from __future__ import annotations

import logging

from audit.errors import AuditError
from audit.events import AuditEvent, AuditSink, Outcome
from provisioning.errors import DeviceStateError, RefusedError, TokenError, UpstreamError

_log = logging.getLogger("provisioning")


def record(audit: AuditSink, event: AuditEvent) -> None:
    """Append to the audit log; an unavailable log is an upstream failure (503 / exit 3).
    Operator changes call this inside their registry transaction, so a change that cannot
    be recorded is not committed (ADR 0024)."""
    try:
        audit.record(event)
    except AuditError as exc:
        raise UpstreamError(f"the audit log cannot record {event.action}: {exc}") from exc


def record_refusal(
    audit: AuditSink,
    action: str,
    actor: str,
    resource: str,
    exc: RefusedError,
    *,
    client: str,
    via: str,
) -> RefusedError:
    """Audit a refusal with its precise reason (the client hears a generic one); returns it."""
    record(
        audit,
        AuditEvent(
            actor=actor,
            action=action,
            resource=resource,
            outcome=Outcome.DENIED
            if isinstance(exc, TokenError | DeviceStateError)
            else Outcome.FAILURE,
            reason=exc.reason,
            details={"code": exc.code, "client": client, "via": via},
        ),
    )
    return exc


def record_upstream_failure(
    audit: AuditSink,
    action: str,
    actor: str,
    resource: str,
    exc: UpstreamError,
    *,
    client: str,
    via: str,
) -> None:
    """A request that failed because an upstream failed (the CA: Vault down or sealed; the
    registry) is audited like a refusal, outcome failure, code ``upstream``; nothing was
    issued (the registry transaction rolled back). When the audit log is itself what failed,
    that is logged instead."""
    event = AuditEvent(
        actor=actor,
        action=action,
        resource=resource,
        outcome=Outcome.FAILURE,
        reason=str(exc),
        details={"code": "upstream", "client": client, "via": via},
    )
    try:
        audit.record(event)
    except AuditError:
        _log.exception("the audit log cannot record the failure of %s either", action)
