"""`VaultCA`: the `CertificateAuthority` backed by HashiCorp Vault's PKI secrets engine.

Endpoints: ``auth/<approle>/login``, ``<mount>/sign/<role>``, ``<mount>/revoke``,
``<mount>/cert/<serial>``, ``<mount>/ca_chain``, ``<mount>/crl/pem``.

The only module that imports ``hvac``; every hvac/requests exception is translated here, once.

>>> ca = VaultCA.connect(VaultConfig(url="https://vault.plant1:8200", mount="pki_int",
...     role="idmz-device", role_id="...", secret_id="..."))                 # doctest: +SKIP
>>> issued = ca.issue(verified_csr, identity, profile=ProfileName.DEVICE, now=now)  # doctest: +SKIP

Vault is an upstream, not a judge: the certificate is planned by `pki.issuance` exactly as for
the embedded CA (names, profile, validity, limits; ADR 0016), Vault only signs the plan, and
what it returns must carry exactly the planned names, key, EKU and validity, chained to the
issuing CA. A certificate that
does not (a role with ``use_csr_sans``/``use_csr_common_name``, a ``max_ttl`` that silently cut
the validity, a role that adds serverAuth to device certificates) is revoked in Vault at once and
the request refused, naming what differed.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pki.authority import (
    CRLBundle,
    IssuedCertificate,
    RevocationReason,
    RevocationRecord,
    format_serial,
)
from pki.crl import load_crl
from pki.errors import IssuanceRefusedError, KeyStoreError
from pki.files import require_aware
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.issuance import IssuanceLimits, IssuancePlan, PlannedIssuer
from pki.profiles import SignerName
from pki.vault_config import VaultConfig as VaultConfig  # re-exported: pki.vault.VaultConfig
from pki.vault_config import vault_serial as vault_serial

_T = TypeVar("_T")
# Vault stamps NotBefore 30 s in the past and may round; anything within this is "as asked".
VALIDITY_TOLERANCE = timedelta(minutes=5)


class VaultCA(PlannedIssuer):
    """Issue, revoke and read CRLs through Vault's PKI engine (``sign/<role>``, ``revoke``,
    ``ca_chain``, ``crl/pem``). Thread-safe: one client, re-login under a lock on 403."""

    def __init__(self, config: VaultConfig, client: Any) -> None:
        self._config = config
        self._client = client
        self._limits = IssuanceLimits(key_policy=config.key_policy)
        self._lock = threading.Lock()
        self._chain: tuple[x509.Certificate, ...] | None = None

    @classmethod
    def connect(cls, config: VaultConfig) -> VaultCA:
        client = hvac.Client(
            url=config.url,
            namespace=config.namespace,
            verify=config.ca_bundle if config.ca_bundle else True,
            timeout=config.timeout_s,
        )
        ca = cls(config, client)
        ca._login()
        return ca

    def close(self) -> None:
        self._client.adapter.close()

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
        data = _data(response, f"sign {subject}")
        try:
            cert = x509.load_pem_x509_certificate(str(data["certificate"]).encode())
        except (KeyError, ValueError, x509.InvalidVersion) as exc:
            raise KeyStoreError(f"Vault's answer for {subject} holds no PEM certificate") from exc
        chain = self.ca_chain()
        if not _issued_by(cert, chain[0]):
            # The mount's issuer may have been rotated since the chain was cached: re-read once.
            self._chain = None
            chain = self.ca_chain()
        try:
            _check_returned(cert, plan, chain[0])
        except IssuanceRefusedError:
            # Do not leave a certificate we refused to hand out valid in Vault.
            self._call(
                f"revoke {format_serial(cert.serial_number)}",
                lambda: self._client.secrets.pki.revoke_certificate(
                    serial_number=vault_serial(cert.serial_number),
                    mount_point=self._config.mount,
                ),
            )
            raise
        return IssuedCertificate(
            certificate=cert, chain=chain, profile=plan.profile, subject=subject
        )

    def revoke(self, serial: int, reason: RevocationReason, *, now: datetime) -> RevocationRecord:
        """Revoke in Vault (which rebuilds its CRL). Vault records no reason code: the reason
        lives in the audit record the caller writes. Vault answers a second revocation with the
        first one's time and no marker, so ``cert/<serial>`` is read first to tell them apart."""
        require_aware(now)
        label = f"revoke {format_serial(serial)}"
        earlier = self._revocation_time(serial)
        if earlier is not None:
            return RevocationRecord(serial, reason, earlier, already_revoked=True)
        response = self._call(
            label,
            lambda: self._client.secrets.pki.revoke_certificate(
                serial_number=vault_serial(serial), mount_point=self._config.mount
            ),
        )
        stamp = _data(response, label).get("revocation_time")
        revoked_at = datetime.fromtimestamp(int(stamp), UTC) if stamp else now
        return RevocationRecord(serial, reason, revoked_at)

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
        stamp = _data(response, "read certificate").get("revocation_time")
        return datetime.fromtimestamp(int(stamp), UTC) if stamp else None

    def current_crl(self, *, now: datetime) -> CRLBundle:
        """Vault's current CRL (``crl/pem``), checked: signed by the issuing CA and not stale."""
        require_aware(now)
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
        self._chain = _checked_chain(str(text).encode())
        return self._chain

    # -- plumbing ---------------------------------------------------------------------------

    def _login(self) -> None:
        try:
            self._client.auth.approle.login(
                role_id=self._config.role_id,
                secret_id=self._config.secret_id,
                mount_point=self._config.approle_mount,
            )
        except hvac.exceptions.VaultError as exc:
            # Vault answers 400 for a wrong or expired secret_id; either way the credentials,
            # not the request, are at fault. Never echo them.
            raise KeyStoreError(
                f"Vault AppRole login at {self._config.url} failed ({type(exc).__name__}: "
                f"{_errors(exc)}); check the role_id/secret_id and the secret_id's TTL"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise KeyStoreError(f"cannot reach Vault at {self._config.url} for login") from exc

    def _call(self, what: str, func: Callable[[], _T]) -> _T:
        """Run ``func``; on 403 (token expired or revoked) log in again once and retry."""
        try:
            return self._call_once(what, func, translate_forbidden=False)
        except hvac.exceptions.Forbidden:
            with self._lock:
                self._login()
            return self._call_once(what, func)

    def _call_once(
        self, what: str, func: Callable[[], _T], *, translate_forbidden: bool = True
    ) -> _T:
        try:
            return func()
        except hvac.exceptions.Forbidden as exc:
            if not translate_forbidden:
                raise
            raise KeyStoreError(f"Vault refused {what}: permission denied") from exc
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath) as exc:
            raise IssuanceRefusedError(f"Vault refused {what}: {_errors(exc)}") from exc
        except hvac.exceptions.VaultError as exc:
            raise KeyStoreError(
                f"Vault failed {what}: {type(exc).__name__}: {_errors(exc)}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise KeyStoreError(f"cannot reach Vault at {self._config.url} for {what}") from exc


def _errors(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(e)[:300] for e in errors)
    return "no detail"


def _data(response: object, what: str) -> dict[str, Any]:
    """The ``data`` member of Vault's JSON envelope."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise KeyStoreError(f"Vault's answer to {what} has no data object")
    return data


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _checked_chain(pem_text: bytes) -> tuple[x509.Certificate, ...]:
    try:
        chain = tuple(x509.load_pem_x509_certificates(pem_text))
    except ValueError as exc:
        raise KeyStoreError("Vault's ca_chain is not PEM certificates") from exc
    if not chain:
        raise KeyStoreError("Vault's ca_chain is empty; configure the mount's issuer")
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise KeyStoreError("Vault's ca_chain is out of order or broken") from exc
    try:
        chain[-1].verify_directly_issued_by(chain[-1])
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise KeyStoreError(
            "Vault's ca_chain does not end at a self-signed root; import the issuing CA with "
            "its full chain (set-signed with the root appended)"
        ) from exc
    return chain


def _check_returned(cert: x509.Certificate, plan: IssuancePlan, issuing: x509.Certificate) -> None:
    """Refuse a certificate from Vault that says anything other than what was planned."""
    subject, not_after = plan.subject, plan.not_after
    problems: list[str] = []
    if cert.public_key() != plan.public_key:
        problems.append("it certifies a different public key than the CSR's")
    if not _issued_by(cert, issuing):
        problems.append("it is not signed by the issuing CA in ca_chain")
    if cert.subject != plan.name:
        cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        problems.append(
            f"CN expected {subject.path!r} alone, found {cns} (set use_csr_common_name=false)"
        )
    try:
        found = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        found = []
    expected = plan.alt_names
    if sorted(map(_name, found)) != sorted(map(_name, expected)):
        problems.append(
            f"SANs expected {sorted(map(_name, expected))}, found {sorted(map(_name, found))} "
            "(set use_csr_sans=false and exclude_cn_from_sans)"
        )
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if ca:
        problems.append("it says CA:true")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature or usage.key_cert_sign or usage.crl_sign:
            problems.append(
                "keyUsage must include digitalSignature and exclude certificate/CRL signing"
            )
    except x509.ExtensionNotFound:
        problems.append("keyUsage is missing")
    want = plan.extended_key_usage
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = []
    if ekus != [want]:
        names = [getattr(e, "_name", e.dotted_string) for e in ekus]
        problems.append(
            f"extendedKeyUsage expected only {getattr(want, '_name', want.dotted_string)}, "
            f"found {names} (set the role's server_flag/client_flag/code_signing_flag)"
        )
    delta = cert.not_valid_after_utc - not_after
    if abs(delta) > VALIDITY_TOLERANCE:
        problems.append(
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z, asked until "
            f"{not_after:%Y-%m-%d %H:%M}Z (a role or mount max_ttl cut it; raise it or ask less)"
        )
    if problems:
        raise IssuanceRefusedError(
            f"Vault returned certificate {format_serial(cert.serial_number)} for {subject} that "
            f"does not match the request, revoked it and refused: {'; '.join(problems)}"
        )


def _name(name: x509.GeneralName) -> str:
    value = name.value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return f"IP:{value}"
    return f"{type(name).__name__}:{value}"
