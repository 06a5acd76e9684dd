"""``idmz release serve``: the release repository's HTTPS server with its fetch log, its audit
records and the renewal of the online metadata (the runtime below the command, ADR 0100).

    >>> serve_repository(home, home.root / "release", cert=..., key=..., host="0.0.0.0",
    ...                  port=8445)                                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from audit.errors import AuditError
from audit.events import AuditEvent, Outcome
from idmz.audit_log import open_audit_log
from idmz.home import Home
from pki.publication import CAPublication
from release.fetchlog import FetchLog
from release.repository import ReleaseRepository
from release.server import Fetch, RepositoryServer, ServerTLS

_log = logging.getLogger("idmz.release")


def serve_repository(
    home: Home,
    release_dir: Path,
    *,
    cert: Path,
    key: Path,
    client_ca: str | None,
    crl: str | None,
    host: str,
    port: int,
    unsafe_skip_revocation: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT; renew the timestamp and the snapshot at half their lifetime."""
    repo = ReleaseRepository(release_dir / "repository")
    published = CAPublication(home.ca_dir)
    if unsafe_skip_revocation:
        _log.warning("release server: gateway revocation is NOT checked (unsafe_skip_revocation)")
    tls = ServerTLS(
        cert, key, Path(client_ca or published.chain),
        None if unsafe_skip_revocation else Path(crl or published.crl_pem),
        unsafe_skip_revocation=unsafe_skip_revocation,
    )  # fmt: skip
    log = FetchLog(release_dir / "fetch.jsonl")
    audit = FetchAudit(home)

    def on_fetch(fetch: Fetch) -> None:
        log.append(fetch)
        audit.note(fetch)

    server = RepositoryServer(repo.root, tls, host=host, port=port, on_fetch=on_fetch)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bound = server.start()
    print(f"release repository on https://{host}:{bound} (mutual TLS, read-only)", flush=True)
    try:
        every = max(1.0, min(60.0, repo.expiry.timestamp_s / 4))
        while not stop.wait(every):
            if repo.renew_online():
                _log.info("online metadata renewed (timestamp, snapshot when due)")
    finally:
        server.stop()
        audit.close()
    return 0


class FetchAudit:
    """Artifact downloads and every refusal go to the audit log; metadata polls only to the
    fetch log (every gateway asks every few minutes)."""

    def __init__(self, home: Home) -> None:
        self._log = open_audit_log(home)
        self._lock = threading.Lock()

    def note(self, fetch: Fetch) -> None:
        if fetch.status == 200 and not fetch.path.startswith("targets/"):
            return
        ok = fetch.status == 200
        event = AuditEvent(
            actor=fetch.identity or "unknown",
            action="release.artifact.fetched" if ok else "release.fetch.refused",
            resource=fetch.path or "tls",
            outcome=Outcome.SUCCESS if ok else Outcome.DENIED,
            reason=fetch.reason,
            details={"status": fetch.status, "length": fetch.length},
        )
        with self._lock:
            try:
                self._log.record(event)
            except AuditError:  # an audit failure must not take the server down mid-answer
                _log.exception("audit record of a fetch failed")

    def close(self) -> None:
        self._log.close()
