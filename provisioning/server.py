"""Serving the API with uvicorn over TLS, with the client certificate visible to the app.

uvicorn does not put the peer certificate in the ASGI scope. `PeerCertProtocol` (uvicorn's
httptools protocol, passed as ``Config(http=...)``) reads it from the TLS transport when the
connection is made and adds it to every request's scope in the shape of the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings). The TLS layer requests a
client certificate (``CERT_OPTIONAL``: enrollment has none yet) and checks its chain against the
CA; the time check is left to the service (``X509_V_FLAG_NO_CHECK_TIME``) so that a device of a
group with a renewal grace period can still present its expired certificate, and the service
re-verifies everything with `pki.verifier.ChainVerifier` (chain, CRL, profile, expiry + grace).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pki.authority import CertificateAuthority
from pki.keys import generate_private_key, write_private_key
from pki.profiles import ProfileName, ServerName
from provisioning.errors import ConfigError

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (x509_vfy.h); Python's ssl module has no name for it.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


class PeerCertProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol plus the ASGI TLS extension with the client certificate."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            self._tls = None
            return
        der = ssl_object.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        cipher = ssl_object.cipher()
        self._tls = {
            "server_cert": None,
            "client_cert_chain": chain,
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
            "cipher_name": cipher[0] if cipher else None,
        }

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int
    certfile: Path
    keyfile: Path
    client_ca_file: Path  # issuing + root: the TLS layer checks client chains against it
    log_level: str = "warning"
    keep_alive_s: int = 30
    backlog: int = 2048
    max_connections: int = 4096  # beyond this uvicorn answers 503 instead of exhausting memory


def build_server(
    app: Any, options: ServeOptions, *, sock: socket.socket | None = None
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        http=PeerCertProtocol,
        ssl_certfile=str(options.certfile),
        ssl_keyfile=str(options.keyfile),
        ssl_ca_certs=str(options.client_ca_file),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        log_level=options.log_level,
        access_log=False,
        proxy_headers=False,  # the rate limiter keys on the real peer address
        server_header=False,
        timeout_keep_alive=options.keep_alive_s,
        backlog=options.backlog,
        limit_concurrency=options.max_connections,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    config.load()
    context = config.ssl
    if context is None:
        raise ConfigError("TLS could not be configured")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    return uvicorn.Server(config)


def default_server_names(extra: str = "") -> ServerName:
    """localhost, 127.0.0.1, ::1, this host's name, plus ``extra`` (``"idmz.plant1,10.0.0.5"``),
    the names gateways use to reach the service."""
    host = socket.gethostname().lower()
    names = ["localhost"]
    ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if extra:
        try:
            parsed = ServerName.parse(extra)
        except ValueError as exc:
            raise ConfigError(f"--server-names: {exc}") from exc
        names += [n for n in parsed.dns_names if n not in names]
        ips += [ip for ip in parsed.ip_addresses if ip not in ips]
    if host and host not in names:
        try:
            return ServerName((*names, host), tuple(ips))
        except ValueError:
            pass  # a host name that is not a valid DNS name is simply not included
    return ServerName(tuple(names), tuple(ips))


def ensure_server_certificate(
    ca: CertificateAuthority,
    directory: Path,
    *,
    names: ServerName,
    now: datetime,
    renew_before: timedelta = timedelta(days=30),
) -> tuple[Path, Path]:
    """Issue the service's TLS certificate from the CA when missing or near expiry."""
    cert_path, key_path = directory / "server.pem", directory / "server.key.pem"
    wanted: set[x509.GeneralName] = {x509.DNSName(n) for n in names.dns_names}
    wanted |= {x509.IPAddress(ip) for ip in names.ip_addresses}
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            current = set(
                cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            )
        except x509.ExtensionNotFound:
            current = set()
        if cert.not_valid_after_utc - now > renew_before and current == wanted:
            return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = generate_private_key("ec-p256")
    sans = sorted(wanted, key=str)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names.path)]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = ca.issue(
        csr.public_bytes(serialization.Encoding.PEM), names, profile=ProfileName.SERVER, now=now
    )
    write_private_key(key_path, key, None)
    tmp = cert_path.with_name(cert_path.name + ".tmp")
    tmp.write_bytes(issued.leaf_pem() + issued.chain_pem())
    tmp.replace(cert_path)
    return cert_path, key_path
