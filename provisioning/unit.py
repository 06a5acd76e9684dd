"""One registry transaction (`Unit`), the prebuilt SQL it runs, and the row-to-record
conversions the registry shares. `provisioning.registry.Registry.unit` opens one.

The enrollment hot path runs here, so it speaks SQLAlchemy Core on the transaction's connection
(a fraction of the ORM's per-statement cost); the tables are the SQLModel ones in `_tables`.
Every unit that issues to a device, activates its certificate, retires one or revokes the
device locks the device row first (`Unit.lock_device`, ADR 0049).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, text, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from provisioning._tables import (
    CertificateRow,
    DeviceRow,
    GroupRow,
    RevokedTokenRow,
    SupersessionRow,
    TokenRow,
)
from provisioning.errors import DeviceStateError, UsageError
from provisioning.records import (
    CertificateRecord,
    CertificateStatus,
    DeviceRecord,
    DeviceStatus,
    GroupRecord,
    TokenRecord,
)


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _dt(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# The converters take an ORM row or a Core result row (same attribute names): the hot path
# reads Core rows and builds no ORM object (a SQLModel instance validates every field).
def _device(row: DeviceRow | Row[Any]) -> DeviceRecord:
    return DeviceRecord(
        row.path,
        DeviceStatus(row.status),
        row.device_class,
        row.asset,
        _dt(row.created_at),
        _dt(row.updated_at),
    )


def _group(row: GroupRow | Row[Any]) -> GroupRecord:
    return GroupRecord(row.prefix, row.device_class, row.validity_days, row.renewal_grace_days)


def _cert(row: CertificateRow | Row[Any]) -> CertificateRecord:
    return CertificateRecord(
        row.serial,
        row.device_path,
        row.fingerprint,
        _dt(row.not_before),
        _dt(row.not_after),
        _dt(row.issued_at),
        CertificateStatus(row.status),
        row.via,
        row.alerted_days,
    )


def _token(row: TokenRow) -> TokenRecord:
    return TokenRecord(
        row.jti,
        row.subject,
        _dt(row.created_at),
        _dt(row.expires_at),
        _dt(row.used_at) if row.used_at is not None else None,
        row.used_by,
    )


_DEVICES = DeviceRow.__table__  # type: ignore[attr-defined]
_GROUPS = GroupRow.__table__  # type: ignore[attr-defined]
_CERTS = CertificateRow.__table__  # type: ignore[attr-defined]
_TOKENS = TokenRow.__table__  # type: ignore[attr-defined]
_SUPERSESSIONS = SupersessionRow.__table__  # type: ignore[attr-defined]
_REVOKED_TOKENS = RevokedTokenRow.__table__  # type: ignore[attr-defined]


# The enrollment hot path as plain SQL (portable between SQLite >= 3.35 and PostgreSQL): built
# once, so each request pays no statement construction or cache-key cost.
_CONSUME_TOKEN = text(
    "UPDATE tokens SET used_at = :now, used_by = :used_by"
    " WHERE jti = :jti AND subject = :subject AND used_at IS NULL AND expires_at > :now"
    " RETURNING jti"
)
_SELECT_DEVICE = text(
    "SELECT path, status, device_class, asset, created_at, updated_at FROM devices WHERE path = :path"
)
_SELECT_CERT = text(
    "SELECT serial, device_path, fingerprint, not_before, not_after, issued_at, status, via,"
    " alerted_days FROM certificates WHERE serial = :serial"
)
_LOCK_DEVICE = text(_SELECT_DEVICE.text + " FOR UPDATE")
_SELECT_GROUPS = text(
    "SELECT prefix, device_class, validity_days, renewal_grace_days, created_at"
    " FROM enrollment_groups WHERE prefix IN :prefixes"
).bindparams(bindparam("prefixes", expanding=True))
_INSERT_CERT = text(
    "INSERT INTO certificates (serial, device_path, fingerprint, not_before, not_after, issued_at,"
    " status, via, alerted_days) VALUES (:serial, :device_path, :fingerprint, :not_before,"
    " :not_after, :issued_at, :status, :via, NULL)"
)
_SET_CERT_STATUS = text("UPDATE certificates SET status = :status WHERE serial = :serial")
# The statuses in the statements are bound from the enums: SQL spells no status itself.
_SUPERSEDE_CERT = text(
    "UPDATE certificates SET status = :superseded WHERE serial = :serial AND status = :active"
).bindparams(superseded=CertificateStatus.SUPERSEDED.value, active=CertificateStatus.ACTIVE.value)
_SET_DEVICE_STATUS = text(
    "UPDATE devices SET status = :status, updated_at = :now WHERE path = :path"
)
# Activation never overwrites `revoked` (review H1): the conditions are in the statements, and
# the device row is locked first (`Unit.lock_device`), so a revocation either committed before
# (nothing matches, the activation is refused) or waits until this unit has committed.
_ACTIVATE_PENDING = text(
    "UPDATE certificates SET status = :active WHERE serial = :serial AND device_path = :path"
    " AND status = :pending RETURNING serial"
).bindparams(active=CertificateStatus.ACTIVE.value, pending=CertificateStatus.PENDING.value)
_SUPERSEDE_ACTIVE = text(
    "UPDATE certificates SET status = :superseded"
    " WHERE device_path = :path AND status = :active AND serial <> :serial RETURNING serial"
).bindparams(superseded=CertificateStatus.SUPERSEDED.value, active=CertificateStatus.ACTIVE.value)
_ENROLL_DEVICE = text(
    "UPDATE devices SET status = :enrolled, updated_at = :now"
    " WHERE path = :path AND status <> :revoked"
).bindparams(enrolled=DeviceStatus.ENROLLED.value, revoked=DeviceStatus.REVOKED.value)


class Unit:
    """One transaction. Obtained from `Registry.unit`; committed when the block ends normally.

    The enrollment hot path runs here, so it speaks SQLAlchemy Core on the session's connection
    (a fraction of the ORM's per-statement cost); the tables are the SQLModel ones."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: an exception rolls back only what the block wrote (one job
        of a batched unit, `provisioning.committer`). Plain SQL, the same on SQLite and
        PostgreSQL: SQLAlchemy's nested-transaction object costs several times more, and
        after a failure PostgreSQL needs exactly this ``ROLLBACK TO`` to go on."""
        self._c.exec_driver_sql("SAVEPOINT idmz_job")
        try:
            yield
        except BaseException:
            self._c.exec_driver_sql("ROLLBACK TO SAVEPOINT idmz_job")
            self._c.exec_driver_sql("RELEASE SAVEPOINT idmz_job")
            raise
        self._c.exec_driver_sql("RELEASE SAVEPOINT idmz_job")

    def consume_token(self, jti: str, *, subject: str, used_by: str, now: datetime) -> bool:
        """Mark the token used if it exists, is bound to ``subject``, is unused and unexpired.
        True when this call consumed it; False when any condition failed."""
        params = {"jti": jti, "subject": subject, "used_by": used_by, "now": _ts(now)}
        return self._c.execute(_CONSUME_TOKEN, params).first() is not None

    def device(self, path: str) -> DeviceRecord | None:
        row = self._c.execute(_SELECT_DEVICE, {"path": path}).first()
        return _device(row) if row is not None else None

    def lock_device(self, path: str) -> DeviceRecord | None:
        """The device row, locked until this unit ends: every unit that issues to a device,
        activates its certificate or revokes it takes this lock first, so they serialize per
        device. PostgreSQL: ``SELECT ... FOR UPDATE`` (a concurrent locker waits, then reads
        the committed row). SQLite: the unit already holds the database's one write lock
        (``BEGIN IMMEDIATE``, plus the registry's process and file locks)."""
        stmt = _LOCK_DEVICE if self._c.dialect.name == "postgresql" else _SELECT_DEVICE
        row = self._c.execute(stmt, {"path": path}).first()
        return _device(row) if row is not None else None

    def certificate(self, serial: str) -> CertificateRecord | None:
        row = self._c.execute(_SELECT_CERT, {"serial": serial}).first()
        return _cert(row) if row is not None else None

    def insert_device(
        self, path: str, *, device_class: str, asset: str, status: DeviceStatus, now: datetime
    ) -> None:
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(_DEVICES).values(
                        path=path,
                        status=status,
                        device_class=device_class,
                        asset=asset,
                        created_at=_ts(now),
                        updated_at=_ts(now),
                    )
                )
        except IntegrityError as exc:
            if self.device(path) is None:
                raise  # not a duplicate: the database refused the row itself (a CHECK)
            raise DeviceStateError(
                f"device {path} is already registered", code="device-exists"
            ) from exc

    def set_device_status(self, path: str, status: DeviceStatus, *, now: datetime) -> None:
        self._c.execute(_SET_DEVICE_STATUS, {"status": status, "now": _ts(now), "path": path})

    def record_certificate(
        self,
        *,
        serial: str,
        device_path: str,
        fingerprint: str,
        not_before: datetime,
        not_after: datetime,
        via: str,
        now: datetime,
        supersedes: str | None = None,
        status: CertificateStatus = CertificateStatus.ACTIVE,
    ) -> None:
        if supersedes is not None:
            self._c.execute(_SUPERSEDE_CERT, {"serial": supersedes})
        self._c.execute(
            _INSERT_CERT,
            {
                "serial": serial,
                "device_path": device_path,
                "fingerprint": fingerprint,
                "not_before": _ts(not_before),
                "not_after": _ts(not_after),
                "issued_at": _ts(now),
                "status": status,
                "via": via,
            },
        )

    def activate_certificate(self, serial: str, *, device_path: str, now: datetime) -> list[str]:
        """A pending certificate whose audit record is durable becomes the device's one current
        certificate; any other active one is superseded (it can no longer renew, and is revoked
        after the supersession grace, ADR 0047). Returns the superseded serials.

        Raises `DeviceStateError` and changes nothing when the device was revoked meanwhile (or
        the certificate is no longer pending: a revocation took it)."""
        device = self.lock_device(device_path)
        if device is None or device.status == DeviceStatus.REVOKED:
            raise DeviceStateError(
                f"device {device_path} was revoked while certificate {serial} was being issued",
                code="device-revoked",
            )
        params = {"path": device_path, "serial": serial}
        if self._c.execute(_ACTIVATE_PENDING, params).first() is None:
            raise DeviceStateError(
                f"certificate {serial} of {device_path} is no longer pending (revoked or withdrawn)",
                code="certificate-withdrawn",
            )
        superseded = [r[0] for r in self._c.execute(_SUPERSEDE_ACTIVE, params).all()]
        if superseded:
            self._c.execute(
                insert(_SUPERSESSIONS),
                [
                    {"serial": old, "device_path": device_path, "superseded_at": _ts(now)}
                    for old in superseded
                ],
            )
        self._c.execute(_ENROLL_DEVICE, {"path": device_path, "now": _ts(now)})
        return superseded

    def revoke_certificate_if(
        self, serial: str, *, device_path: str, status: CertificateStatus
    ) -> bool:
        """Mark one certificate revoked if it is still ``status`` (``superseded`` past its
        grace, ``pending`` left by a crash), under the device lock, and drop its supersession
        row. False when it is not (a device revocation, an activation or another instance got
        there first): the caller then leaves it alone."""
        self.lock_device(device_path)
        self._c.execute(delete(_SUPERSESSIONS).where(_SUPERSESSIONS.c.serial == serial))
        row = self._c.execute(
            update(_CERTS)
            .where(_CERTS.c.serial == serial)
            .where(_CERTS.c.status == status)
            .values(status=CertificateStatus.REVOKED)
            .returning(_CERTS.c.serial)
        ).first()
        return row is not None

    def set_certificate_status(self, serial: str, status: CertificateStatus) -> None:
        self._c.execute(_SET_CERT_STATUS, {"serial": serial, "status": status})

    def mark_certificates_revoked(self, device_path: str) -> list[str]:
        """Every certificate of the device that is not revoked yet (pending, active, superseded)
        becomes revoked; returns their serials. Call with the device row locked."""
        self._c.execute(delete(_SUPERSESSIONS).where(_SUPERSESSIONS.c.device_path == device_path))
        rows = self._c.execute(
            update(_CERTS)
            .where(_CERTS.c.device_path == device_path)
            .where(_CERTS.c.status != CertificateStatus.REVOKED)
            .values(status=CertificateStatus.REVOKED)
            .returning(_CERTS.c.serial)
        ).all()
        return [r[0] for r in rows]

    def insert_group(
        self,
        prefix: str,
        *,
        device_class: str,
        validity_days: int | None,
        renewal_grace_days: int,
        now: datetime,
    ) -> None:
        row = GroupRow(
            prefix=prefix,
            device_class=device_class,
            validity_days=validity_days,
            renewal_grace_days=renewal_grace_days,
            created_at=_ts(now),
        )
        try:
            with self._c.begin_nested():
                self._c.execute(insert(_GROUPS).values(**row.model_dump()))
        except IntegrityError as exc:
            raise UsageError(f"enrollment group {prefix} already exists") from exc

    def mark_alerted(self, serial: str, days: int) -> list[Any]:
        return list(
            self._c.execute(
                update(_CERTS)
                .where(_CERTS.c.serial == serial)
                .where(_CERTS.c.alerted_days.is_(None) | (_CERTS.c.alerted_days > days))
                .values(alerted_days=days)
                .returning(_CERTS.c.serial)
            ).all()
        )

    def insert_token(
        self, jti: str, subject: str, *, created_at: datetime, expires_at: datetime, created_by: str
    ) -> None:
        row = TokenRow(
            jti=jti,
            subject=subject,
            created_at=_ts(created_at),
            expires_at=_ts(expires_at),
            created_by=created_by,
        )
        self._c.execute(insert(_TOKENS).values(**row.model_dump()))

    def deny_token(
        self, jti: str, *, subject: str, expires_at: datetime, now: datetime, revoked_by: str
    ) -> bool:
        """Put an operator token's ``jti`` on the deny-list; False if it was there already."""
        try:
            with self._c.begin_nested():
                self._c.execute(
                    insert(_REVOKED_TOKENS).values(
                        jti=jti,
                        subject=subject,
                        expires_at=_ts(expires_at),
                        revoked_at=_ts(now),
                        revoked_by=revoked_by,
                    )
                )
        except IntegrityError:
            return False
        return True
