"""The repository served over HTTPS with mutual TLS, read-only (stdlib `http.server` + `ssl`).

Gateways authenticate with their device certificate (chain to the product CA, checked against
the CA's CRL, reloaded when the file changes: a revoked gateway is refused at the handshake).
Only ``GET`` and ``HEAD`` of files under ``/metadata/`` and ``/targets/`` are answered; an
artifact is served only to gateways under the prefix it was published for (defense in depth:
the gateway's own check is `policies.release.offered_to`). Every answer is reported to
``on_fetch`` (the fetch log and the audit record are the caller's, `idmz release serve`).

    >>> server = RepositoryServer(repo_root, tls, on_fetch=log.append)          # doctest: +SKIP
    >>> port = server.start(); ...; server.stop()                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import stat
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bedrock.serving import CappedHTTPServer
from pki.errors import MalformedIdentityError
from pki.identity import DeviceIdentity, parse_spiffe
from release.errors import ReleaseConfigError

_log = logging.getLogger("idmz.release.server")
MAX_PATH_CHARS = 1024
CHUNK_BYTES = 64 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
# Connections served at once (one thread each, handshake included); past it a connection is
# closed at once and reported, so a flood of connections costs neither threads nor memory.
MAX_CONNECTIONS = 64
# Connections one gateway may hold at once: an enrolled gateway in an attacker's hands (valid
# key, any timing) must not take every slot and starve the fleet of a rollback.
MAX_PER_DEVICE = 4


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert: Path  # server certificate (+ chain), server profile
    key: Path
    client_ca: Path  # the product CA chain gateways' certificates verify against
    crl: Path | None  # the CA's CRL (PEM); None only with unsafe_skip_revocation
    unsafe_skip_revocation: bool = False

    def __post_init__(self) -> None:
        if self.crl is None and not self.unsafe_skip_revocation:
            raise ReleaseConfigError(
                "the release server needs the CA's CRL to refuse revoked gateways, "
                "or unsafe_skip_revocation"
            )


@dataclass(frozen=True, slots=True)
class Fetch:
    """One answered (or refused) request, for the fetch log and the audit."""

    identity: str  # the device path, "" when the handshake failed
    path: str
    status: int
    length: int
    reason: str = ""


def _context(tls: ServerTLS) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        ctx.load_verify_locations(cafile=str(tls.client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise ReleaseConfigError(f"release server TLS: {exc}") from exc
    if tls.crl is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.crl))
        except (OSError, ssl.SSLError) as exc:
            raise ReleaseConfigError(f"release server CRL {tls.crl}: {exc}") from exc
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def device_of(peer: dict[str, Any] | None) -> DeviceIdentity | None:
    """The device identity of a verified peer certificate (its one SPIFFE URI SAN)."""
    uris = [v for k, v in (peer or {}).get("subjectAltName", ()) if k == "URI"]
    if len(uris) != 1:
        return None
    try:
        principal = parse_spiffe(uris[0])
    except MalformedIdentityError:
        return None
    return principal if isinstance(principal, DeviceIdentity) else None


class _Server(CappedHTTPServer):
    request_queue_size = 128  # the listen backlog: a burst of gateways waits, not SYN retries

    def __init__(self, owner: RepositoryServer, address: tuple[str, int]) -> None:
        self.owner = owner
        self._per_device: Counter[str] = Counter()
        self._per_device_lock = threading.Lock()
        super().__init__(address, _Handler, max_connections=owner.max_connections)

    def refuse(self, request: Any, client_address: Any) -> None:
        self.owner.on_fetch(Fetch("", "", 503, 0, "connection cap reached"))

    def finish_request(self, request: Any, client_address: Any) -> None:
        owner = self.owner
        raw: socket.socket = request
        raw.settimeout(HANDSHAKE_TIMEOUT_S)  # the whole handshake (ssl keeps one deadline)
        try:
            tls = owner.context().wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError, ReleaseConfigError) as exc:
            owner.on_fetch(Fetch("", "", 0, 0, f"TLS handshake refused: {exc}"))
            raw.close()
            return
        tls.settimeout(REQUEST_TIMEOUT_S)
        identity = _identity_of(tls)
        if not self._enter(identity):
            owner.on_fetch(Fetch(identity, "", 503, 0, "too many connections from this gateway"))
            tls.close()
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self._leave(identity)
            tls.close()

    def _enter(self, identity: str) -> bool:
        with self._per_device_lock:
            # Certificates that are not a device's ('') share one such allowance.
            if self._per_device[identity] >= self.owner.max_per_device:
                return False
            self._per_device[identity] += 1
            return True

    def _leave(self, identity: str) -> None:
        with self._per_device_lock:
            self._per_device[identity] -= 1
            if self._per_device[identity] <= 0:
                del self._per_device[identity]


def _identity_of(conn: Any) -> str:
    device = device_of(conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None)
    return device.path if device else ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "idmz-release"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse_write(self) -> None:
        if not self._revalidated():
            self._reply(405, "read-only repository", self._identity())

    def _revalidated(self) -> bool:
        """True (and the connection closed) when the CRL changed since this connection's
        handshake: a gateway revoked meanwhile must not keep pulling over a kept-alive
        connection; every client reconnects and is checked against the new CRL."""
        conn = self.connection
        if isinstance(conn, ssl.SSLSocket) and conn.context is self.server.owner.context():
            return False
        self.close_connection = True
        self._reply(503, "the CRL changed: reconnect", self._identity())
        return True

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_write  # noqa: N815

    def _identity(self) -> str:
        return _identity_of(self.connection)

    def _reply(self, status: int, reason: str, identity: str, path: str = "") -> None:
        body = (reason + "\n").encode()
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.owner.on_fetch(
            Fetch(identity, path or self.path[:MAX_PATH_CHARS], status, 0, reason)
        )

    def _answer(self, *, body: bool) -> None:
        if self._revalidated():
            return
        identity = self._identity()
        if not identity:
            self._reply(403, "a device certificate is required", "")
            return
        url_path = urlsplit(self.path[: MAX_PATH_CHARS + 1]).path
        rel = unquote(url_path).lstrip("/")
        parts = rel.split("/")
        if (
            len(self.path) > MAX_PATH_CHARS
            or len(parts) < 2
            or parts[0] not in ("metadata", "targets")
            or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts)
        ):
            self._reply(404, "not found", identity)
            return
        if parts[0] == "targets" and not _prefix_admits(parts, identity):
            self._reply(403, f"this artifact is not for {identity}", identity, rel)
            return
        file = self.server.owner.root.joinpath(*parts)
        try:
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            self._reply(404, "not found", identity, rel)
            return
        size = os.fstat(fd)
        if not stat.S_ISREG(size.st_mode):  # a directory of the tree is no answer
            os.close(fd)
            self._reply(404, "not found", identity, rel)
            return
        with os.fdopen(fd, "rb") as fh:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size.st_size))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:  # in chunks: 64 gateways taking a 64 MiB model must not cost 4 GiB
                shutil.copyfileobj(fh, self.wfile, CHUNK_BYTES)
        self.server.owner.on_fetch(Fetch(identity, rel, 200, size.st_size))


def _prefix_admits(parts: list[str], identity: str) -> bool:
    """``targets/<kind>/<prefix...>/<blob>``: the identity is under that prefix."""
    prefix = "/".join(parts[2:-1])
    return bool(prefix) and (identity == prefix or identity.startswith(prefix + "/"))


class RepositoryServer:
    def __init__(
        self,
        root: Path,
        tls: ServerTLS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_fetch: Callable[[Fetch], None] = lambda _: None,
        max_connections: int = MAX_CONNECTIONS,
        max_per_device: int = MAX_PER_DEVICE,
    ) -> None:
        self.root = root
        self.max_connections = max_connections
        self.max_per_device = max_per_device
        self.tls = tls
        self.on_fetch = on_fetch
        self._address = (host, port)
        self._lock = threading.Lock()
        self._ctx = _context(tls)
        self._crl_mtime = self._mtime()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _mtime(self) -> float:
        return self.tls.crl.stat().st_mtime if self.tls.crl is not None else 0.0

    def context(self) -> ssl.SSLContext:
        """The TLS context, rebuilt when the CRL file changed (a revocation takes effect at
        the next connection, without a restart)."""
        with self._lock:
            mtime = self._mtime()
            if mtime != self._crl_mtime:
                self._ctx, self._crl_mtime = _context(self.tls), mtime
            return self._ctx

    def start(self) -> int:
        self._server = _Server(self, self._address)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="release-server", daemon=True
        )
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
