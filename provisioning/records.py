"""What the registry returns: plain frozen records, independent of the SQL layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class DeviceStatus:
    REGISTERED = "registered"
    ENROLLED = "enrolled"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    path: str
    status: str
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
    status: str
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
