"""The tlog-witness HTTP protocol: ``POST <prefix>/add-checkpoint`` served with the standard
library, and the log-side client that submits the log's checkpoint with a consistency proof
and keeps the returned cosignatures in ``<log dir>/checkpoint.cosigned``.

    >>> server = make_server(witness, "0.0.0.0", 7380); server.serve_forever()
    >>> submit_checkpoint("http://it-witness:7380", LogPaths(audit_dir), log_key, witness_key)
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.checkpoint import SignedCheckpoint, verify_checkpoint
from audit.errors import AuditConfigError, AuditUnavailableError, WitnessRefusedError
from audit.merkle import consistency_proof
from audit.note import VerifierKey, split_note
from audit.storage import LeafHashes, LogPaths, read_index
from audit.witness import MAX_REQUEST_BYTES, Witness, format_request
from bedrock.files import write_atomic
from bedrock.serving import CappedHTTPServer

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_log = logging.getLogger("audit.witness")
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True, slots=True)
class WitnessHttpLimits:
    """What one client may cost the witness. The header deadline covers the request line and
    headers (and a keep-alive connection's idle time before them); the body deadline covers
    reading the body. Both are totals for the phase, not per read, so sending one byte at a
    time does not stretch them (slowloris). Connections beyond ``max_connections`` get 503."""

    max_body_bytes: int = MAX_REQUEST_BYTES
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    max_connections: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.max_body_bytes <= MAX_REQUEST_BYTES:
            raise AuditConfigError(f"max_body_bytes must be in 1..{MAX_REQUEST_BYTES}")
        if min(self.header_timeout_s, self.body_timeout_s, self.write_timeout_s) <= 0:
            raise AuditConfigError("witness HTTP timeouts must be > 0 seconds")
        if self.max_connections < 1:
            raise AuditConfigError("max_connections must be >= 1")


def content_length(headers: Message, limit: int) -> int:
    """The request body's length, strictly (RFC 9112 section 6): one ``Content-Length`` of
    ASCII digits, at most ``limit``; no ``Transfer-Encoding`` (this server reads no chunked
    bodies, and both headers together are how requests are smuggled)."""
    if headers.get("Transfer-Encoding") is not None:
        raise WitnessRefusedError(
            "Transfer-Encoding is not accepted", status=HTTPStatus.BAD_REQUEST
        )
    values = headers.get_all("Content-Length") or []
    if not values:
        raise WitnessRefusedError("Content-Length is required", status=HTTPStatus.LENGTH_REQUIRED)
    value = values[0].strip()
    if len(values) > 1 or not (value.isascii() and value.isdigit()):
        raise WitnessRefusedError(
            "Content-Length must be one decimal number", status=HTTPStatus.BAD_REQUEST
        )
    significant = value.lstrip("0") or "0"  # int() of a huge digit string is itself costly
    if len(significant) > len(str(limit)) or int(significant) > limit:
        raise WitnessRefusedError(
            f"body larger than {limit} bytes", status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        )
    return int(significant)


class _DeadlineReader(io.RawIOBase):
    """Socket reads sharing one deadline: each ``recv`` may wait only for the time left."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client did not send the request in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: _WitnessServer
    protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain socket file: replaced by one bounded in time
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.server.limits.header_timeout_s
        super().handle_one_request()  # a TimeoutError there closes the connection

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self.connection.settimeout(self.server.limits.write_timeout_s)
        super().send_response_only(code, message)

    def handle_expect_100(self) -> bool:
        # Refuse a bad length before inviting the body ("Expect: 100-continue").
        if self.command == "POST" and not self._length_or_refuse():
            return False
        return super().handle_expect_100()

    def _reply(
        self, status: int, body: str, content_type: str = "text/plain", *, close: bool = False
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _length_or_refuse(self) -> int | None:
        try:
            return content_length(self.headers, self.server.limits.max_body_bytes)
        except WitnessRefusedError as exc:
            _log.warning("witness refused a request from %s (%d): %s", self.client_address[0],
                         exc.status, exc)  # fmt: skip
            self._reply(exc.status, f"{exc}\n", close=True)  # the body is never read
            return None

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/vkey"):
            self._reply(200, self.server.witness.cosigner.verifier.vkey + "\n")
        else:
            self._reply(404, "not found\n")

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self._reply(404, "not found\n", close=True)
            return
        length = self._length_or_refuse()
        if length is None:
            return
        self._reader.deadline = time.monotonic() + self.server.limits.body_timeout_s
        body = self.rfile.read(length)
        if len(body) != length:
            self._reply(400, "body shorter than Content-Length\n", close=True)
            return
        try:
            lines = self.server.witness.add_checkpoint(body)
        except WitnessRefusedError as exc:
            _log.warning("witness refused a checkpoint (%d): %s", exc.status, exc)
            if exc.status == 409 and exc.witness_size is not None:
                self._reply(409, f"{exc.witness_size}\n", SIZE_CONTENT_TYPE)
            else:
                self._reply(exc.status, f"{exc}\n")
            return
        self._reply(200, lines)

    def log_message(self, format: str, *args: object) -> None:
        _log.info("%s " + format, self.address_string(), *args)


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"


class _WitnessServer(CappedHTTPServer):
    def __init__(self, address: tuple[str, int], witness: Witness, limits: WitnessHttpLimits):
        self.witness = witness
        self.limits = limits
        super().__init__(address, _Handler, max_connections=limits.max_connections)

    def refuse(self, request: Any, client_address: Any) -> None:
        _log.warning("witness refused a connection from %s: %d connections are open",
                     client_address[0], self.limits.max_connections)  # fmt: skip
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY)


def make_server(
    witness: Witness, host: str, port: int, limits: WitnessHttpLimits | None = None
) -> CappedHTTPServer:
    """An HTTP server for ``witness`` (call ``serve_forever``; ``server_address`` has the
    bound port when ``port`` is 0)."""
    return _WitnessServer((host, port), witness, limits or WitnessHttpLimits())


def _post(url: str, body: bytes, timeout_s: float) -> tuple[int, str, str]:
    request = urllib.request.Request(  # noqa: S310 - the operator gives an http(s) URL
        url.rstrip("/") + "/add-checkpoint", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()
    except OSError as exc:
        raise AuditUnavailableError(f"witness at {url} is unreachable: {exc}") from exc


def submit_checkpoint(
    url: str,
    paths: LogPaths,
    log_key: VerifierKey,
    witness_key: VerifierKey | None = None,
    *,
    timeout_s: float = 10.0,
) -> SignedCheckpoint:
    """Send the log's latest checkpoint to the witness at ``url`` with a consistency proof
    from the size the witness last cosigned; store and return the cosigned checkpoint.
    With ``witness_key`` the cosignature must verify under it."""
    note = paths.checkpoint.read_text()
    size = verify_checkpoint(note, log_key).checkpoint.size
    cosigned_path = paths.cosigned
    old = 0
    if cosigned_path.exists():
        old = min(verify_checkpoint(cosigned_path.read_text(), log_key).checkpoint.size, size)
    for _attempt in range(2):
        proof: list[bytes] = []
        if 0 < old < size:
            proof = consistency_proof(old, size, LeafHashes(read_index(paths)))
        status, content_type, body = _post(url, format_request(old, proof, note), timeout_s)
        if status == 409 and content_type.startswith(SIZE_CONTENT_TYPE):
            witnessed = int(body.strip())
            if witnessed > size:
                raise WitnessRefusedError(
                    f"the witness has cosigned size {witnessed}, more than this log's {size}: "
                    "entries were removed from the log (rollback)",
                    status=409,
                    witness_size=witnessed,
                )
            old = witnessed
            continue
        if status != 200:
            raise WitnessRefusedError(f"witness refused: {status} {body.strip()}", status=status)
        return _store(cosigned_path, note, body, log_key, witness_key)
    raise WitnessRefusedError("witness kept reporting a different size", status=409)


def _store(
    path: Path, note: str, lines: str, log_key: VerifierKey, witness_key: VerifierKey | None
) -> SignedCheckpoint:
    combined = note + "".join(f"{x}\n" for x in lines.splitlines() if x)
    split_note(combined)  # the response must be well-formed signature lines
    keys = [witness_key] if witness_key is not None else []
    signed = verify_checkpoint(combined, log_key, witness_keys=keys, min_cosigners=len(keys))
    write_atomic(path, combined.encode())
    return signed
