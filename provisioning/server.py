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
import logging
import socket
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bedrock.files import write_atomic
from pki.authority import CertificateAuthority
from pki.csr import verify_csr
from pki.keys import KeyPolicy, generate_private_key, write_private_key
from pki.profiles import ProfileName, ServerName
from provisioning.config import HttpLimits
from provisioning.errors import ConfigError

_log = logging.getLogger("provisioning.server")
_CLOSE_GRACE_S = 1.0  # after a refusal, for the answer to leave before the connection is cut

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (x509_vfy.h); Python's ssl module has no name for it.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


class PeerCertProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol plus the ASGI TLS extension with the client certificate, and
    the limits uvicorn lacks before the app sees a request (`HttpLimits`, ADR 0046):

    - header bytes: what is fed to the parser while a header block is incomplete is counted,
      and never more than one byte past ``max_header_bytes`` (httptools buffers a partial
      header line without limit); the request line and headers together over the limit get
      431 and the connection closes;
    - time: the headers must be complete ``header_timeout_s`` after the connection is made
      (or after a keep-alive request's first byte), the body ``body_timeout_s`` after that;
      both are deadlines, not idle timers, so a byte at a time does not extend them (408);
    - connections: past ``max_connections`` a new one gets 429 with ``Retry-After`` and is
      closed before any read.

    `build_server` sets ``limits`` on a subclass; the class default is `HttpLimits()`."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    _tls: dict[str, Any] | None = None
    _refused = False
    _reading_headers = True  # between messages or inside a header block
    _header_bytes = 0  # fed to the parser since the current header block could have begun
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # 429, not 503: the service is well, only full; the client comes back (ADR 0137)
            self._refuse(
                HTTPStatus.TOO_MANY_REQUESTS,
                "too many open connections",
                retry_after_s=self.limits.busy_retry_after_s,
            )
            return
        self._arm(self.limits.header_timeout_s, "headers")
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        limit = self.limits.max_header_bytes
        while data and not self._refused:
            if not self._reading_headers:
                super().data_received(data)
                return
            piece, data = (
                data[: limit - self._header_bytes + 1],
                data[limit - self._header_bytes + 1 :],
            )
            self._header_bytes += len(piece)
            super().data_received(piece)
            if self._reading_headers and self._header_bytes > limit:
                self._refuse(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large"
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request: from its 1st byte
            self._arm(self.limits.header_timeout_s, "headers")
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:  # a header block fed within one piece
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
            raise _RefusedError  # stops the parser: no request reaches the app
        self._arm(self.limits.body_timeout_s, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_headers, self._header_bytes = True, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a parser error, through the same refusal path (after our own
        # refusal the parser error is ours, already answered, and this does nothing).
        self._refuse(HTTPStatus.BAD_REQUEST, msg)

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        self._refuse(HTTPStatus.REQUEST_TIMEOUT, f"request {phase} not received in time")

    def _refuse(self, status: HTTPStatus, reason: str, *, retry_after_s: int | None = None) -> None:
        """Answer ``status`` unless a response is under way, stop reading, and cut the
        connection once the answer has had time to leave. (Not ``close()``: on TLS it waits up
        to 30 s for the peer's close_notify, reading and discarding all it sends meanwhile.)"""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        peer = self.client[0] if self.client else "?"
        _log.warning("refused a connection from %s (%d): %s", peer, status, reason)
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            body = f"{reason}\n".encode()
            head = f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: text/plain\r\n"
            if retry_after_s is not None:
                head += f"retry-after: {retry_after_s}\r\n"
            head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            self.transport.write(head.encode() + body)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's further sends are dropped ...
            cycle.message_event.set()  # ... and its next receive() is http.disconnect
        self.transport.pause_reading()
        self.loop.call_later(_CLOSE_GRACE_S, self.transport.abort)


class _RefusedError(Exception):
    """Raised from a parser callback after a refusal, to stop parsing."""


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
    http: HttpLimits = field(default_factory=HttpLimits)


def build_server(
    app: Any, options: ServeOptions, *, sock: socket.socket | None = None
) -> uvicorn.Server:
    protocol = type("BoundedPeerCertProtocol", (PeerCertProtocol,), {"limits": options.http})
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        http=protocol,
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
        # Connections past the cap are closed by the protocol; uvicorn's own check (503 at
        # ">= limit" connections or tasks) then only caps tasks.
        limit_concurrency=options.http.max_connections + 1,
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
    verified = verify_csr(csr.public_bytes(serialization.Encoding.PEM), KeyPolicy())
    issued = ca.issue(verified, names, profile=ProfileName.SERVER, now=now)
    write_private_key(key_path, key, None)
    write_atomic(cert_path, issued.leaf_pem() + issued.chain_pem())
    return cert_path, key_path
