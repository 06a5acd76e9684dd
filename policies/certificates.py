"""Certificate and CRL rules for deployment checks: lifetime against the policy's maximum for
the certificate's profile, key type and size, expiry; CRL present, parseable, signed by a CA
the listener trusts, and not past nextUpdate (RFC 5280 section 5.1.2.5)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from policies.document import CertificatePolicy
from policies.findings import Findings

# Warn this long before a CRL's nextUpdate (the CA host republishes at half of its 1-day life).
CRL_WARN_BEFORE = timedelta(hours=12)

_CURVES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def profile_of(cert: x509.Certificate) -> str:
    """Which certificate profile (policy ``max_validity_days`` key) ``cert`` belongs to."""
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "root-ca" if cert.issuer == cert.subject else "issuing-ca"
    except x509.ExtensionNotFound:
        pass
    try:
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if uri.startswith("spiffe://"):
            parts = uri[len("spiffe://") :].split("/")
            if len(parts) == 6:
                return "device"
            if len(parts) == 3 and parts[1] == "it":
                return "consumer"
            if len(parts) == 3 and parts[1] == "signer":
                return "model-signer"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        return "server"
    if ExtendedKeyUsageOID.CODE_SIGNING in usages:
        return "model-signer"
    return "device"  # unknown client certificate: hold it to the strictest limit


def key_type_of(cert: x509.Certificate) -> tuple[str, int | None]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name, f"ec-{key.curve.name}"), None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", None
    return type(key).__name__, None


def _subject(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else cert.subject.rfc4514_string()
    return f"{name!r} (serial {cert.serial_number:x})"


def check_certificates(
    out: Findings, name: str, data: bytes | None, policy: CertificatePolicy, now: datetime
) -> None:
    if data is None:
        out.error("cert.missing", name, None, f"certificate file {name} is missing",
                  "issue the certificate (idmz ca issue) or fix the path")  # fmt: skip
        return
    certs = load_pem_certificates(data)
    if not certs:
        out.error("cert.unreadable", name, None, f"{name} holds no PEM certificate",
                  "write the certificate as PEM")  # fmt: skip
        return
    for cert in certs:
        who = _subject(cert)
        profile = profile_of(cert)
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
        limit = policy.max_validity_days.get(profile)
        if limit is not None and days > limit + 1:  # +1 day: issuers back-date notBefore
            out.error("cert.validity_exceeds_policy", name, None,
                      f"{profile} certificate {who} is valid for {days:.0f} days; the policy allows {limit}",
                      f"re-issue it with at most {limit} days")  # fmt: skip
        if cert.not_valid_after_utc < now:
            out.error("cert.expired", name, None,
                      f"{profile} certificate {who} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
                      "renew it")  # fmt: skip
        kind, bits = key_type_of(cert)
        if kind not in policy.key_types or (bits is not None and bits < policy.min_rsa_bits):
            size = f" {bits}-bit" if bits else ""
            out.error("cert.weak_key", name, None,
                      f"{profile} certificate {who} has a{size} {kind} key; policy allows "
                      f"{', '.join(policy.key_types)} (RSA >= {policy.min_rsa_bits})",
                      "re-key and re-issue")  # fmt: skip


def read_crl_next_update(data: bytes | None) -> datetime | None:
    """The nextUpdate of a PEM or DER CRL; None when unreadable or absent."""
    if data is None:
        return None
    try:
        crl = (x509.load_pem_x509_crl if b"-----BEGIN" in data else x509.load_der_x509_crl)(data)
    except ValueError:
        return None
    return crl.next_update_utc


def check_crl(
    out: Findings,
    name: str,
    data: bytes | None,
    ca_certs: list[x509.Certificate],
    now: datetime,
    warn_before: timedelta = CRL_WARN_BEFORE,
) -> None:
    if data is None:
        out.error("crl.missing", name, None, f"crlfile {name} is missing: Mosquitto will not start, or "
                  "an operator will remove the line and accept revoked certificates",
                  "publish the CRL (idmz ca crl) to this path")  # fmt: skip
        return
    try:
        crl = (x509.load_pem_x509_crl if b"-----BEGIN" in data else x509.load_der_x509_crl)(data)
    except ValueError:
        out.error("crl.missing", name, None, f"{name} is not a readable CRL", "re-publish the CRL")
        return
    next_update = crl.next_update_utc
    if next_update is None or next_update < now:
        when = f"{next_update:%Y-%m-%d %H:%M}Z" if next_update else "never (no nextUpdate)"
        out.error("crl.expired", name, None, f"CRL nextUpdate is {when}; it is stale, so recent "
                  "revocations may be missing", "re-publish the CRL and keep `idmz ca crl --watch` running")  # fmt: skip
    elif next_update - now < warn_before:
        hours = (next_update - now).total_seconds() / 3600
        out.warn("crl.expiring", name, None,
                 f"CRL nextUpdate is {next_update:%Y-%m-%d %H:%M}Z, {hours:.1f} h away: the CA host has not "
                 "republished it (it does at half the lifetime); brokers refuse every handshake once it passes",
                 "check the provisioning service or idmz-crl.service on the CA host; `idmz ca crl` publishes now")  # fmt: skip
    if ca_certs and not any(_signed_by(crl, ca) for ca in ca_certs):
        out.error("crl.wrong_issuer", name, None,
                  f"the CRL (issuer {crl.issuer.rfc4514_string()}) is not signed by a CA in the listener's cafile",
                  "publish the CRL of the CA that issues the client certificates")  # fmt: skip


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if crl.issuer != ca.subject:
        return False
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (InvalidSignature, TypeError, ValueError):
        return False
