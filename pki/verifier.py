"""Verifying a peer's certificate: chain, revocation, profile. Returns a trusted identity or raises.

The relay, the provisioning service (renewal over mutual TLS, EST re-enrollment) and the edge
(model signatures) call this; nobody hand-rolls path building: chains are built and checked by
`cryptography.x509.verification` (RFC 5280 path validation with the Web PKI profile's extension
checks), and this module adds what that does not do: revocation against the current CRL and the
idmz profiles.

>>> verifier = ChainVerifier(roots=[root], crls=[crl])            # doctest: +SKIP
>>> peer = verifier.verify_device(leaf, [issuing], now=now)       # doctest: +SKIP
>>> peer.identity.path                                            # doctest: +SKIP
'acme/plant1/press/line1/cell2/press-07'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import VerificationError as _ChainError

from pki.authority import CertificateFacts, format_serial
from pki.errors import CertificateError, MalformedIdentityError, RevokedCertificateError
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.profiles import SignerName

_log = logging.getLogger(__name__)
_I = TypeVar("_I", DeviceIdentity, ConsumerIdentity, SignerName)
_N = TypeVar("_N", DeviceIdentity, ConsumerIdentity)  # the identities a client presents

# root -> issuing -> leaf. A longer chain is not one this CA makes.
MAX_CHAIN_DEPTH = 2
# A CRL published a moment ago by a CA whose clock runs slightly ahead is still usable.
CRL_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class VerifiedPeer(CertificateFacts):
    """A certificate that chained to a trusted root, is not revoked and fits its profile."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # leaf first, root last


@dataclass(frozen=True, slots=True)
class VerifiedDevice(VerifiedPeer):
    identity: DeviceIdentity


@dataclass(frozen=True, slots=True)
class VerifiedConsumer(VerifiedPeer):
    identity: ConsumerIdentity


@dataclass(frozen=True, slots=True)
class VerifiedSigner(VerifiedPeer):
    identity: SignerName


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse one or more PEM certificates (or one DER); raise `CertificateError`."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion) as exc:
        raise CertificateError(
            "expected PEM or DER X.509 certificates; could not parse them"
        ) from exc
    if not certs:
        raise CertificateError("expected at least one certificate; found none")
    return certs


def _describe(cert: x509.Certificate) -> str:
    # Called while reporting a failure: the certificate may be malformed past its serial, and
    # cryptography parses names lazily, so describing it must not raise.
    try:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else "(no CN)"
    except ValueError:
        cn = "(malformed subject)"
    return f"certificate {format_serial(cert.serial_number)} ({cn})"


def _require_code_signing(
    policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage
) -> None:
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise ValueError("extendedKeyUsage does not include codeSigning")


class ChainVerifier:
    """Verify leaf certificates against trusted roots and the current CRLs.

    ``crls`` must include a current CRL from every CA that issues leaves; a missing or stale CRL
    fails closed. ``unsafe_skip_revocation`` exists for bootstrapping tools only and logs a
    warning every time a verifier is made with it.
    """

    def __init__(
        self,
        *,
        roots: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        unsafe_skip_revocation: bool = False,
    ) -> None:
        if not roots:
            raise CertificateError("a verifier needs at least one trusted root; found none")
        self._store = Store(list(roots))
        self._crls = list(crls)
        self._skip_revocation = unsafe_skip_revocation
        if unsafe_skip_revocation:
            _log.warning(
                "certificate verification without revocation checks (unsafe_skip_revocation)"
            )

    # The three profiles a peer can present.

    def verify_device(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], *, now: datetime
    ) -> VerifiedDevice:
        chain, identity = self._verify_named(leaf, intermediates, now, DeviceIdentity.from_spiffe)
        return VerifiedDevice(certificate=leaf, chain=chain, identity=identity)

    def verify_consumer(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], *, now: datetime
    ) -> VerifiedConsumer:
        chain, identity = self._verify_named(leaf, intermediates, now, ConsumerIdentity.from_spiffe)
        return VerifiedConsumer(certificate=leaf, chain=chain, identity=identity)

    def verify_signer(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], *, now: datetime
    ) -> VerifiedSigner:
        chain = self._verify_chain(leaf, intermediates, now=now, code_signing=True)
        uri = _single_uri(leaf)
        if not uri.startswith("spiffe://"):
            raise CertificateError(
                f"{_describe(leaf)}: expected a spiffe:// URI SAN; found {uri!r}"
            )
        try:
            identity = SignerName.parse(uri[len("spiffe://") :])
        except MalformedIdentityError as exc:
            raise CertificateError(f"{_describe(leaf)}: {exc}") from exc
        return VerifiedSigner(certificate=leaf, chain=chain, identity=identity)

    # The steps.

    def _verify_chain(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        *,
        now: datetime,
        code_signing: bool,
    ) -> tuple[x509.Certificate, ...]:
        # 1. Path building and validation (signatures, validity at `now`, CA constraints, EKU).
        builder = PolicyBuilder().store(self._store).time(now).max_chain_depth(MAX_CHAIN_DEPTH)
        if code_signing:
            # The client verifier expects clientAuth; a model signer has codeSigning instead.
            ee = ExtensionPolicy.permit_all().require_present(
                x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_code_signing
            )
            builder = builder.extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
            )
        try:
            verified = builder.build_client_verifier().verify(leaf, list(intermediates))
        except _ChainError as exc:
            raise CertificateError(f"{_describe(leaf)} does not verify: {exc}") from exc
        chain = tuple(verified.chain)
        # 2. Leaf profile: never a CA.
        try:
            bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound as exc:
            raise CertificateError(f"{_describe(leaf)}: BasicConstraints is missing") from exc
        if bc.ca:
            raise CertificateError(f"{_describe(leaf)}: a CA certificate cannot be a peer identity")
        # 3. Revocation of the leaf against its issuer's current CRL.
        if not self._skip_revocation:
            self._check_revocation(leaf, chain[1], now=now)
        return chain

    def _check_revocation(
        self, leaf: x509.Certificate, issuer: x509.Certificate, *, now: datetime
    ) -> None:
        crl = self._crl_for(issuer, now=now)
        if crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
            raise RevokedCertificateError(f"{_describe(leaf)} is revoked")

    def _crl_for(
        self, issuer: x509.Certificate, *, now: datetime
    ) -> x509.CertificateRevocationList:
        """The newest usable CRL signed by ``issuer``. Several may be loaded (old and new during
        a rollover): CRLs with a bad signature are never used, the newest current one wins, and
        if none is current the check fails closed, saying why."""
        name = issuer.subject.rfc4514_string()
        issuer_key = issuer.public_key()
        signed: list[x509.CertificateRevocationList] = []
        forged = False
        for crl in self._crls:
            try:
                if crl.issuer != issuer.subject:
                    continue
                valid = crl.is_signature_valid(issuer_key)  # type: ignore[arg-type]
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise CertificateError(f"a loaded CRL for {name} is malformed") from exc
            if valid:
                signed.append(crl)
            else:
                forged = True
        if not signed:
            if forged:
                raise CertificateError(f"the CRL for {name} has an invalid signature")
            raise CertificateError(f"no CRL from {name} is loaded; cannot check revocation")
        started = [c for c in signed if c.last_update_utc <= now + CRL_CLOCK_SKEW]
        if not started:
            first = min(c.last_update_utc for c in signed)
            raise CertificateError(
                f"the CRL for {name} is not valid until {first}; the clock at {now} is behind it"
            )
        crl = max(started, key=lambda c: c.last_update_utc)
        next_update = crl.next_update_utc
        if next_update is None or next_update < now:
            raise CertificateError(
                f"the CRL for {name} expired at {next_update}; "
                "refusing to verify against stale revocation data"
            )
        return crl

    def _verify_named(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime,
        parse: Callable[[str], _N],
    ) -> tuple[tuple[x509.Certificate, ...], _N]:
        """A client (device or consumer): the chain, the identity its URI SAN names, and a
        common name, if any, equal to that identity's path."""
        chain = self._verify_chain(leaf, intermediates, now=now, code_signing=False)
        identity = _parse_identity(leaf, parse)
        self._check_common_name(leaf, identity.path)
        return chain, identity

    @staticmethod
    def _check_common_name(leaf: x509.Certificate, path: str) -> None:
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cns and cns[0].value != path:
            raise CertificateError(
                f"{_describe(leaf)}: CN must equal the URI SAN's path {path!r}; found {cns[0].value!r}"
            )


def _single_uri(leaf: x509.Certificate) -> str:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError(f"{_describe(leaf)}: expected one URI SAN; found no SAN") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(
            f"{_describe(leaf)}: expected exactly one URI SAN; found {len(uris)}"
        )
    return uris[0]


def _parse_identity(leaf: x509.Certificate, parse: Callable[[str], _I]) -> _I:
    """The identity named by the leaf's single URI SAN, or `CertificateError`."""
    uri = _single_uri(leaf)
    try:
        return parse(uri)
    except MalformedIdentityError as exc:
        raise CertificateError(f"{_describe(leaf)}: {exc}") from exc
