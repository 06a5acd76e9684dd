"""`VaultCA`: the `CertificateAuthority` backed by HashiCorp Vault's PKI secrets engine.

Endpoints: ``auth/<approle>/login``, ``<mount>/sign/<role>``, ``<mount>/revoke``,
``<mount>/cert/<serial>``, ``<mount>/ca_chain``, ``<mount>/crl/pem``.

Calls go through the AppRole session `pki.vault_session.VaultSession`, the only module that
imports ``hvac``; every hvac/requests exception is translated there, once.

>>> ca = VaultCA.connect(VaultConfig(url="https://vault.plant1:8200", mount="pki_int",
...     role="idmz-device", role_id="...", secret_id="..."))                 # doctest: +SKIP
>>> issued = ca.issue(verified_csr, identity, profile=ProfileName.DEVICE, now=now)  # doctest: +SKIP

Vault is an upstream, not a judge: the certificate is planned by `pki.issuance` exactly as for
the embedded CA (names, profile, validity, limits; ADR 0018), Vault only signs the plan, and
what it returns must carry exactly the planned names, key, EKU and validity, chained to the
issuing CA. A certificate that
does not (a role with ``use_csr_sans``/``use_csr_common_name``, a ``max_ttl`` that silently cut
the validity, a role that adds serverAuth to device certificates) is revoked in Vault at once and
the request refused, naming what differed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.authority import (
    CRLBundle,
    IssuedCertificate,
    RevocationReason,
    RevocationRecord,
    fingerprint_sha256,
    format_serial,
)
from pki.crl import load_crl
from pki.errors import IssuanceRefusedError, KeyStoreError
from pki.files import CAPaths, require_aware
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.issuance import IssuanceLimits, IssuancePlan, PlannedIssuer
from pki.ledger import Ledger, LedgerEntry
from pki.profiles import SignerName, Subject
from pki.vault_answers import check_returned, checked_chain, data_of, issued_by
from pki.vault_config import VaultConfig as VaultConfig  # re-exported: pki.vault.VaultConfig
from pki.vault_config import vault_serial as vault_serial
from pki.vault_mirror import VaultMirror
from pki.vault_session import VaultSession


class VaultCA(PlannedIssuer):
    """Issue, revoke and read CRLs through Vault's PKI engine (``sign/<role>``, ``revoke``,
    ``ca_chain``, ``crl/pem``). Thread-safe: one session (`VaultSession`), re-login under its
    lock on 403."""

    def __init__(
        self,
        config: VaultConfig,
        session: VaultSession,
        *,
        ledger: Ledger | None = None,
        mirror: VaultMirror | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._client = session.client
        self._call = session.call
        self._ledger = ledger
        self._mirror = mirror
        self._limits = IssuanceLimits(key_policy=config.key_policy)
        self._chain: tuple[x509.Certificate, ...] | None = None

    @property
    def logins(self) -> int:
        """AppRole logins so far (for operators and tests)."""
        return self._session.logins

    @property
    def renewals(self) -> int:
        """AppRole token renewals (``renew-self``) so far."""
        return self._session.renewals

    @classmethod
    def connect(cls, config: VaultConfig, *, ca_dir: Path | None = None) -> VaultCA:
        """Log in with AppRole. With a ``ca_dir`` (``<home>/ca``), every certificate Vault signs
        is recorded in its ``ledger.sqlite`` too (serial, subject, not-after, and the certificate,
        so a role with ``no_store`` can still revoke it), and Vault's chain and CRL are
        republished there as the CA files brokers and the relay read (ADR 0019)."""
        session = VaultSession.open(config)
        ledger = mirror = None
        if ca_dir is not None:
            ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            paths = CAPaths(ca_dir)
            ledger, mirror = Ledger(paths.ledger), VaultMirror(paths)
        ca = cls(config, session, ledger=ledger, mirror=mirror)
        try:
            with session.lock:
                session.login()
            if mirror is not None:
                ca.current_crl(now=datetime.now(UTC))  # reads and publishes the chain too
        except BaseException:
            ca.close()
            raise
        return ca

    @property
    def paths(self) -> CAPaths:
        if self._mirror is None:
            raise KeyStoreError("this Vault CA was opened without a CA directory")
        return self._mirror.paths

    @property
    def root_fingerprint(self) -> str:
        return fingerprint_sha256(self.ca_chain()[-1])

    def close(self) -> None:
        self._client.adapter.close()
        if self._ledger is not None:
            self._ledger.close()

    @property
    def ledger(self) -> Ledger | None:
        return self._ledger

    def lookup(self, serial: int) -> LedgerEntry | None:
        """The ledger's row for ``serial`` (None without a CA directory or if unknown)."""
        return self._ledger.get(serial) if self._ledger is not None else None

    def certificates_for(self, subject: Subject | str) -> list[LedgerEntry]:
        """Every certificate Vault signed for ``subject`` through idmz, oldest first."""
        if self._ledger is None:
            return []
        return self._ledger.by_subject(subject if isinstance(subject, str) else subject.path)

    # -- CertificateAuthority -------------------------------------------------------------

    @property
    def issuance_limits(self) -> IssuanceLimits:
        return self._limits

    def sign(self, plan: IssuancePlan) -> IssuedCertificate:
        """Send the plan to ``sign/<role>`` with the names idmz decided, then check Vault's
        answer against the plan; a certificate that differs is revoked in Vault and refused."""
        subject = plan.subject
        params: dict[str, Any] = {
            "ttl": f"{int(plan.lifetime.total_seconds())}s",
            "format": "pem",
            "exclude_cn_from_sans": True,
        }
        if isinstance(subject, DeviceIdentity | ConsumerIdentity | SignerName):
            params["uri_sans"] = subject.spiffe_id
        else:
            if subject.dns_names:
                params["alt_names"] = ",".join(subject.dns_names)
            if subject.ip_addresses:
                params["ip_sans"] = ",".join(str(ip) for ip in subject.ip_addresses)
        csr_pem = plan.csr.csr.public_bytes(serialization.Encoding.PEM).decode()
        response = self._call(
            f"sign {subject}",
            lambda: self._client.secrets.pki.sign_certificate(
                name=self._config.role_for(plan.profile),
                csr=csr_pem,
                common_name=subject.path,
                extra_params=params,
                mount_point=self._config.mount,
            ),
        )
        data = data_of(response, f"sign {subject}")
        try:
            cert = x509.load_pem_x509_certificate(str(data["certificate"]).encode())
        except (KeyError, ValueError, x509.InvalidVersion) as exc:
            raise KeyStoreError(f"Vault's answer for {subject} holds no PEM certificate") from exc
        chain = self.ca_chain()
        if not issued_by(cert, chain[0]):
            # The mount's issuer may have been rotated since the chain was cached: re-read once.
            self._chain = None
            chain = self.ca_chain()
        try:
            check_returned(cert, plan, chain[0])
        except IssuanceRefusedError:
            # Do not leave a certificate we refused to hand out valid in Vault.
            self._revoke_in_vault(cert.serial_number, cert)
            raise
        if self._ledger is not None:
            try:
                self._ledger.record_issued(
                    serial=cert.serial_number,
                    subject=subject.path,
                    profile=plan.profile.value,
                    fingerprint=fingerprint_sha256(cert),
                    not_after=cert.not_valid_after_utc,
                    now=plan.issued_at,
                    certificate_der=cert.public_bytes(serialization.Encoding.DER),
                )
            except KeyStoreError:
                # Never hand out a certificate idmz could not revoke later.
                self._revoke_in_vault(cert.serial_number, cert)
                raise
        return IssuedCertificate(
            certificate=cert, chain=chain, profile=plan.profile, subject=subject
        )

    def revoke(self, serial: int, reason: RevocationReason, *, now: datetime) -> RevocationRecord:
        """Revoke in Vault (which rebuilds its CRL). Vault records no reason code: the reason
        lives in the audit record the caller writes. Vault answers a second revocation with the
        first one's time and no marker, so ``cert/<serial>`` is read first to tell them apart."""
        require_aware(now)
        earlier = self._revocation_time(serial)
        if earlier is not None:
            if self._ledger is not None:
                self._ledger.mark_revoked(serial, reason, earlier)
            return RevocationRecord(serial, reason, earlier, already_revoked=True)
        der = self._ledger.certificate_der(serial) if self._ledger is not None else None
        cert = x509.load_der_x509_certificate(der) if der is not None else None
        stamp = self._revoke_in_vault(serial, cert)
        revoked_at = datetime.fromtimestamp(int(stamp), UTC) if stamp else now
        if self._ledger is not None:
            self._ledger.mark_revoked(serial, reason, revoked_at)
        if self._mirror is not None:
            self.current_crl(now=now)  # Vault rebuilt its CRL: republish it now
        return RevocationRecord(serial, reason, revoked_at)

    def _revoke_in_vault(self, serial: int, cert: x509.Certificate | None) -> Any:
        """``revoke`` with the certificate when idmz holds it (required for roles with
        ``no_store``; Vault then keeps the revocation), else by serial. Returns Vault's
        ``revocation_time``."""
        label = f"revoke {format_serial(serial)}"
        body: dict[str, str] = (
            {"certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}
            if cert is not None
            else {"serial_number": vault_serial(serial)}
        )
        response = self._call(
            label,
            lambda: self._client.adapter.post(f"/v1/{self._config.mount}/revoke", json=body),
        )
        return data_of(response, label).get("revocation_time")

    def _revocation_time(self, serial: int) -> datetime | None:
        """When Vault revoked ``serial``, or None (not revoked, or unknown: revoke then says so)."""
        try:
            response = self._call(
                f"read certificate {format_serial(serial)}",
                # The hyphenated form Vault documents for URL paths (no escaping needed).
                lambda: self._client.secrets.pki.read_certificate(
                    serial=vault_serial(serial).replace(":", "-"), mount_point=self._config.mount
                ),
            )
        except IssuanceRefusedError:
            return None
        stamp = data_of(response, "read certificate").get("revocation_time")
        return datetime.fromtimestamp(int(stamp), UTC) if stamp else None

    def current_crl(self, *, now: datetime) -> CRLBundle:
        """Vault's current CRL (``crl/pem``), checked: signed by the issuing CA and not stale.
        If less than ``crl_refresh_margin`` remains before its nextUpdate, Vault is asked to
        rebuild it first (``crl/rotate``). With a CA directory, a newer CRL is republished as
        ``crl.pem``/``crl.der`` (`pki.vault_mirror`)."""
        require_aware(now)
        bundle = self._read_crl(now)
        if bundle.next_update - now < self._config.crl_refresh_margin:
            self._call(
                "rotate CRL",
                lambda: self._client.adapter.get(f"/v1/{self._config.mount}/crl/rotate"),
            )
            bundle = self._read_crl(now)
        if self._mirror is not None:
            self._mirror.publish_crl(bundle)
        return bundle

    def _read_crl(self, now: datetime) -> CRLBundle:
        text = self._call(
            "read CRL", lambda: self._client.secrets.pki.read_crl(mount_point=self._config.mount)
        )
        try:
            crl = load_crl(str(text).encode())
        except ValueError as exc:
            raise KeyStoreError("Vault's crl/pem is not a PEM CRL") from exc
        issuing = self.ca_chain()[0]
        if crl.issuer != issuing.subject or not crl.is_signature_valid(issuing.public_key()):  # type: ignore[arg-type]
            raise KeyStoreError("Vault's CRL is not signed by the issuing CA in its ca_chain")
        if crl.next_update_utc is None or crl.next_update_utc < now:
            raise KeyStoreError(
                f"Vault's CRL expired at {crl.next_update_utc}; check the mount's crl config"
            )
        return CRLBundle(
            crl=crl,
            pem=crl.public_bytes(serialization.Encoding.PEM),
            der=crl.public_bytes(serialization.Encoding.DER),
        )

    def ca_chain(self) -> tuple[x509.Certificate, ...]:
        """Issuing CA first, root last, read once from ``ca_chain`` and checked link by link."""
        if self._chain is not None:
            return self._chain
        text = self._call(
            "read CA chain",
            lambda: self._client.secrets.pki.read_ca_certificate_chain(
                mount_point=self._config.mount
            ),
        )
        self._chain = checked_chain(str(text).encode())
        if self._mirror is not None:
            self._mirror.publish_chain(self._chain)
        return self._chain
