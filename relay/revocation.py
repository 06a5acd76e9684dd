"""Which device identities are cut off, and each identity's current certificate fingerprint.

`build_revocation_state` is pure: it takes the CRL (PEM), the issuing CA certificate that must
have signed it, and the CA ledger rows (serial -> subject), and returns a `RevocationState`.
A device is *revoked* when it has at least one certificate in the ledger and every one of its
certificates that has not expired is revoked (a device mid-renewal with one good certificate is
not). `CrlWatcher` re-reads the files when the CRL's (mtime, size, inode) changes.

A CRL whose signature does not verify against the issuing CA is ignored (the previous state
stays) and reported: an attacker who can write the file must not be able to un-revoke anyone.
Revocations recorded in the ledger count even before the CRL is republished.

Freshness (ADR 0016, review M6): the state carries the CRL's nextUpdate; `crl_status` (pure)
says whether it is fresh, expiring (less than ``warn_before`` left) or stale, and a watcher given
``on_freshness`` calls it on every change of that verdict (the appliance alarms and applies the
zones' ``on_stale_crl``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from cryptography import x509

import bedrock.errors as category
from pki.ledger import LedgerEntry
from pki.publication import LedgerView
from relay.errors import RelayError

_log = logging.getLogger("relay.revocation")


@dataclass(frozen=True, slots=True)
class RevocationState:
    revoked_devices: frozenset[str] = frozenset()
    fingerprints: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    crl_number: int | None = None
    revoked_serials: frozenset[int] = frozenset()
    next_update: datetime | None = None  # of the CRL the state was built from


class CrlFreshness(StrEnum):
    UNKNOWN = "unknown"  # no valid CRL loaded yet
    FRESH = "fresh"
    EXPIRING = "expiring"  # less than warn_before left: the CA host has not republished it
    STALE = "stale"  # past nextUpdate: Mosquitto refuses every handshake with this crlfile


@dataclass(frozen=True, slots=True)
class CrlStatus:
    freshness: CrlFreshness
    next_update: datetime | None = None
    seconds_to_next_update: float | None = None  # negative once stale

    def describe(self) -> str:
        if self.next_update is None:
            return "no valid CRL loaded"
        left = self.seconds_to_next_update or 0.0
        when = f"{self.next_update:%Y-%m-%d %H:%M:%S}Z"
        if left < 0:
            return f"the CRL is stale: nextUpdate {when} passed {-left / 3600:.1f} h ago"
        return f"the CRL's nextUpdate {when} is {left / 3600:.1f} h away"


def crl_status(next_update: datetime | None, *, now: datetime, warn_before: timedelta) -> CrlStatus:
    """How fresh a CRL with ``next_update`` is at ``now`` (pure)."""
    if next_update is None:
        return CrlStatus(CrlFreshness.UNKNOWN)
    left = next_update - now
    if left <= timedelta(0):
        freshness = CrlFreshness.STALE
    elif left < warn_before:
        freshness = CrlFreshness.EXPIRING
    else:
        freshness = CrlFreshness.FRESH
    return CrlStatus(freshness, next_update, left.total_seconds())


class CRLRejectedError(RelayError, category.VerificationError):
    """The CRL file is not a CRL signed by the issuing CA; it was not applied."""


@dataclass(frozen=True, slots=True)
class CrlContents:
    serials: frozenset[int]
    number: int | None
    next_update: datetime | None


def read_crl(crl_pem: bytes, issuing_pem: bytes | None) -> CrlContents:
    """The revoked serials, CRL number and nextUpdate of a CRL that ``issuing_pem`` signed."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise CRLRejectedError(f"not a PEM CRL: {exc}") from exc
    if issuing_pem is not None:
        issuer = x509.load_pem_x509_certificate(issuing_pem)
        if crl.issuer != issuer.subject or not crl.is_signature_valid(
            issuer.public_key()  # type: ignore[arg-type]
        ):
            raise CRLRejectedError("CRL signature does not verify against the issuing CA")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlContents(frozenset(r.serial_number for r in crl), number, crl.next_update_utc)


def build_revocation_state(
    revoked_serials: frozenset[int],
    crl_number: int | None,
    entries: Iterable[LedgerEntry],
    now: datetime,
    next_update: datetime | None = None,
) -> RevocationState:
    by_subject: dict[str, list[LedgerEntry]] = {}
    for entry in entries:
        if entry.profile == "device":
            by_subject.setdefault(entry.subject, []).append(entry)
    revoked: set[str] = set()
    fingerprints: dict[str, str] = {}
    for subject, certs in by_subject.items():
        good = [
            c
            for c in certs
            if c.revoked_at is None and c.serial not in revoked_serials and c.not_after > now
        ]
        if good:
            fingerprints[subject] = max(good, key=lambda c: c.issued_at).fingerprint
        elif any(c.revoked_at is not None or c.serial in revoked_serials for c in certs):
            revoked.add(subject)
    return RevocationState(
        frozenset(revoked), MappingProxyType(fingerprints), crl_number, revoked_serials, next_update
    )


STAT_EVERY_S = 0.001


class CrlWatcher:
    """Polls the CRL file; on a change (or every ``refresh_s`` for expiry) rebuilds the state
    and calls ``on_change(old, new)``. Runs in its own daemon thread. With ``on_freshness`` it
    also calls ``on_freshness(old, new)`` (`CrlStatus`) whenever the loaded CRL's verdict
    changes (checked every poll, and right after each load)."""

    def __init__(
        self,
        crl_path: Path,
        issuing_path: Path | None,
        ledger_path: Path | None,
        *,
        clock: Callable[[], datetime],
        on_change: Callable[[RevocationState, RevocationState], None],
        poll_interval_s: float = 0.25,
        refresh_s: float = 60.0,
        on_freshness: Callable[[CrlStatus, CrlStatus], None] | None = None,
        warn_before: timedelta = timedelta(hours=12),
    ) -> None:
        self._crl_path = crl_path
        self._issuing_path = issuing_path
        self._ledger_path = ledger_path
        self._clock = clock
        self._on_change = on_change
        self._poll_s = poll_interval_s
        self._refresh_s = refresh_s
        self._stamp: tuple[int, int, int] | None = None
        self._stat_at = -1.0
        self._stat_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_lock = threading.Lock()
        self._ledger: LedgerView | None = None
        self.state = RevocationState()
        self._on_freshness = on_freshness
        self._warn_before = warn_before
        self._freshness_lock = threading.Lock()
        self.crl_status = CrlStatus(CrlFreshness.UNKNOWN)

    def check_freshness(self) -> CrlStatus:
        """Judge the loaded CRL's nextUpdate now; report a changed verdict to ``on_freshness``."""
        new = crl_status(self.state.next_update, now=self._clock(), warn_before=self._warn_before)
        with self._freshness_lock:
            old, self.crl_status = self.crl_status, new
        if old.freshness is not new.freshness and self._on_freshness is not None:
            self._on_freshness(old, new)
        return new

    def refresh(self) -> RevocationState:
        """Called on the hot path before each message: stat the CRL (at most once per
        ``STAT_EVERY_S``) and reload it synchronously if it changed. So a worker never judges
        a message with a view more than a millisecond older than the CRL file, even right
        after it was paused or a thread was slow. (A stat per message releases the GIL each
        time and cost ~7 % of a busy worker.)"""
        now = time.monotonic()
        if now - self._stat_at < STAT_EVERY_S:
            return self.state
        self._stat_at = now
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            try:
                self.load()
            except Exception:  # noqa: BLE001 - keep the last good state; retried next message
                _log.exception("reloading the CRL failed; keeping the previous state")
        return self.state

    def _stat(self) -> tuple[int, int, int] | None:
        """The CRL file's (mtime, size, inode), or None when it cannot be looked at now. A
        missing file is normal between two publications; any other error (permissions, a path
        component that is not a directory) is logged once per distinct error. Either way the
        last loaded CRL stays in force, and it still ages: the freshness alarm sees that."""
        try:
            st = os.stat(self._crl_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc.strerror}"
            if error != self._stat_error:
                self._stat_error = error
                _log.error(
                    "cannot look at the CRL %s (%s); keeping the last one", self._crl_path, error
                )
            return None
        self._stat_error = ""
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> RevocationState:
        """Read the files now (also done once before the thread starts)."""
        with self._load_lock:
            return self._load_locked()

    def _load_locked(self) -> RevocationState:
        try:
            st = os.stat(self._crl_path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            crl_pem = self._crl_path.read_bytes()
        except FileNotFoundError:
            _log.warning(
                "CRL %s does not exist yet; no identity is treated as revoked", self._crl_path
            )
            return self.state
        issuing = self._issuing_path.read_bytes() if self._issuing_path else None
        try:
            contents = read_crl(crl_pem, issuing)
        except CRLRejectedError as exc:
            _log.error("ignoring CRL %s: %s; keeping the previous state", self._crl_path, exc)
            self._stamp = stamp
            return self.state
        entries: list[LedgerEntry] = []
        if self._ledger_path is not None and self._ledger_path.exists():
            if self._ledger is None:
                # One connection for the watcher's lifetime: opening and closing a WAL database
                # while the CA writes to it from the same process is what SQLite likes least.
                self._ledger = LedgerView(self._ledger_path)
            entries = self._ledger.entries()
        new = build_revocation_state(
            contents.serials, contents.number, entries, self._clock(), contents.next_update
        )
        old, self.state = self.state, new
        if new != old:
            self._on_change(old, new)
        # Only now: a concurrent `refresh_if_due` that sees a new stamp waits on the lock
        # instead of judging a message with the old state.
        self._stamp = stamp
        return new

    def start(self) -> None:
        self.load()
        if self._on_freshness is not None:
            self.check_freshness()
        self._thread = threading.Thread(target=self._run, name="crl-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._ledger is not None:
            self._ledger.close()

    def _run(self) -> None:
        last_full = 0.0
        elapsed = 0.0
        while not self._stop.wait(self._poll_s):
            elapsed += self._poll_s
            stamp = self._stat() or self._stamp  # nothing to reload; the loaded CRL still ages
            if stamp != self._stamp or elapsed - last_full >= self._refresh_s:
                last_full = elapsed
                try:
                    self.load()
                except Exception:  # noqa: BLE001 - keep watching; the error is logged
                    _log.exception("reloading the CRL failed; keeping the previous state")
            if self._on_freshness is not None:
                try:
                    self.check_freshness()
                except Exception:  # noqa: BLE001 - keep watching; the error is logged
                    _log.exception("reporting the CRL's freshness failed")
