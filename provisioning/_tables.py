"""The registry's SQL tables (SQLModel). Times are stored as integer UNIX seconds (UTC) so that
SQLite and PostgreSQL compare them the same way; `registry.py` converts at its boundary."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from provisioning.records import CertificateStatus, DeviceStatus


def _status_in(table: str, statuses: type[StrEnum]) -> CheckConstraint:
    """The database refuses a status the code does not know (a registry a buggy or older
    writer touched cannot hold one the security rules were not written for)."""
    allowed = ", ".join(f"'{s.value}'" for s in statuses)
    return CheckConstraint(f"status IN ({allowed})", name=f"{table}_status_known")


class DeviceRow(SQLModel, table=True):
    __tablename__ = "devices"
    __table_args__ = (_status_in("devices", DeviceStatus),)

    path: str = Field(primary_key=True, max_length=400)
    status: str = Field(max_length=16)  # a DeviceStatus
    device_class: str = Field(default="gateway", max_length=64)
    asset: str = Field(default="", max_length=400)
    created_at: int
    updated_at: int


class GroupRow(SQLModel, table=True):
    __tablename__ = "enrollment_groups"

    prefix: str = Field(primary_key=True, max_length=400)
    device_class: str = Field(default="gateway", max_length=64)
    validity_days: int | None = None  # None: the certificate policy's default
    renewal_grace_days: int = 0
    created_at: int


class CertificateRow(SQLModel, table=True):
    __tablename__ = "certificates"
    __table_args__ = (_status_in("certificates", CertificateStatus),)

    serial: str = Field(primary_key=True, max_length=64)  # lower-case hex
    device_path: str = Field(index=True, max_length=400)
    fingerprint: str = Field(max_length=64)
    not_before: int
    not_after: int = Field(index=True)
    issued_at: int
    status: str = Field(max_length=16)  # a CertificateStatus
    via: str = Field(max_length=16)  # enroll | est | renew | offline
    alerted_days: int | None = None  # the smallest expiry threshold already alerted


class TokenRow(SQLModel, table=True):
    __tablename__ = "tokens"

    jti: str = Field(primary_key=True, max_length=64)
    subject: str = Field(max_length=410)  # device:<path> | group:<prefix>
    created_at: int
    expires_at: int
    created_by: str = Field(default="", max_length=200)
    used_at: int | None = None
    used_by: str | None = Field(default=None, max_length=400)


class SupersessionRow(SQLModel, table=True):
    """A certificate superseded by a newer one of its device, waiting out the supersession grace
    before it is revoked (ADR 0047). A table of its own so that registries created before it
    gain it with ``create_all`` (no column migration)."""

    __tablename__ = "supersessions"

    serial: str = Field(primary_key=True, max_length=64)
    device_path: str = Field(max_length=400)
    superseded_at: int = Field(index=True)


class RevokedTokenRow(SQLModel, table=True):
    """An operator token's ``jti`` on the deny-list (until its expiry, then prunable)."""

    __tablename__ = "revoked_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    subject: str = Field(max_length=410)  # operator:<name>, for the audit trail
    expires_at: int = Field(index=True)
    revoked_at: int
    revoked_by: str = Field(default="", max_length=200)
