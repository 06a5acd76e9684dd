"""The provisioning service in process (no HTTP): for races with real threads, and for the
sweeps that run beside the server. The same CA, registry (SQLite or the machine's PostgreSQL)
and audit log as the served fixtures in `conftest.py`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit.log import AuditLog
from audit.storage import LogPaths, iter_entries, read_index
from pki.csr import verify_csr
from pki.keys import KeyPolicy
from pki.local import LocalCA
from provisioning.config import ServiceLimits
from provisioning.registry import Registry
from provisioning.services import Services
from provisioning.tokens import TokenKey
from tests.provisioning.conftest import PASSPHRASE, csr_for, make_ca, new_key

OPERATOR = "operator:test"
# Verified once, as the HTTP layer does before the service sees them (ADR 0018).
CSRS = [verify_csr(csr_for(new_key()), KeyPolicy()) for _ in range(8)]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Plant:
    home: Path
    ca: LocalCA
    registry: Registry
    audit: AuditLog
    services: Services

    def audit_records(self) -> list[dict[str, object]]:
        paths = LogPaths(self.home / "audit")
        return [json.loads(raw) for _, raw in iter_entries(paths, read_index(paths))]

    def audit_actions(self) -> list[tuple[str, str, str]]:
        return [
            (str(r["actor"]), str(r["action"]), str(r.get("reason") or ""))
            for r in self.audit_records()
        ]

    def openssl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)

    def openssl_crl_serials(self) -> set[str]:
        """The revoked serials (hex, no leading zeros) as openssl reads them, after it verified
        the CRL's signature with the CA chain."""
        result = self.openssl(
            "crl", "-in", str(self.ca.paths.crl_pem), "-CAfile", str(self.ca.paths.chain),
            "-noout", "-text",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "verify OK" in result.stderr + result.stdout
        return {
            s.lower().lstrip("0")
            for s in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", result.stdout)
        }

    def openssl_verify(self, leaf_pem: bytes) -> subprocess.CompletedProcess[str]:
        """``openssl verify`` with CRL checking, as a TLS server would check a client."""
        leaf = self.home / "leaf.pem"
        leaf.write_bytes(leaf_pem)
        return self.openssl(
            "verify", "-crl_check",
            "-CAfile", str(self.ca.paths.root_cert),
            "-untrusted", str(self.ca.paths.issuing_cert),
            "-CRLfile", str(self.ca.paths.crl_pem),
            "-purpose", "sslclient",
            str(leaf),
        )  # fmt: skip


def open_plant(home: Path, url: str, *, limits: ServiceLimits | None = None) -> Iterator[Plant]:
    make_ca(home)
    ca = LocalCA.open(home / "ca", passphrase=PASSPHRASE)
    registry = Registry.open(url)
    audit = AuditLog.open(home / "audit", origin="test/audit", background_checkpoints=False)
    services = Services.compose(
        ca=ca,
        registry=registry,
        audit=audit,
        token_key=TokenKey.load_or_create(home / "token-key.pem"),
        limits=limits,
        crl_file=ca.paths.crl_der,
    )
    try:
        yield Plant(home, ca, registry, audit, services)
    finally:
        audit.close()
        registry.close()
        ca.close()


def registry_url(request: pytest.FixtureRequest, home: Path) -> str:
    """SQLite under ``home`` for the ``sqlite`` param, a fresh PostgreSQL database otherwise."""
    if request.param == "sqlite":
        return f"sqlite:///{home / 'registry.sqlite'}"
    return str(request.getfixturevalue("pg_database"))


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
