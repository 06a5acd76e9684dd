"""The local CA's ledger: every certificate it issued and every revocation, in SQLite.

Issuance rows are written with ``synchronous=NORMAL`` (WAL): the durable record of an issuance is
the audit log entry that the caller writes before handing the certificate out. Revocations are
written with ``synchronous=FULL`` because the CRL is generated from them.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pki.authority import RevocationReason, format_serial
from pki.errors import KeyStoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,          -- lower-case hex
    subject TEXT NOT NULL,            -- identity path / server names
    profile TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    not_after TEXT NOT NULL,          -- ISO 8601 UTC
    issued_at TEXT NOT NULL,
    revoked_at TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS certificates_subject ON certificates(subject);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates(revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The certificate itself, kept only where the CA does not keep it: Vault roles with no_store
-- revoke by certificate, not by serial (ADR 0019).
CREATE TABLE IF NOT EXISTS certificate_der (serial TEXT PRIMARY KEY, der BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    serial: int
    subject: str
    profile: str
    fingerprint: str
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None
    reason: RevocationReason | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.not_after <= now else "valid"

    def as_dict(self, now: datetime) -> dict[str, str | None]:
        """JSON-ready, for exports and ``idmz ca list --json``."""
        return {
            "serial": format_serial(self.serial),
            "subject": self.subject,
            "profile": self.profile,
            "fingerprint": self.fingerprint,
            "issued_at": self.issued_at.isoformat(),
            "not_after": self.not_after.isoformat(),
            "status": self.status(now),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason.value if self.reason else None,
        }


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    issued: int
    revoked: int
    active: int  # neither revoked nor expired


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class Ledger:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """The CA's ledger at ``path``, created if missing; with ``read_only`` (another part
        reading the published view, `pki.publication`) it is never created, written or
        migrated, and every write fails."""
        self._lock = threading.Lock()
        self._path = path
        if read_only:
            try:
                self._db = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=30,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._db.execute("PRAGMA query_only=ON")
            except sqlite3.Error as exc:
                raise KeyStoreError(f"cannot open CA ledger {path} to read: {exc}") from exc
            return
        try:
            # Created owner-only: the ledger is the CA's inventory (SQLite gives its -wal/-shm
            # files the same mode).
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise KeyStoreError(f"cannot create CA ledger {path}: {exc.strerror}") from exc
        try:
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open CA ledger {path}: {exc}") from exc

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Serialize access and turn SQLite failures (disk full, locked, corrupt) into
        `KeyStoreError`, rolling back a transaction left open."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise KeyStoreError(f"CA ledger {self._path}: {what} failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def record_issued(
        self,
        *,
        serial: int,
        subject: str,
        profile: str,
        fingerprint: str,
        not_after: datetime,
        now: datetime,
        certificate_der: bytes | None = None,
    ) -> None:
        with self._guard("record issued"):
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO certificates(serial, subject, profile, fingerprint, not_after, issued_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (format_serial(serial), subject, profile, fingerprint, _ts(not_after), _ts(now)),
            )
            if certificate_der is not None:
                self._db.execute(
                    "INSERT INTO certificate_der(serial, der) VALUES (?, ?)",
                    (format_serial(serial), certificate_der),
                )
            self._db.execute("COMMIT")

    def certificate_der(self, serial: int) -> bytes | None:
        """The certificate recorded with ``serial`` (Vault no_store issuance only)."""
        with self._guard("certificate"):
            row = self._db.execute(
                "SELECT der FROM certificate_der WHERE serial = ?", (format_serial(serial),)
            ).fetchone()
        return bytes(row[0]) if row else None

    def get(self, serial: int) -> LedgerEntry | None:
        with self._guard("get"):
            row = self._db.execute(
                "SELECT serial, subject, profile, fingerprint, not_after, issued_at, revoked_at, reason"
                " FROM certificates WHERE serial = ?",
                (format_serial(serial),),
            ).fetchone()
        return _entry(row) if row else None

    def by_subject(self, subject: str) -> list[LedgerEntry]:
        with self._guard("by subject"):
            rows = self._db.execute(
                "SELECT serial, subject, profile, fingerprint, not_after, issued_at, revoked_at, reason"
                " FROM certificates WHERE subject = ? ORDER BY issued_at",
                (subject,),
            ).fetchall()
        return [_entry(r) for r in rows]

    def mark_revoked(self, serial: int, reason: RevocationReason, now: datetime) -> bool:
        """Mark ``serial`` revoked; return False if it already was (the first reason stands)."""
        with self._guard("mark revoked"):
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                cur = self._db.execute(
                    "UPDATE certificates SET revoked_at = ?, reason = ?"
                    " WHERE serial = ? AND revoked_at IS NULL",
                    (_ts(now), reason.value, format_serial(serial)),
                )
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
            return cur.rowcount == 1

    def revoked(self) -> Iterator[tuple[int, datetime, RevocationReason]]:
        """Every revoked serial with its time and reason (for the CRL)."""
        with self._guard("revoked"):
            rows = self._db.execute(
                "SELECT serial, revoked_at, reason FROM certificates WHERE revoked_at IS NOT NULL"
            ).fetchall()
        for serial, revoked_at, reason in rows:
            yield int(serial, 16), _dt(revoked_at), RevocationReason(reason)

    def revoked_rows(self) -> list[tuple[str, str, str]]:
        """Raw ``(serial hex, revoked_at ISO, reason)`` rows, for `pki.crl.RevokedEntries`."""
        with self._guard("revoked rows"):
            rows: list[tuple[str, str, str]] = self._db.execute(
                "SELECT serial, revoked_at, reason FROM certificates WHERE revoked_at IS NOT NULL"
            ).fetchall()
        return rows

    def next_crl_number(self) -> int:
        """A monotonically increasing CRL number (RFC 5280 section 5.2.3)."""
        with self._guard("next crl number"):
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()
            number = int(row[0]) + 1 if row else 1
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('crl_number', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )
            self._db.execute("COMMIT")
        return number

    def entries(
        self, *, subject: str | None = None, revoked_only: bool = False, limit: int | None = None
    ) -> list[LedgerEntry]:
        """Ledger rows, oldest first, for ``idmz ca list`` and audits (an export auditors can
        read, which step-ca and Vault CE lack)."""
        query = (
            "SELECT serial, subject, profile, fingerprint, not_after, issued_at, revoked_at, reason"
            " FROM certificates WHERE 1 = 1"
        )
        params: list[object] = []
        if subject is not None:
            query += " AND subject = ?"
            params.append(subject)
        if revoked_only:
            query += " AND revoked_at IS NOT NULL"
        query += " ORDER BY issued_at, serial"
        if limit is not None:
            query += " LIMIT ?"
            params.append(int(limit))
        with self._guard("entries"):
            rows = self._db.execute(query, params).fetchall()
        return [_entry(r) for r in rows]

    def counts(self, now: datetime) -> LedgerCounts:
        """How many certificates were issued, are revoked, and are still valid at ``now``."""
        with self._guard("counts"):
            issued, revoked, active = self._db.execute(
                "SELECT COUNT(*), COUNT(revoked_at),"
                " SUM(CASE WHEN revoked_at IS NULL AND not_after > ? THEN 1 ELSE 0 END)"
                " FROM certificates",
                (_ts(now),),
            ).fetchone()
        return LedgerCounts(issued=issued, revoked=revoked, active=active or 0)

    def crl_number(self) -> int:
        """The number of the last CRL published (0 before the first)."""
        with self._guard("crl number"):
            row = self._db.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()
        return int(row[0]) if row else 0

    def bulk_record_revoked(self, rows: list[tuple[int, str, datetime]]) -> None:
        """Insert many already-revoked certificates in one transaction: ``(serial, subject,
        revoked_at)``. For CRL scale tests, the benchmark and importing another CA's history."""
        with self._guard("bulk record revoked"):
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO certificates(serial, subject, profile, fingerprint, not_after, issued_at,"
                " revoked_at, reason) VALUES (?, ?, 'device', '', ?, ?, ?, 'superseded')",
                [(format_serial(s), subj, _ts(t), _ts(t), _ts(t)) for s, subj, t in rows],
            )
            self._db.execute("COMMIT")

    bulk_revoke_for_test = bulk_record_revoked  # the original name; kept for callers


def _entry(row: tuple[str, str, str, str, str, str, str | None, str | None]) -> LedgerEntry:
    serial, subject, profile, fingerprint, not_after, issued_at, revoked_at, reason = row
    return LedgerEntry(
        serial=int(serial, 16),
        subject=subject,
        profile=profile,
        fingerprint=fingerprint,
        not_after=_dt(not_after),
        issued_at=_dt(issued_at),
        revoked_at=_dt(revoked_at) if revoked_at else None,
        reason=RevocationReason(reason) if reason else None,
    )
