"""A real provisioning service per test: a fresh local CA, audit log and registry (SQLite, or
the machine's PostgreSQL for ``@pytest.mark.postgres``), served by uvicorn over HTTPS on an
ephemeral loopback port. Clients are httpx with the pinned root, curl and openssl."""

from __future__ import annotations

import json
import os
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from audit.log import AuditLog
from audit.storage import LogPaths, iter_entries, read_index
from pki.authority import pem
from pki.local import LocalCA
from pki.vault import VaultCA
from provisioning.config import RateLimits, ServiceLimits
from provisioning.http.app import create_app, wrap
from provisioning.registry import Registry
from provisioning.server import (
    ServeOptions,
    build_server,
    default_server_names,
    ensure_server_certificate,
)
from provisioning.services import Services
from provisioning.tokens import TokenKey
from tests.support.ca import PASSPHRASE, init_ca, make_csr
from tests.support.net import free_port, wait_for
from tests.support.openbao import OpenBao, openbao  # noqa: F401 - fixture

DEVICE = "acme/plant1/press/line1/cell2/press-07"
OTHER = "acme/plant1/press/line1/cell2/press-08"
PG_URL = os.environ.get("IDMZ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def csr_for(key: Any, san: str | None = None, hash_alg: Any = None) -> bytes:
    """A CSR with an empty subject, optionally asking for the URI SAN ``spiffe://<san>``."""
    sans = [x509.UniformResourceIdentifier(f"spiffe://{san}")] if san is not None else []
    return make_csr(key, sans=sans, cn=None, hash_alg=hash_alg)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class State:
    """Everything a refusal must leave unchanged."""

    ledger: int
    registry: dict[str, int]
    devices: list[tuple[str, str]]
    certificates: list[tuple[str, str]]


@dataclass
class Env:
    home: Path
    ca: LocalCA | VaultCA
    registry: Registry
    audit: AuditLog
    token_key: TokenKey
    services: Services
    url: str
    port: int
    clock_offset: list[timedelta] = field(default_factory=lambda: [timedelta(0)])

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset[0]

    @property
    def fingerprint(self) -> str:
        return self.ca.root_fingerprint

    @property
    def root_pem(self) -> bytes:
        return pem(self.services.enrollment.root)

    @property
    def root_file(self) -> Path:
        return self.ca.paths.root_cert

    def add_device(self, path: str = DEVICE, **kwargs: Any) -> None:
        self.services.operators.add_device(path, operator="operator:test", now=self.now(), **kwargs)

    def token(self, path: str = DEVICE, *, ttl_s: int = 900) -> str:
        return self.services.operators.create_enrollment_token(
            operator="operator:test", now=self.now(), device=path, ttl_s=ttl_s
        )[0]

    def client(self, *, cert: Path | None = None, key: Path | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.root_file))
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return httpx.Client(base_url=self.url, verify=ctx, timeout=30.0)

    def enroll(
        self, key: Any = None, *, path: str = DEVICE, token: str | None = None
    ) -> httpx.Response:
        key = key or new_key()
        with self.client() as http:
            return http.post(
                "/v1/enroll",
                json={"csr": csr_for(key).decode()},
                headers={"Authorization": f"Bearer {token or self.token(path)}"},
            )

    def enrolled_device(self, directory: Path, path: str = DEVICE) -> Path:
        """Register and enroll ``path``; write key/cert/chain into ``directory``."""
        self.add_device(path)
        key = new_key()
        r = self.enroll(key, path=path)
        assert r.status_code == 201, r.text
        write_credentials(directory, key, r.json())
        return directory

    def snapshot(self) -> State:
        return State(
            ledger=len(self.ca.ledger.entries()) if self.ca.ledger else 0,
            registry=self.registry.counts(),
            devices=[(d.path, d.status) for d in self.registry.devices()],
            certificates=[(c.serial, c.status) for c in self.registry.certificates()],
        )

    def audit_records(self) -> list[dict[str, Any]]:
        paths = LogPaths(self.home / "audit")
        return [json.loads(raw) for _, raw in iter_entries(paths, read_index(paths))]

    def last_audit(self) -> dict[str, Any]:
        return self.audit_records()[-1]


def write_credentials(directory: Path, key: Any, body: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "cert.pem").write_text(body["certificate"])
    (directory / "chain.pem").write_text(body["chain"])
    (directory / "ca.pem").write_text(body["root"])


def assert_refused(
    env: Env, before: State, response: httpx.Response, *, action: str, reason: str
) -> dict[str, Any]:
    """The rule after every refusal: 4xx, nothing issued, registry unchanged, audited with why."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    after = env.snapshot()
    assert after == before, "a refused request changed the CA ledger or the registry"
    record = env.last_audit()
    assert record["action"] == action, record
    assert reason in record["reason"], record
    assert record["outcome"] in ("denied", "failure")
    return record


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is unreachable ({exc}); the registry's PostgreSQL tests need it "
            "(set IDMZ_TEST_POSTGRES_URL)"
        )
    return PG_URL


@pytest.fixture
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = f"idmz_prov_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def make_ca(home: Path) -> None:
    # Backdated so tests can hold certificates that were issued (and expired) weeks ago.
    init_ca(home / "ca", age=timedelta(days=60))


@dataclass
class Running:
    thread: threading.Thread
    server: Any

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_service(
    home: Path,
    database_url: str,
    *,
    limits: ServiceLimits | None = None,
    clock_offset: list[timedelta] | None = None,
    ca: LocalCA | VaultCA | None = None,
) -> tuple[Env, Running]:
    ca = ca or LocalCA.open(home / "ca", passphrase=PASSPHRASE)
    registry = Registry.open(database_url)
    audit = AuditLog.open(home / "audit", origin="test/audit", background_checkpoints=False)
    token_key = TokenKey.load_or_create(home / "provisioning" / "token-key.pem")
    offset = clock_offset if clock_offset is not None else [timedelta(0)]
    limits = limits or ServiceLimits(
        rates=RateLimits(
            per_client_per_s=1000, per_client_burst=1000, per_token_per_s=5, per_token_burst=20
        )
    )
    services = Services.compose(
        ca=ca,
        registry=registry,
        audit=audit,
        token_key=token_key,
        limits=limits,
        crl_file=ca.paths.crl_der,
    )
    port = free_port()
    env = Env(
        home, ca, registry, audit, token_key, services, f"https://127.0.0.1:{port}", port, offset
    )
    cert, key = ensure_server_certificate(
        ca, home / "provisioning", names=default_server_names(), now=env.now()
    )
    app = wrap(create_app(services, clock=env.now, limits=limits), limits)
    options = ServeOptions("127.0.0.1", port, cert, key, ca.paths.chain, http=limits.http)
    server = build_server(app, options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout_s=30, what="uvicorn to start")
    return env, Running(thread, server)


def serving(
    home: Path,
    database_url: str,
    limits: ServiceLimits | None = None,
    ca: LocalCA | VaultCA | None = None,
) -> Iterator[Env]:
    """A CA (a new local one unless ``ca`` is given), a registry and the service over HTTPS,
    stopped and closed after use."""
    if ca is None:
        make_ca(home)
    e, running = start_service(home, database_url, limits=limits, ca=ca)
    try:
        yield e
    finally:
        running.stop()
        e.services.enrollment.close()
        e.audit.close()
        e.registry.close()
        e.ca.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from serving(tmp_path, f"sqlite:///{tmp_path / 'registry.sqlite'}")


@pytest.fixture
def vault_env(tmp_path: Path, openbao: OpenBao) -> Iterator[Env]:  # noqa: F811 - the fixture
    """The same service issuing through the session's real OpenBao (issue 13): the registry,
    audit log and token key here, the CA files republished from Vault under ``<home>/ca``."""
    ca = VaultCA.connect(openbao.config(), ca_dir=tmp_path / "ca")
    yield from serving(tmp_path, f"sqlite:///{tmp_path / 'registry.sqlite'}", ca=ca)


@pytest.fixture
def pg_env(tmp_path: Path, pg_database: str) -> Iterator[Env]:
    yield from serving(tmp_path, pg_database)


@pytest.fixture
def second_instance(pg_env: Env, pg_database: str) -> Iterator[Env]:
    """Another service process-alike on the same home (CA, audit log) and the same database."""
    other, running = start_service(pg_env.home, pg_database)
    try:
        yield other
    finally:
        running.stop()
        other.audit.close()
        other.registry.close()
        other.ca.close()
