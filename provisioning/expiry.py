"""Expiry alerts: certificates that expire within the policy's thresholds, grouped by
site/area/line (the ISA-95 levels plant IT routes work by), plus the CA-expiry cliff.

`scan_expiry` is a pure query over the registry; `alert_expiring` records one audit event per
certificate per threshold crossed (``provisioning.device.expiring``, deduplicated in the
registry so several instances or hourly runs alert once) and hands the report to notifiers.

>>> bucket(5.0, (30, 14, 7, 1))
7
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from audit.events import AuditEvent, AuditSink, Outcome
from provisioning.registry import Registry


def bucket(days_left: float, thresholds: Sequence[int]) -> int | None:
    """The smallest threshold (days) that ``days_left`` is within, or None."""
    inside = [t for t in thresholds if days_left <= t]
    return min(inside) if inside else None


def line_of(path: str) -> str:
    """``enterprise/site/area/line`` of a device path: alerts are routed per line."""
    return "/".join(path.split("/")[:4])


@dataclass(frozen=True, slots=True)
class ExpiringCertificate:
    device: str
    serial: str
    not_after: datetime
    days_left: float
    threshold_days: int

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "serial": self.serial,
            "not_after": self.not_after.isoformat(),
            "days_left": round(self.days_left, 2),
            "threshold_days": self.threshold_days,
        }


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    generated_at: datetime
    thresholds: tuple[int, ...]
    items: tuple[ExpiringCertificate, ...]
    ca_warning: str | None = None
    by_line: dict[str, list[ExpiringCertificate]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "thresholds_days": list(self.thresholds),
            "count": len(self.items),
            "lines": {
                line: [c.as_json() for c in certs] for line, certs in sorted(self.by_line.items())
            },
            "ca_warning": self.ca_warning,
        }


def scan_expiry(
    registry: Registry,
    *,
    now: datetime,
    alert_days: Sequence[int],
    issuing_not_after: datetime,
    device_validity: timedelta,
) -> ExpiryReport:
    thresholds = tuple(sorted(set(alert_days), reverse=True))
    horizon = now + timedelta(days=max(thresholds))
    items: list[ExpiringCertificate] = []
    by_line: dict[str, list[ExpiringCertificate]] = {}
    for cert in registry.active_certificates_expiring_before(horizon):
        days_left = (cert.not_after - now).total_seconds() / 86400
        threshold = bucket(days_left, thresholds)
        if threshold is None:
            continue
        item = ExpiringCertificate(
            cert.device_path, cert.serial, cert.not_after, days_left, threshold
        )
        items.append(item)
        by_line.setdefault(line_of(cert.device_path), []).append(item)
    warning = None
    if issuing_not_after < now + device_validity:
        # Vault's cliff (hashicorp/vault#13193): issuance fails silently at CA expiry minus TTL.
        warning = (
            f"the issuing CA expires at {issuing_not_after:%Y-%m-%d}, before a device certificate issued "
            f"today would ({(now + device_validity):%Y-%m-%d}); renew the issuing CA"
        )
    return ExpiryReport(now, thresholds, tuple(items), warning, by_line)


Notifier = Callable[[str, dict[str, Any]], None]


def alert_expiring(
    report: ExpiryReport,
    *,
    registry: Registry,
    audit: AuditSink,
    actor: str,
    notifiers: Sequence[Notifier] = (),
) -> list[ExpiringCertificate]:
    """Audit and notify each certificate that crossed a new threshold; return those."""
    fresh = [c for c in report.items if registry.mark_alerted(c.serial, c.threshold_days)]
    for c in fresh:
        audit.record(
            AuditEvent(
                actor,
                "provisioning.device.expiring",
                c.device,
                Outcome.SUCCESS,
                reason=f"expires within {c.threshold_days} days",
                details={
                    "serial": c.serial,
                    "not_after": c.not_after.isoformat(),
                    "threshold_days": c.threshold_days,
                },
            )
        )
    if report.ca_warning:
        audit.record(
            AuditEvent(
                actor,
                "provisioning.ca.expiring",
                "issuing-ca",
                Outcome.SUCCESS,
                reason=report.ca_warning,
            )
        )
    if fresh or report.ca_warning:
        lines: dict[str, list[dict[str, Any]]] = {}
        for c in fresh:
            lines.setdefault(line_of(c.device), []).append(c.as_json())
        message = {
            "kind": "certificate-expiry",
            "generated_at": report.generated_at.isoformat(),
            "lines": lines,
            "ca_warning": report.ca_warning,
        }
        for notify in notifiers:
            for line, certs in sorted(lines.items()):
                notify(f"expiry/{line}", {**message, "lines": {line: certs}})
            if report.ca_warning and not lines:
                notify("expiry/ca", message)
    return fresh
