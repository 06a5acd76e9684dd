"""Property run of the HTTP API from its own OpenAPI document (schemathesis): whatever the
generated requests contain, the service answers 2xx/4xx, never 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from audit.log import AuditLog
from pki.local import LocalCA
from provisioning.config import RateLimits, ServiceLimits
from provisioning.http.app import create_app, wrap
from provisioning.registry import Registry
from provisioning.services import Services
from provisioning.tokens import Role, TokenKey
from tests.provisioning.conftest import DEVICE, PASSPHRASE, make_ca

_ADMIN: dict[str, str] = {}


@schemathesis.serializer("application/pkcs10")
def _pkcs10(_ctx: Any, value: Any) -> bytes:
    """EST bodies are base64 text; generated strings are sent as UTF-8 bytes."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    make_ca(home)
    ca = LocalCA.open(home / "ca", passphrase=PASSPHRASE)
    registry = Registry.open(f"sqlite:///{home / 'registry.sqlite'}")
    audit = AuditLog.open(home / "audit", origin="test/audit", background_checkpoints=False)
    limits = ServiceLimits(
        rates=RateLimits(
            per_client_per_s=1e6, per_client_burst=10**6, per_token_per_s=1e6, per_token_burst=10**6
        )
    )
    services = Services.compose(
        ca=ca,
        registry=registry,
        audit=audit,
        token_key=TokenKey.generate(),
        limits=limits,
        crl_file=ca.paths.crl_der,
    )
    now = datetime.now(UTC)
    services.operators.add_device(DEVICE, operator="t", now=now)
    _ADMIN["token"] = services.operators.create_operator_token(
        operator="t", name="fuzz", role=Role.ADMIN, now=now
    )[0]
    try:
        yield wrap(create_app(services, clock=lambda: datetime.now(UTC), limits=limits), limits)
    finally:
        audit.close()
        registry.close()
        ca.close()


def test_no_request_from_the_api_schema_causes_a_server_error(api: Any) -> None:
    # Driven through Hypothesis directly: schemathesis's pytest plugin does not load under
    # this pytest version. Every operation in the document gets its own bounded run.
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    admin = {"Authorization": f"Bearer {_ADMIN['token']}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            response = case.call(headers=admin if case.path.startswith("/v1/") else {})
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.path}: {response.status_code} {response.text[:200]}"
                )
            assert response.status_code < 500

        run()
    assert not failures
