"""The embedded CA: a root and an issuing CA as files under ``<home>/ca/``.

>>> from datetime import UTC, datetime
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "ca"
>>> from pki.ceremony import init_local_ca
>>> _ = init_local_ca(d, passphrase=b"correct horse", organization="acme", now=datetime.now(UTC))
>>> ca = LocalCA.open(d, passphrase=b"correct horse")
>>> len(ca.ca_chain())
2

Creating one, and the offline-root ceremony for its issuing CA, is `pki.ceremony`.

Files (docs/contracts.md section 5): ``root.pem``, ``root.key.pem`` (absent when the root is kept
offline), ``issuing.pem``, ``issuing.key.pem``, ``chain.pem`` (issuing then root), ``crl.pem``,
``crl.der``, ``ledger.sqlite``. Private keys are PKCS#8 encrypted with the CA passphrase, 0600.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from bedrock.files import write_atomic as _write_atomic
from pki.authority import (
    CRLBundle,
    IssuedCertificate,
    RevocationReason,
    RevocationRecord,
    fingerprint_sha256,
    format_serial,
)
from pki.builder import (
    build_leaf,
)
from pki.crl import RevokedEntries, crl_pem_from_der, sign_crl
from pki.errors import IssuanceRefusedError, KeyStoreError
from pki.files import CAPaths, require_owner_only
from pki.files import load_ca_certificate as _load_cert
from pki.files import require_aware as _require_aware
from pki.issuance import IssuanceLimits, IssuancePlan, PlannedIssuer
from pki.keys import (
    KeyPolicy,
    PrivateKey,
    load_private_key,
)
from pki.ledger import Ledger, LedgerEntry
from pki.profiles import PROFILES, ProfileName, Subject


@dataclass(frozen=True, slots=True)
class LocalCAConfig:
    key_policy: KeyPolicy = field(default_factory=KeyPolicy)
    crl_lifetime: timedelta = timedelta(days=1)
    # Regenerate the CRL once less than this remains before nextUpdate (None: half the
    # lifetime, so a republisher that runs at least that often never lets it go stale; ADR 0016).
    crl_refresh_margin: timedelta | None = None
    max_validity: dict[ProfileName, timedelta] = field(
        default_factory=lambda: {name: p.max_validity for name, p in PROFILES.items()}
    )


def _crl_number(bundle: CRLBundle) -> int:
    try:
        return bundle.crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


class LocalCA(PlannedIssuer):
    """Issues from the issuing CA's key held in memory; thread-safe; many processes may share
    one CA directory (the ledger is SQLite, CRL files are replaced atomically)."""

    def __init__(
        self,
        paths: CAPaths,
        *,
        issuing: x509.Certificate,
        issuing_key: PrivateKey,
        root: x509.Certificate,
        config: LocalCAConfig,
    ) -> None:
        self.paths = paths
        self._issuing = issuing
        self._key = issuing_key
        self._root = root
        self._config = config
        self._limits = IssuanceLimits(
            key_policy=config.key_policy, max_validity=config.max_validity
        )
        self._ledger = Ledger(paths.ledger)
        self._crl_lock = threading.Lock()
        self._crl: CRLBundle | None = None
        self._crl_stamp: tuple[int, int, int] | None = None
        self._revoked_entries = RevokedEntries()
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key())
        self._chain = (issuing, root)

    @classmethod
    def open(
        cls, ca_dir: Path, *, passphrase: bytes, config: LocalCAConfig | None = None
    ) -> LocalCA:
        paths = CAPaths(ca_dir)
        issuing = _load_cert(paths.issuing_cert)
        root = _load_cert(paths.root_cert)
        require_owner_only(paths.issuing_key)
        key = load_private_key(paths.issuing_key, passphrase)
        if key.public_key() != issuing.public_key():
            raise KeyStoreError(f"{paths.issuing_key} does not belong to {paths.issuing_cert}")
        return cls(
            paths, issuing=issuing, issuing_key=key, root=root, config=config or LocalCAConfig()
        )

    def close(self) -> None:
        self._ledger.close()

    # -- CertificateAuthority -------------------------------------------------------------

    @property
    def issuance_limits(self) -> IssuanceLimits:
        return self._limits

    def sign(self, plan: IssuancePlan) -> IssuedCertificate:
        """Sign ``plan`` with the issuing key and record it in the ledger."""
        cert = build_leaf(
            public_key=plan.public_key,
            subject=plan.subject,
            profile=plan.profile,
            issuer=self._issuing,
            issuer_key=self._key,
            serial=x509.random_serial_number(),
            not_before=plan.not_before,
            not_after=plan.not_after,
            authority_key_identifier=self._aki,
        )
        self._ledger.record_issued(
            serial=cert.serial_number,
            subject=plan.subject.path,
            profile=plan.profile.value,
            fingerprint=fingerprint_sha256(cert),
            not_after=plan.not_after,
            now=plan.issued_at,
        )
        return IssuedCertificate(
            certificate=cert, chain=self.ca_chain(), profile=plan.profile, subject=plan.subject
        )

    def revoke(self, serial: int, reason: RevocationReason, *, now: datetime) -> RevocationRecord:
        _require_aware(now)
        entry = self._ledger.get(serial)
        if entry is None:
            raise IssuanceRefusedError(
                f"no certificate with serial {format_serial(serial)} was issued by this CA"
            )
        if not self._ledger.mark_revoked(serial, reason, now):
            # Revoking twice is harmless and keeps the first time and reason (RFC 5280 5.3.2).
            current = self._ledger.get(serial)
            if current is None or current.revoked_at is None or current.reason is None:
                raise KeyStoreError(f"ledger lost serial {format_serial(serial)} while revoking it")
            return RevocationRecord(
                serial, current.reason, current.revoked_at, already_revoked=True
            )
        self.publish_crl(now=now)
        return RevocationRecord(serial, reason, now)

    def current_crl(self, *, now: datetime) -> CRLBundle:
        fresh = self.republish_crl_if_due(now=now)
        if fresh is not None:
            return fresh
        with self._crl_lock:
            crl = self._crl
        return crl if crl is not None else self.publish_crl(now=now)

    def crl_due(self, crl: CRLBundle, *, now: datetime) -> bool:
        """Whether ``crl`` should be replaced now: less than the refresh margin is left."""
        margin = self._config.crl_refresh_margin
        if margin is None:
            margin = self._config.crl_lifetime / 2
        return crl.next_update - now < margin

    def republish_crl_if_due(self, *, now: datetime) -> CRLBundle | None:
        """The new CRL if one was published now, else None (the current one, possibly published
        by another process, is still fresh enough). The background republishers call this."""
        _require_aware(now)
        with self._crl_lock:
            # Another process sharing this CA directory (`idmz ca revoke` next to the
            # provisioning service) may have published a newer CRL: pick it up, so a
            # revocation is never hidden behind this process's cached copy.
            published = self._load_published_crl_if_changed()
            if published is not None and (
                self._crl is None or _crl_number(published) > _crl_number(self._crl)
            ):
                self._crl = published
            crl = self._crl
        if crl is not None and not self.crl_due(crl, now=now):
            return None
        return self.publish_crl(now=now)

    def _load_published_crl_if_changed(self) -> CRLBundle | None:
        """The CRL on disk if the file changed since we last looked (one stat per call)."""
        try:
            st = self.paths.crl_der.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._crl_stamp:
            return None
        self._crl_stamp = stamp
        return self._load_published_crl()

    def _load_published_crl(self) -> CRLBundle | None:
        """The CRL another process (or an earlier run) published, if it is ours: a fresh process
        reuses it instead of bumping the CRL number on every start."""
        try:
            der = self.paths.crl_der.read_bytes()
            crl = x509.load_der_x509_crl(der)
        except (OSError, ValueError):
            return None
        if crl.issuer != self._issuing.subject or crl.next_update_utc is None:
            return None
        if not crl.is_signature_valid(self._key.public_key()):
            return None
        return CRLBundle(crl=crl, pem=crl_pem_from_der(der), der=der)

    def publish_crl(self, *, now: datetime) -> CRLBundle:
        """Generate a new CRL from the ledger and replace ``crl.pem``/``crl.der`` atomically."""
        _require_aware(now)
        with self._crl_lock:
            bundle = sign_crl(
                issuer=self._issuing,
                issuer_key=self._key,
                entries=self._revoked_entries.entries(self._ledger.revoked_rows()),
                crl_number=self._ledger.next_crl_number(),
                now=now,
                lifetime=self._config.crl_lifetime,
            )
            _write_atomic(self.paths.crl_der, bundle.der)
            _write_atomic(self.paths.crl_pem, bundle.pem)
            self._crl = bundle
        return bundle

    def ca_chain(self) -> tuple[x509.Certificate, ...]:
        return self._chain

    # -- operator queries -------------------------------------------------------------------

    @property
    def root_fingerprint(self) -> str:
        return fingerprint_sha256(self._root)

    @property
    def issuing_certificate(self) -> x509.Certificate:
        return self._issuing

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root

    def lookup(self, serial: int) -> LedgerEntry | None:
        return self._ledger.get(serial)

    def certificates_for(self, subject: Subject | str) -> list[LedgerEntry]:
        return self._ledger.by_subject(subject if isinstance(subject, str) else subject.path)

    @property
    def ledger(self) -> Ledger:
        return self._ledger
