"""The release signer's files, the fleet a canary picks from, and the gateways' reports: what
``idmz release`` reads from the home directory (below the command, ADR 0100).

    >>> cert, key, chain = signer_files(home, None, None, None)   # what init kept # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bedrock.files import write_atomic
from edge.model_signing import sign_model
from idmz.events import record
from idmz.home import Home, SettingsError
from pki.publication import CAPublication, read_ledger
from release.reports import read_reports


def signer_files(
    home: Home, cert: str | None, key: str | None, chain: str | None
) -> tuple[Path, Path, Path]:
    """The release signer's certificate, key and chain: the options, else what init kept."""
    kept: dict[str, str] = {}
    path = home.root / "release" / "signer.json"
    if path.exists():
        kept = json.loads(path.read_text())
    cert = cert or kept.get("cert")
    key = key or kept.get("key")
    chain = chain or kept.get("chain")
    if not cert or not key:
        raise SettingsError("give --signer-cert and --signer-key (or run idmz release init)")
    return Path(cert), Path(key), Path(chain) if chain else home.ca_dir / "issuing.pem"


def model_signer(data: bytes, cert: Path, key: Path, chain: Path) -> Callable[[int], str]:
    """``sign(release)``: the model's bundle (ADR 0061) for that release number (ADR 0066)."""

    def sign(release: int) -> str:
        return sign_model(
            data,
            artifact="model.onnx",
            signer_cert_pem=cert.read_bytes(),
            signer_key_pem=key.read_bytes(),
            chain_pem=chain.read_bytes(),
            now=datetime.now(UTC),
            release=release,
        ).decode()

    return sign


def fleet(home: Home, listed: Path | None) -> list[str]:
    """The gateways a canary may pick from: the file (one identity a line), else the valid
    device certificates in the CA's ledger."""
    if listed is not None:
        return [ln.strip() for ln in listed.read_text().splitlines() if ln.strip()]
    ledger = CAPublication(home.ca_dir).ledger
    if not ledger.exists():
        return []
    now = datetime.now(UTC)
    with read_ledger(ledger) as view:
        return [
            e.subject for e in view.entries() if e.profile == "device" and e.status(now) == "valid"
        ]


def load_reports(release_dir: Path) -> dict[str, Any]:
    path = release_dir / "reports.json"
    if not path.exists():
        return {"running": {}, "seen": []}
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def record_reports(home: Home, release_dir: Path, lines: Iterable[str]) -> int:
    """Audit each release result not seen before; keep what each gateway runs."""
    kept = load_reports(release_dir)
    reports = read_reports(lines, kept["seen"])
    if reports.events:
        record(home, reports.events)  # durable before they count as seen
    running = {**kept["running"], **reports.running}
    doc = {"running": running, "seen": reports.seen}  # bounded per gateway
    write_atomic(release_dir / "reports.json", json.dumps(doc).encode())
    return len(reports.events)
