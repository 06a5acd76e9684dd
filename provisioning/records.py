"""What the registry returns: plain frozen records, independent of the SQL layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DeviceStatus(StrEnum):
    """Where a device is in its life; only an enrolled device renews (ADR 0045)."""

    REGISTERED = "registered"
    ENROLLED = "enrolled"
    REVOKED = "revoked"


class CertificateStatus(StrEnum):
    """Where a certificate is in its life (ADR 0045, ADR 0047): ``pending`` until its issuance
    is audited and never handed out; only the ``active`` one renews; ``superseded`` by a newer
    one and revoked after the grace; ``revoked``."""

    PENDING = "pending"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    path: str
    status: DeviceStatus
    device_class: str
    asset: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class GroupRecord:
    prefix: str
    device_class: str
    validity_days: int | None
    renewal_grace_days: int


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    serial: str
    device_path: str
    fingerprint: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    status: CertificateStatus
    via: str
    alerted_days: int | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    jti: str
    subject: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None
