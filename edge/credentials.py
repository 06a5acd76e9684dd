"""The gateway's credential directory (docs/contracts.md section 2), read for the uplink.

``key.pem`` (0600), ``cert.pem`` (leaf), ``chain.pem`` (issuing CA(s)), ``ca.pem`` (the pinned
root), ``identity`` (the identity path). `idmz enroll` writes them and `idmz renew` replaces
them atomically; the uplink calls `fingerprint()` periodically and reconnects with the new
files when it changes, so a renewal needs no restart.

`load_credentials` refuses a key readable by group or others, a certificate whose URI SAN is
not the identity in ``identity``, and a certificate that does not belong to the key.
"""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge.errors import ConfigError
from pki.errors import MalformedIdentityError
from pki.identity import DeviceIdentity

FILES = ("key.pem", "cert.pem", "chain.pem", "ca.pem", "identity")


@dataclass(frozen=True, slots=True)
class Credentials:
    directory: Path
    identity: DeviceIdentity
    not_after_s: float
    fingerprint: tuple[tuple[str, int, int], ...]  # (file, mtime_ns, size) when loaded


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when enrollment or renewal rewrites a file (mtime and size)."""
    out = []
    for name in FILES:
        try:
            st = (directory / name).stat()
        except FileNotFoundError:
            out.append((name, 0, -1))
            continue
        out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def load_credentials(directory: Path) -> Credentials:
    """Check the directory and return what the uplink needs to know about it."""
    fp = fingerprint(directory)
    missing = [name for name, _, size in fp if size < 0]
    if missing:
        raise ConfigError(
            f"credential directory {directory} lacks {', '.join(missing)}; run `idmz enroll`"
        )
    key_path = directory / "key.pem"
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key_path} must be readable by its owner only (0600); found {mode:04o}")
    try:
        identity = DeviceIdentity.parse((directory / "identity").read_text().strip())
    except MalformedIdentityError as exc:
        raise ConfigError(f"{directory / 'identity'}: {exc}") from exc
    try:
        cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{directory}: cert.pem or key.pem is not a PEM certificate/key") from exc
    if cert.public_key() != key.public_key():
        raise ConfigError(f"{directory}: cert.pem does not belong to key.pem")
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris != [identity.spiffe_id]:
        raise ConfigError(
            f"{directory}: cert.pem names {uris}; expected exactly [{identity.spiffe_id!r}]"
        )
    return Credentials(directory, identity, cert.not_valid_after_utc.timestamp(), fp)


def client_tls_context(directory: Path) -> ssl.SSLContext:
    """Mutual TLS, TLS 1.2 or newer, verifying the server against the pinned root (plus the
    chain, to build the path) and presenting cert.pem + chain.pem with key.pem."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(directory / "ca.pem"))
        ctx.load_verify_locations(cafile=str(directory / "chain.pem"))
        # ssl only loads a presented chain from one file: write leaf + chain to a private
        # temporary file (public certificates only), load it, remove it.
        fd, tmp = tempfile.mkstemp(prefix="idmz-chain-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write((directory / "cert.pem").read_bytes().rstrip() + b"\n")
                fh.write((directory / "chain.pem").read_bytes())
            ctx.load_cert_chain(certfile=tmp, keyfile=str(directory / "key.pem"))
        finally:
            os.unlink(tmp)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot build TLS context from {directory}: {exc}") from exc
    return ctx
