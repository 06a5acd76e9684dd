"""Who is on the other end of a mutual-TLS connection: the device a client certificate names,
after chain, revocation and profile checks, with an expired certificate accepted only inside its
group's renewal grace (ADR 0041).

The CRL comes from the CA's published file when one is configured (re-read when its mtime
changes, so a revocation made by another process, e.g. `idmz provisioning revoke`, counts at
once), else from the CA object.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from pki.authority import CertificateAuthority, format_serial
from pki.errors import CertificateError, MalformedIdentityError, RevokedCertificateError
from pki.identity import DeviceIdentity
from pki.verifier import ChainVerifier, VerifiedDevice
from policies.document import CertificatePolicy
from provisioning.errors import DeviceStateError, TokenError, UpstreamError
from provisioning.registry import Registry


class PeerVerifier:
    """Turns a TLS client certificate (DER) into a `VerifiedDevice` or raises a `RefusedError`."""

    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        registry: Registry,
        policy: CertificatePolicy,
        crl_file: Path | None,
    ) -> None:
        self._ca = ca
        self._registry = registry
        self._policy = policy
        self._crl_file = crl_file
        chain = ca.ca_chain()
        self._issuing, self._root = chain[0], chain[-1]
        self._verifier_lock = threading.Lock()
        self._verifier: tuple[object, ChainVerifier] | None = None
        self._grace_verifier: ChainVerifier | None = None

    def verifier(self, *, now: datetime) -> ChainVerifier:
        """A verifier over the current CRL (re-read when the CRL file changes)."""
        crl_bundle = self._ca.current_crl(now=now)
        crl = crl_bundle.crl
        key: object = crl_bundle.der
        if self._crl_file is not None:
            try:
                st = self._crl_file.stat()
                key = (st.st_mtime_ns, st.st_size)
                with self._verifier_lock:
                    cached = self._verifier
                if cached is not None and cached[0] == key:
                    return cached[1]
                crl = x509.load_der_x509_crl(self._crl_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise UpstreamError(f"cannot read the CRL {self._crl_file}") from exc
        else:
            with self._verifier_lock:
                cached = self._verifier
            if cached is not None and cached[0] == key:
                return cached[1]
        verifier = ChainVerifier(roots=[self._root], crls=[crl])
        with self._verifier_lock:
            self._verifier = (key, verifier)
        return verifier

    def authenticate(self, peer_der: bytes | None, *, now: datetime) -> VerifiedDevice:
        """Verify a TLS client certificate: chain, CRL, profile; expired only within grace."""
        if not peer_der:
            raise TokenError("no client certificate was presented", code="no-client-certificate")
        try:
            leaf = x509.load_der_x509_certificate(peer_der)
        except ValueError as exc:
            raise TokenError(
                "the client certificate does not parse", code="bad-certificate"
            ) from exc
        verify_at = now
        if now > leaf.not_valid_after_utc:
            grace = self._grace_for(leaf)
            if now > leaf.not_valid_after_utc + grace:
                raise DeviceStateError(
                    f"certificate {format_serial(leaf.serial_number)} expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
                    f" and its group allows {grace.days} days of grace",
                    code="expired-certificate",
                )
            verify_at = leaf.not_valid_after_utc - timedelta(seconds=1)
        try:
            if verify_at == now:
                return self.verifier(now=now).verify_device(leaf, [self._issuing], now=now)
            return self._verify_within_grace(leaf, verify_at=verify_at, now=now)
        except RevokedCertificateError as exc:
            raise DeviceStateError(str(exc), code="revoked-certificate") from exc
        except CertificateError as exc:
            raise TokenError(f"client certificate refused: {exc}", code="bad-certificate") from exc

    def _verify_within_grace(
        self, leaf: x509.Certificate, *, verify_at: datetime, now: datetime
    ) -> VerifiedDevice:
        """An expired certificate inside its group's grace: the chain and profile are checked as
        of its last valid second, revocation against today's CRL (a CRL never predates itself,
        so the chain verifier cannot check both at one time)."""
        with self._verifier_lock:
            if self._grace_verifier is None:
                self._grace_verifier = ChainVerifier(
                    roots=[self._root], unsafe_skip_revocation=True
                )
            grace_verifier = self._grace_verifier
        peer = grace_verifier.verify_device(leaf, [self._issuing], now=verify_at)
        crl = self._current_crl(now)
        if not crl.is_signature_valid(self._issuing.public_key()):  # type: ignore[arg-type]
            raise UpstreamError("the current CRL does not verify with the issuing CA key")
        if crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
            raise RevokedCertificateError(
                f"certificate {peer.serial_hex} ({peer.identity}) is revoked"
            )
        return peer

    def _current_crl(self, now: datetime) -> x509.CertificateRevocationList:
        if self._crl_file is not None:
            try:
                return x509.load_der_x509_crl(self._crl_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise UpstreamError(f"cannot read the CRL {self._crl_file}") from exc
        return self._ca.current_crl(now=now).crl

    def _grace_for(self, unverified_leaf: x509.Certificate) -> timedelta:
        # The name is read before verification only to look up the group's grace period;
        # verification below still decides who this is.
        try:
            uri = unverified_leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
            names = uri.get_values_for_type(x509.UniformResourceIdentifier)
            path = DeviceIdentity.from_spiffe(names[0]).path if len(names) == 1 else None
        except (x509.ExtensionNotFound, MalformedIdentityError, ValueError):
            path = None
        group = self._registry.group_for(path) if path else None
        days = group.renewal_grace_days if group is not None else self._policy.renewal_grace_days
        return timedelta(days=days)
