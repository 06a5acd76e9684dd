"""Making the embedded CA: a new root and issuing CA, or the offline-root ceremony (the issuing
key and its request made on the online host, signed on the root's host, installed back).

Each step refuses to overwrite a CA or a key that exists: re-keying is a deliberate, separate act.
The CA that these files make is opened and run by `pki.local.LocalCA`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from bedrock.files import write_atomic as _write_atomic
from pki.authority import pem
from pki.builder import build_intermediate, build_intermediate_request, build_root, ca_name
from pki.errors import ConfigError, CSRError, IssuanceRefusedError
from pki.files import CAPaths, require_owner_only
from pki.files import load_ca_certificate as _load_cert
from pki.files import require_aware as _require_aware
from pki.keys import (
    KeyPolicy,
    check_public_key,
    generate_private_key,
    load_private_key,
    write_private_key,
)
from pki.local import LocalCA


def init_local_ca(
    ca_dir: Path,
    *,
    passphrase: bytes,
    organization: str,
    now: datetime,
    key_type: str = "ec-p256",
    root_validity: timedelta = timedelta(days=3650),
    issuing_validity: timedelta = timedelta(days=1825),
    root_only: bool = False,
) -> CAPaths:
    """Create a root CA and (unless ``root_only``) an issuing CA signed by it.

    Refuses to overwrite an existing CA: re-keying is a deliberate, separate act.
    """
    _require_aware(now)
    paths = CAPaths(ca_dir)
    if paths.root_cert.exists() or paths.issuing_cert.exists():
        raise ConfigError(f"a CA already exists in {ca_dir}; refusing to overwrite it")
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root_key = generate_private_key(key_type)
    root = build_root(
        key=root_key,
        name=ca_name(f"{organization} idmz root CA", organization),
        now=now,
        validity=root_validity,
    )
    write_private_key(paths.root_key, root_key, passphrase)
    _write_atomic(paths.root_cert, pem(root))
    if not root_only:
        issuing_key = generate_private_key(key_type)
        issuing = build_intermediate(
            public_key=issuing_key.public_key(),
            name=ca_name(f"{organization} idmz issuing CA", organization),
            root=root,
            root_key=root_key,
            now=now,
            validity=issuing_validity,
        )
        write_private_key(paths.issuing_key, issuing_key, passphrase)
        _write_atomic(paths.issuing_cert, pem(issuing))
        _write_atomic(paths.chain, pem(issuing) + pem(root))
        ca = LocalCA.open(ca_dir, passphrase=passphrase)
        ca.publish_crl(now=now)
        ca.close()
    return paths


def create_intermediate_request(
    ca_dir: Path, *, passphrase: bytes, organization: str, key_type: str = "ec-p256"
) -> bytes:
    """On the online host: make the issuing key and a CSR for the offline root to sign."""
    paths = CAPaths(ca_dir)
    if paths.issuing_key.exists():
        raise ConfigError(f"an issuing key already exists in {ca_dir}")
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_private_key(key_type)
    write_private_key(paths.issuing_key, key, passphrase)
    csr = build_intermediate_request(key, ca_name(f"{organization} idmz issuing CA", organization))
    data = csr.public_bytes(serialization.Encoding.PEM)
    _write_atomic(paths.intermediate_request, data)
    return data


def sign_intermediate(
    root_dir: Path, *, passphrase: bytes, unverified_csr: bytes, now: datetime, validity: timedelta
) -> bytes:
    """On the offline root host: sign an issuing CA's CSR (proof of possession checked)."""
    _require_aware(now)
    paths = CAPaths(root_dir)
    root = _load_cert(paths.root_cert)
    if not paths.root_key.exists():
        raise ConfigError(f"no root key in {root_dir}; sign intermediates on the offline root host")
    try:
        csr = x509.load_pem_x509_csr(unverified_csr)
    except ValueError as exc:
        raise IssuanceRefusedError("expected a PEM certificate request for the issuing CA") from exc
    if not csr.is_signature_valid:
        raise IssuanceRefusedError("the issuing CA's request failed proof of possession")
    try:
        key = check_public_key(csr.public_key(), KeyPolicy())
    except CSRError as exc:
        raise IssuanceRefusedError(f"issuing CA request refused: {exc}") from exc
    if validity <= timedelta(0):
        raise IssuanceRefusedError(f"issuing CA validity must be positive; found {validity}")
    if now + validity > root.not_valid_after_utc:
        # Refuse rather than silently truncate (Vault's silent TTL cut is a known complaint).
        raise IssuanceRefusedError(
            f"an issuing CA valid until {now + validity:%Y-%m-%d} would outlive the root "
            f"(valid until {root.not_valid_after_utc:%Y-%m-%d}); request a shorter validity"
        )
    require_owner_only(paths.root_key)
    root_key = load_private_key(paths.root_key, passphrase)
    cert = build_intermediate(
        public_key=key, name=csr.subject, root=root, root_key=root_key, now=now, validity=validity
    )
    return pem(cert)


def install_intermediate(
    ca_dir: Path, *, passphrase: bytes, cert_pem: bytes, root_pem: bytes, now: datetime
) -> None:
    """On the online host: install the signed issuing certificate and the root, then a first CRL."""
    _require_aware(now)
    paths = CAPaths(ca_dir)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        root = x509.load_pem_x509_certificate(root_pem)
    except ValueError as exc:
        raise ConfigError("expected the signed issuing certificate and the root as PEM") from exc
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError("the given root certificate is not self-signed") from exc
    if not paths.issuing_key.exists():
        raise ConfigError(
            f"no issuing key in {ca_dir}; run `idmz ca intermediate-request` on this host first"
        )
    key = load_private_key(paths.issuing_key, passphrase)
    if cert.public_key() != key.public_key():
        raise ConfigError("the signed issuing certificate does not match this host's issuing key")
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError("the issuing certificate was not signed by the given root") from exc
    _write_atomic(paths.root_cert, pem(root))
    _write_atomic(paths.issuing_cert, pem(cert))
    _write_atomic(paths.chain, pem(cert) + pem(root))
    ca = LocalCA.open(ca_dir, passphrase=passphrase)
    ca.publish_crl(now=now)
    ca.close()
