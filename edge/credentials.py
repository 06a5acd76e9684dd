"""The gateway's credential directory, read for the uplink. Its files and checks are
`pki.credentials.CredentialDir` (the contract's one owner, docs/contracts.md section 2);
this module adds the uplink's TLS context and edge errors.

`idmz enroll` writes the files and `idmz renew` replaces them atomically; the uplink calls
`fingerprint()` periodically and reconnects with the new files when it changes, so a renewal
needs no restart.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from edge.errors import ConfigError
from pki.credentials import CredentialDir, DeviceCredentials, Fingerprint
from pki.errors import ConfigError as PKIConfigError


def fingerprint(directory: Path) -> Fingerprint:
    """What changes when enrollment or renewal rewrites a file (mtime and size)."""
    return CredentialDir(directory).fingerprint()


def load_credentials(directory: Path) -> DeviceCredentials:
    """Check the directory (`pki.credentials.CredentialDir.load`) for the uplink."""
    try:
        return CredentialDir(directory).load()
    except PKIConfigError as exc:
        raise ConfigError(str(exc)) from exc


def client_tls_context(directory: Path) -> ssl.SSLContext:
    """Mutual TLS, TLS 1.2 or newer, verifying the server against the pinned root (plus the
    chain, to build the path) and presenting cert.pem + chain.pem with key.pem."""
    creds = CredentialDir(directory)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(creds.ca))
        ctx.load_verify_locations(cafile=str(creds.chain))
        # ssl only loads a presented chain from one file: write leaf + chain to a private
        # temporary file (public certificates only), load it, remove it.
        fd, tmp = tempfile.mkstemp(prefix="idmz-chain-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(creds.cert.read_bytes().rstrip() + b"\n")
                fh.write(creds.chain.read_bytes())
            ctx.load_cert_chain(certfile=tmp, keyfile=str(creds.key))
        finally:
            os.unlink(tmp)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot build TLS context from {directory}: {exc}") from exc
    return ctx
