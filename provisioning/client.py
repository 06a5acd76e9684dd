"""The gateway side: enroll with a one-time token, renew over mutual TLS, offline request/import.

Trust is pinned, never learned: the client fetches the CA chain over an unauthenticated TLS
connection, accepts it only if the root's SHA-256 equals the fingerprint the operator gave, and
from then on talks to the service only over TLS verified against that root. The private key is
generated here and never leaves the device.

>>> from datetime import UTC, timedelta
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> renewal_due(not_before=t0, not_after=t0 + timedelta(days=90), fraction=2 / 3) - t0
datetime.timedelta(days=60)
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import bedrock.errors as category
from pki.authority import fingerprint_sha256
from pki.credentials import CredentialDir
from pki.keys import PrivateKey, generate_private_key, load_private_key, write_private_key
from provisioning.errors import ConfigError, RefusedError, UpstreamError
from provisioning.patience import Patience, request_patiently

_log = logging.getLogger("provisioning.client")
OFFLINE_REQUEST_FORMAT = "idmz-offline-request/1"
OFFLINE_RESPONSE_FORMAT = "idmz-offline-response/1"


class EnrollRefusedError(RefusedError):
    """The service refused the request (its generic reason is in the message)."""


def normalize_fingerprint(text: str) -> str:
    cleaned = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ConfigError(
            "--ca-fingerprint must be the root CA's SHA-256 (64 hex digits, colons allowed)"
        )
    return cleaned


def make_csr(key: PrivateKey) -> bytes:
    """A CSR with no names: the CA writes the identity from its registry."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def renewal_due(*, not_before: datetime, not_after: datetime, fraction: float) -> datetime:
    return not_before + (not_after - not_before) * fraction


@dataclass(frozen=True, slots=True)
class PinnedCA:
    root: x509.Certificate
    chain_pem: bytes

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def tls_context(self, *, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.root_pem.decode())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx


def pin_ca(root_pem: bytes, chain_pem: bytes, fingerprint: str) -> PinnedCA:
    """Accept ``root_pem`` only if its SHA-256 equals ``fingerprint``; check the chain under it."""
    try:
        root = x509.load_pem_x509_certificate(root_pem)
        issuing = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise EnrollRefusedError(
            "the server's CA certificates do not parse", code="bad-ca"
        ) from exc
    found = fingerprint_sha256(root)
    if found != normalize_fingerprint(fingerprint):
        raise EnrollRefusedError(
            f"the server's root CA has SHA-256 {found}, not the pinned {normalize_fingerprint(fingerprint)}; "
            "refusing to trust it",
            code="pin-mismatch",
        )
    for cert in issuing:
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, Exception) as exc:
            raise EnrollRefusedError(
                "the issuing CA is not signed by the pinned root", code="bad-ca"
            ) from exc
    return PinnedCA(root, chain_pem)


def fetch_pinned_ca(
    server: str, fingerprint: str, *, timeout_s: float = 15.0, patience: Patience | None = None
) -> PinnedCA:
    # Unauthenticated TLS on purpose: what comes back is checked against the pin before use.
    url = f"{server.rstrip('/')}/v1/ca"
    try:
        with httpx.Client(verify=False, timeout=timeout_s) as http:  # noqa: S501
            response = request_patiently(http, "GET", url, patience or Patience())
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot reach {server}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise UpstreamError(f"{server}/v1/ca answered {response.status_code}")
    body = response.json()
    return pin_ca(str(body["root"]).encode(), str(body["chain"]).encode(), fingerprint)


def _post(
    http: httpx.Client, url: str, patience: Patience | None = None, **kwargs: Any
) -> dict[str, Any]:
    try:
        response = request_patiently(http, "POST", url, patience or Patience(), **kwargs)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500:
        raise UpstreamError(f"{url} answered {response.status_code}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = ""
        raise EnrollRefusedError(
            f"the service refused the request ({response.status_code}): {detail}"
        )
    data: dict[str, Any] = response.json()
    return data


def enroll(
    server: str,
    token: str,
    fingerprint: str,
    out: Path,
    *,
    identity: str | None = None,
    key_type: str = "ec-p256",
    patience: Patience | None = None,
) -> CredentialDir:
    """Enroll with ``token``; a busy service is waited for within ``patience``."""
    patience = patience or Patience()
    pinned = fetch_pinned_ca(server, fingerprint, patience=patience)
    key = generate_private_key(key_type)
    with httpx.Client(verify=pinned.tls_context(), timeout=30.0) as http:
        body = _post(
            http,
            f"{server.rstrip('/')}/v1/enroll",
            patience,
            json={"csr": make_csr(key).decode(), "identity": identity},
            headers={"Authorization": f"Bearer {token}"},
        )
    if body["root"].encode() != pinned.root_pem:
        raise EnrollRefusedError(
            "the service answered with a different root than the pinned one", code="pin-mismatch"
        )
    creds = CredentialDir(out)
    creds.write(
        key=key,
        cert_pem=body["certificate"].encode(),
        chain_pem=body["chain"].encode(),
        root_pem=pinned.root_pem,
        identity=body["identity"],
        server=server.rstrip("/"),
    )
    return creds


def renew(out: Path, *, server: str | None = None, key_type: str = "ec-p256") -> x509.Certificate:
    creds = CredentialDir(out)
    url = server or creds.server_url()
    if not url:
        raise ConfigError(f"no server URL: pass --server or re-enroll into {out}")
    pinned = PinnedCA(
        x509.load_pem_x509_certificate(creds.ca.read_bytes()), creds.chain.read_bytes()
    )
    key = generate_private_key(key_type)
    ctx = pinned.tls_context(cert=creds.cert, key=creds.key)
    with httpx.Client(verify=ctx, timeout=30.0) as http:
        body = _post(http, f"{url.rstrip('/')}/v1/renew", json={"csr": make_csr(key).decode()})
    identity = creds.identity.read_text().strip()
    if body["identity"] != identity:
        raise EnrollRefusedError(
            f"renewal returned identity {body['identity']}, expected {identity}"
        )
    creds.write(
        key=key,
        cert_pem=body["certificate"].encode(),
        chain_pem=body["chain"].encode(),
        root_pem=pinned.root_pem,
        identity=identity,
    )
    return creds.load_certificate()


def renew_if_due(
    out: Path, *, now: datetime, fraction: float, force: bool = False, server: str | None = None
) -> x509.Certificate | None:
    cert = CredentialDir(out).load_certificate()
    due = renewal_due(
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, fraction=fraction
    )
    if not force and now < due:
        return None
    return renew(out, server=server)


def renewal_daemon(
    out: Path,
    *,
    fraction: float,
    clock: Callable[[], datetime],
    stop: threading.Event,
    server: str | None = None,
    jitter_fraction: float = 0.05,
    retry_s: float = 60.0,
    max_sleep_s: float = 3600.0,
) -> None:
    """Renew at ``fraction`` of the lifetime, with jitter so a plant's gateways do not renew at
    the same second; retry failures with growing, jittered back-off (capped at ``max_sleep_s``)."""
    rng = random.SystemRandom()
    failures = 0
    while not stop.is_set():
        cert = CredentialDir(out).load_certificate()
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        due = renewal_due(
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            fraction=fraction,
        )
        due -= lifetime * (jitter_fraction * rng.random())
        wait = (due - clock()).total_seconds()
        if wait > 0:
            stop.wait(min(wait, max_sleep_s))
            continue
        try:
            new = renew(out, server=server)
            failures = 0
            _log.warning(
                "renewed %s: serial %x valid until %s",
                out,
                new.serial_number,
                new.not_valid_after_utc,
            )
        except (UpstreamError, RefusedError, category.ConfigError) as exc:  # pki.credentials too
            failures += 1
            delay = min(max_sleep_s, retry_s * 2 ** min(failures, 6)) * (0.5 + rng.random() / 2)
            _log.warning("renewal of %s failed (%s); retrying in %.0f s", out, exc, delay)
            stop.wait(delay)


# -- air-gapped enrollment --------------------------------------------------------------------


def offline_request(
    out: Path, identity: str, request_file: Path, *, key_type: str = "ec-p256"
) -> None:
    """Make a key (kept as ``pending.key.pem``) and a request file to carry to the CA."""
    creds = CredentialDir(out).ensure()
    key = generate_private_key(key_type)
    write_private_key(creds.pending_key, key, None)
    request = {
        "format": OFFLINE_REQUEST_FORMAT,
        "identity": identity,
        "csr": make_csr(key).decode(),
    }
    request_file.write_text(json.dumps(request, indent=2) + "\n")


def offline_response(identity: str, cert_pem: bytes, chain_pem: bytes, root_pem: bytes) -> bytes:
    return (
        json.dumps(
            {
                "format": OFFLINE_RESPONSE_FORMAT,
                "identity": identity,
                "certificate": cert_pem.decode(),
                "chain": chain_pem.decode(),
                "root": root_pem.decode(),
            },
            indent=2,
        )
        + "\n"
    ).encode()


def parse_offline_request(data: bytes) -> tuple[str, bytes]:
    try:
        request = json.loads(data)
        if request.get("format") != OFFLINE_REQUEST_FORMAT:
            raise ValueError("format")
        return str(request["identity"]), str(request["csr"]).encode()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"not an {OFFLINE_REQUEST_FORMAT} file") from exc


def offline_import(response_file: Path, out: Path, fingerprint: str) -> CredentialDir:
    """Install a signed response: the root must match the pin, the chain must verify, and the
    certificate must be for the pending key made by `offline_request`."""
    try:
        body = json.loads(response_file.read_bytes())
        if body.get("format") != OFFLINE_RESPONSE_FORMAT:
            raise ValueError("format")
        cert_pem, chain_pem, root_pem = (
            str(body[k]).encode() for k in ("certificate", "chain", "root")
        )
        identity = str(body["identity"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{response_file} is not an {OFFLINE_RESPONSE_FORMAT} file") from exc
    pinned = pin_ca(root_pem, chain_pem, fingerprint)
    cert = x509.load_pem_x509_certificate(cert_pem)
    issuing = x509.load_pem_x509_certificates(chain_pem)
    try:
        cert.verify_directly_issued_by(issuing[0])
    except (ValueError, TypeError, Exception) as exc:
        raise EnrollRefusedError(
            "the certificate is not signed by the issuing CA in the response", code="bad-chain"
        ) from exc
    creds = CredentialDir(out)
    try:
        key = load_private_key(creds.pending_key, None)
    except Exception as exc:
        raise ConfigError(
            f"{creds.pending_key} is missing: import on the gateway that made the request"
        ) from exc
    if key.public_key() != cert.public_key():
        raise EnrollRefusedError(
            "the response is for a different key than this gateway's pending request",
            code="key-mismatch",
        )
    creds.write(
        key=key, cert_pem=cert_pem, chain_pem=chain_pem, root_pem=pinned.root_pem, identity=identity
    )
    creds.pending_key.unlink()
    return creds
