"""The tlog-witness HTTP protocol: ``POST <prefix>/add-checkpoint`` served with the standard
library, and the log-side client that submits the log's checkpoint with a consistency proof
and keeps the returned cosignatures in ``<log dir>/checkpoint.cosigned``.

    >>> server = make_server(witness, "0.0.0.0", 7380); server.serve_forever()
    >>> submit_checkpoint("http://it-witness:7380", LogPaths(audit_dir), log_key, witness_key)
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from audit.checkpoint import SignedCheckpoint, verify_checkpoint
from audit.errors import AuditUnavailableError, WitnessRefusedError
from audit.merkle import consistency_proof
from audit.note import VerifierKey, split_note
from audit.storage import LeafHashes, LogPaths, read_index, write_atomically
from audit.witness import MAX_REQUEST_BYTES, Witness, format_request

_log = logging.getLogger("audit.witness")
SIZE_CONTENT_TYPE = "text/x.tlog.size"


class _Handler(BaseHTTPRequestHandler):
    server: _WitnessServer
    protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends

    def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/vkey"):
            self._reply(200, self.server.witness.cosigner.verifier.vkey + "\n")
        else:
            self._reply(404, "not found\n")

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self._reply(404, "not found\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self._reply(400, "request too large\n")
            return
        body = self.rfile.read(length)
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


class _WitnessServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness) -> None:
        super().__init__(address, _Handler)
        self.witness = witness


def make_server(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server for ``witness`` (call ``serve_forever``; ``server_address`` has the
    bound port when ``port`` is 0)."""
    return _WitnessServer((host, port), witness)


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
    write_atomically(path, combined.encode())
    return signed
