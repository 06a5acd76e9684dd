"""The registry: devices, enrollment groups, issued certificates and tokens, in SQL.

SQLite by default (WAL, one writer at a time, ``BEGIN IMMEDIATE`` so that the CLI and the
service never deadlock upgrading a read lock), PostgreSQL for several service instances. A
one-time token is consumed by one conditional ``UPDATE ... WHERE used_at IS NULL AND
expires_at > now RETURNING jti``: on PostgreSQL the second of two concurrent updates waits for
the first's row lock, re-checks the condition and matches nothing, so exactly one request wins
on any number of instances. The unit of work that consumes a token also records the certificate;
if issuance fails the whole unit rolls back and the token stays unused.

>>> reg = Registry.open("sqlite://")
>>> from datetime import UTC, datetime
>>> with reg.unit() as unit:
...     unit.insert_device("acme/p1/press/l1/c2/press-07", device_class="gateway", asset="",
...                        status="registered", now=datetime.now(UTC))
>>> reg.device("acme/p1/press/l1/c2/press-07").status
'registered'
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, event, func, insert, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, col, create_engine, select

from provisioning._tables import (
    CertificateRow,
    DeviceRow,
    GroupRow,
    RevokedTokenRow,
    SupersessionRow,
    TokenRow,
)
from provisioning.errors import ConfigError, DeviceStateError, UpstreamError, UsageError
from provisioning.records import (
    CertificateRecord,
    DeviceRecord,
    GroupRecord,
    TokenRecord,
)


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _dt(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _device(row: DeviceRow) -> DeviceRecord:
    return DeviceRecord(
        row.path, row.status, row.device_class, row.asset, _dt(row.created_at), _dt(row.updated_at)
    )


def _group(row: GroupRow) -> GroupRecord:
    return GroupRecord(row.prefix, row.device_class, row.validity_days, row.renewal_grace_days)


def _cert(row: CertificateRow) -> CertificateRecord:
    return CertificateRecord(
        row.serial,
        row.device_path,
        row.fingerprint,
        _dt(row.not_before),
        _dt(row.not_after),
        _dt(row.issued_at),
        row.status,
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
_SUPERSEDE_CERT = text(
    "UPDATE certificates SET status = 'superseded' WHERE serial = :serial AND status = 'active'"
)
_SET_DEVICE_STATUS = text(
    "UPDATE devices SET status = :status, updated_at = :now WHERE path = :path"
)
# Activation never overwrites `revoked` (review H1): the conditions are in the statements, and
# the device row is locked first (`Unit.lock_device`), so a revocation either committed before
# (nothing matches, the activation is refused) or waits until this unit has committed.
_ACTIVATE_PENDING = text(
    "UPDATE certificates SET status = 'active' WHERE serial = :serial AND device_path = :path"
    " AND status = 'pending' RETURNING serial"
)
_SUPERSEDE_ACTIVE = text(
    "UPDATE certificates SET status = 'superseded'"
    " WHERE device_path = :path AND status = 'active' AND serial <> :serial RETURNING serial"
)
_ENROLL_DEVICE = text(
    "UPDATE devices SET status = 'enrolled', updated_at = :now"
    " WHERE path = :path AND status <> 'revoked'"
)


class Unit:
    """One transaction. Obtained from `Registry.unit`; committed when the block ends normally.

    The enrollment hot path runs here, so it speaks SQLAlchemy Core on the session's connection
    (a fraction of the ORM's per-statement cost); the tables are the SQLModel ones."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def consume_token(self, jti: str, *, subject: str, used_by: str, now: datetime) -> bool:
        """Mark the token used if it exists, is bound to ``subject``, is unused and unexpired.
        True when this call consumed it; False when any condition failed."""
        params = {"jti": jti, "subject": subject, "used_by": used_by, "now": _ts(now)}
        return self._c.execute(_CONSUME_TOKEN, params).first() is not None

    def device(self, path: str) -> DeviceRecord | None:
        row = self._c.execute(_SELECT_DEVICE, {"path": path}).first()
        return _device(DeviceRow(**row._mapping)) if row is not None else None

    def lock_device(self, path: str) -> DeviceRecord | None:
        """The device row, locked until this unit ends: every unit that issues to a device,
        activates its certificate or revokes it takes this lock first, so they serialize per
        device. PostgreSQL: ``SELECT ... FOR UPDATE`` (a concurrent locker waits, then reads
        the committed row). SQLite: the unit already holds the database's one write lock
        (``BEGIN IMMEDIATE``, plus the registry's process and file locks)."""
        stmt = _LOCK_DEVICE if self._c.dialect.name == "postgresql" else _SELECT_DEVICE
        row = self._c.execute(stmt, {"path": path}).first()
        return _device(DeviceRow(**row._mapping)) if row is not None else None

    def certificate(self, serial: str) -> CertificateRecord | None:
        row = self._c.execute(_SELECT_CERT, {"serial": serial}).first()
        return _cert(CertificateRow(**row._mapping)) if row is not None else None

    def insert_device(
        self, path: str, *, device_class: str, asset: str, status: str, now: datetime
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
            raise DeviceStateError(
                f"device {path} is already registered", code="device-exists"
            ) from exc

    def set_device_status(self, path: str, status: str, *, now: datetime) -> None:
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
        status: str = "active",
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
        if device is None or device.status == "revoked":
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

    def revoke_certificate_if(self, serial: str, *, device_path: str, status: str) -> bool:
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
            .values(status="revoked")
            .returning(_CERTS.c.serial)
        ).first()
        return row is not None

    def set_certificate_status(self, serial: str, status: str) -> None:
        self._c.execute(_SET_CERT_STATUS, {"serial": serial, "status": status})

    def mark_certificates_revoked(self, device_path: str) -> list[str]:
        """Every certificate of the device that is not revoked yet (pending, active, superseded)
        becomes revoked; returns their serials. Call with the device row locked."""
        self._c.execute(delete(_SUPERSESSIONS).where(_SUPERSESSIONS.c.device_path == device_path))
        rows = self._c.execute(
            update(_CERTS)
            .where(_CERTS.c.device_path == device_path)
            .where(_CERTS.c.status != "revoked")
            .values(status="revoked")
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


class Registry:
    def __init__(self, engine: Engine, *, lock_file: str | None = None) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer; queueing writers on a lock (threads, then flock across
        # processes) is far faster than SQLite's busy handler, which sleeps and retries.
        self._write_lock = threading.Lock() if self._sqlite else None
        self._lock_fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600) if lock_file else None

    @classmethod
    def open(cls, url: str, *, pool_size: int = 8) -> Registry:
        """``sqlite:///path``, ``sqlite://`` (memory, tests) or ``postgresql+psycopg://...``."""
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        lock_file = None
        try:
            if url.startswith("sqlite"):
                kwargs: dict[str, Any] = {
                    "connect_args": {"check_same_thread": False, "timeout": 30}
                }
                if url in ("sqlite://", "sqlite:///:memory:"):
                    kwargs["poolclass"] = StaticPool
                engine = create_engine(url, **kwargs)
                _sqlite_pragmas(engine)
                database = engine.url.database
                if database and database != ":memory:":
                    lock_file = f"{database}.lock"
            elif url.startswith("postgresql+psycopg://"):
                engine = create_engine(
                    url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
                )
            else:
                raise ConfigError("registry URL must start with sqlite:// or postgresql://")
            SQLModel.metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise UpstreamError(
                f"cannot open the registry database ({type(exc).__name__})"
            ) from exc
        return cls(engine, lock_file=lock_file)

    def close(self) -> None:
        self._engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as exc:
            raise UpstreamError(
                f"the registry database failed ({type(exc.orig).__name__})"
            ) from exc

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """A write transaction: commit at the end of the block, roll back on any exception."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with self._engine.connect() as conn:
                conn = conn.execution_options(idmz_write=True)
                with conn.begin():
                    yield Unit(conn)
        except OperationalError as exc:
            raise UpstreamError(
                f"the registry database failed ({type(exc.orig).__name__})"
            ) from exc
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if lock is not None:
                lock.release()

    # -- operator actions -----------------------------------------------------------------

    # -- queries --------------------------------------------------------------------------

    def device(self, path: str) -> DeviceRecord | None:
        with self._session() as s:
            row = s.get(DeviceRow, path)
            return _device(row) if row is not None else None

    def device_and_group(self, path: str) -> tuple[DeviceRecord | None, GroupRecord | None]:
        """The device and its most specific group, in one round trip (the enrollment hot path)."""
        levels = path.split("/")
        candidates = ["/".join(levels[:n]) for n in range(len(levels), 0, -1)]
        try:
            with self._engine.connect() as conn:
                row = conn.execute(_SELECT_DEVICE, {"path": path}).first()
                groups = {
                    g.prefix: g for g in conn.execute(_SELECT_GROUPS, {"prefixes": candidates})
                }
        except OperationalError as exc:
            raise UpstreamError(
                f"the registry database failed ({type(exc.orig).__name__})"
            ) from exc
        device = _device(DeviceRow(**row._mapping)) if row is not None else None
        for prefix in candidates:
            if prefix in groups:
                return device, _group(GroupRow(**groups[prefix]._mapping))
        return device, None

    def devices(self) -> list[DeviceRecord]:
        with self._session() as s:
            return [_device(r) for r in s.exec(select(DeviceRow).order_by(col(DeviceRow.path)))]

    def groups(self) -> list[GroupRecord]:
        with self._session() as s:
            return [_group(r) for r in s.exec(select(GroupRow).order_by(col(GroupRow.prefix)))]

    def group_for(self, path: str) -> GroupRecord | None:
        """The most specific group whose prefix contains ``path`` (whole levels only)."""
        levels = path.split("/")
        candidates = ["/".join(levels[:n]) for n in range(len(levels), 0, -1)]
        with self._session() as s:
            rows = {
                r.prefix: r
                for r in s.exec(select(GroupRow).where(col(GroupRow.prefix).in_(candidates)))
            }
        for prefix in candidates:
            if prefix in rows:
                return _group(rows[prefix])
        return None

    def token(self, jti: str) -> TokenRecord | None:
        with self._session() as s:
            row = s.get(TokenRow, jti)
            return _token(row) if row is not None else None

    def token_revoked_at(self, jti: str) -> datetime | None:
        """When the operator token ``jti`` was put on the deny-list, or None if it never was."""
        with self._session() as s:
            row = s.get(RevokedTokenRow, jti)
            return _dt(row.revoked_at) if row is not None else None

    def certificate(self, serial: str) -> CertificateRecord | None:
        with self._session() as s:
            row = s.get(CertificateRow, serial)
            return _cert(row) if row is not None else None

    def certificates(self, device_path: str | None = None) -> list[CertificateRecord]:
        with self._session() as s:
            q = select(CertificateRow).order_by(
                col(CertificateRow.issued_at), col(CertificateRow.serial)
            )
            if device_path is not None:
                q = q.where(col(CertificateRow.device_path) == device_path)
            return [_cert(r) for r in s.exec(q)]

    def active_certificates_expiring_before(self, limit: datetime) -> list[CertificateRecord]:
        with self._session() as s:
            q = (
                select(CertificateRow)
                .where(col(CertificateRow.status) == "active")
                .where(col(CertificateRow.not_after) <= _ts(limit))
                .order_by(col(CertificateRow.not_after))
            )
            return [_cert(r) for r in s.exec(q)]

    def pending_certificates_before(self, limit: datetime) -> list[CertificateRecord]:
        """Certificates still ``pending`` (issued, never audited and activated) since before
        ``limit``: left behind by a crash between issuance and activation."""
        with self._session() as s:
            q = (
                select(CertificateRow)
                .where(col(CertificateRow.status) == "pending")
                .where(col(CertificateRow.issued_at) < _ts(limit))
            )
            return [_cert(r) for r in s.exec(q)]

    def supersessions_due(self, cutoff: datetime, *, limit: int) -> list[tuple[str, str]]:
        """``(serial, device path)`` of superseded certificates superseded at or before
        ``cutoff`` (their grace is over), oldest first, at most ``limit``."""
        with self._session() as s:
            q = (
                select(SupersessionRow.serial, SupersessionRow.device_path)
                .where(col(SupersessionRow.superseded_at) <= _ts(cutoff))
                .order_by(col(SupersessionRow.superseded_at))
                .limit(limit)
            )
            return [(serial, path) for serial, path in s.exec(q)]

    def mark_alerted(self, serial: str, days: int) -> bool:
        """Remember that ``serial`` was alerted at threshold ``days``; False if it already was
        (at this or a smaller threshold), so each threshold alerts once across instances."""
        with self.unit() as u:
            rows = u.mark_alerted(serial, days)
        return bool(rows)

    def counts(self) -> dict[str, int]:
        """Row counts per table, used by tests and `idmz provisioning status`."""
        with self._session() as s:
            return {
                "devices": s.exec(select(func.count()).select_from(DeviceRow)).one(),
                "groups": s.exec(select(func.count()).select_from(GroupRow)).one(),
                "certificates": s.exec(select(func.count()).select_from(CertificateRow)).one(),
                "tokens_used": s.exec(
                    select(func.count())
                    .select_from(TokenRow)
                    .where(col(TokenRow.used_at).is_not(None))
                ).one(),
            }


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoint; the audit log is fsynced
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that reads and then
        # writes can fail with SQLITE_BUSY_SNAPSHOT instead of waiting.
        write = conn.get_execution_options().get("idmz_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
