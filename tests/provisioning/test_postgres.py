"""The registry on the machine's PostgreSQL, shared by two service instances: a one-time token
stays one-time when many requests race for it across instances."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.provisioning.conftest import DEVICE, Env, csr_for, new_key

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


def test_enrollment_and_renewal_on_postgresql(pg_env: Env, tmp_path: Path) -> None:
    assert pg_env.registry.dialect == "postgresql"
    creds = pg_env.enrolled_device(tmp_path / "gw")
    with pg_env.client(cert=creds / "cert.pem", key=creds / "key.pem") as http:
        r = http.post("/v1/renew", json={"csr": csr_for(new_key()).decode()})
    assert r.status_code == 201, r.text
    assert sorted(c.status for c in pg_env.registry.certificates(DEVICE)) == [
        "active",
        "superseded",
    ]


def test_one_time_token_is_single_use_across_two_instances_under_concurrency(
    pg_env: Env, second_instance: Env
) -> None:
    pg_env.add_device()
    token = pg_env.token()
    csrs = [csr_for(new_key()).decode() for _ in range(24)]
    clients = [pg_env.client(), second_instance.client()]

    def attempt(i: int) -> int:
        http = clients[i % 2]
        return http.post(
            "/v1/enroll", json={"csr": csrs[i]}, headers={"Authorization": f"Bearer {token}"}
        ).status_code

    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(attempt, range(24)))
    finally:
        for c in clients:
            c.close()
    assert sorted(statuses) == [201] + [401] * 23, statuses
    assert len(pg_env.registry.certificates(DEVICE)) == 1
    assert len([e for e in pg_env.ca.ledger.entries() if e.subject == DEVICE]) == 1
    actions = [r["action"] for r in pg_env.audit_records()]
    assert actions.count("provisioning.enroll.accepted") == 1
    assert actions.count("provisioning.enroll.refused") == 23


def test_many_devices_enroll_in_parallel_on_two_instances(
    pg_env: Env, second_instance: Env
) -> None:
    paths = [f"acme/plant1/press/line1/cell{i % 4}/gw-{i:03d}" for i in range(40)]
    for path in paths:
        pg_env.add_device(path)
    tokens = [pg_env.token(p) for p in paths]
    clients = [pg_env.client(), second_instance.client()]

    def attempt(i: int) -> int:
        # Every token is tried twice, once on each instance.
        http = clients[i % 2]
        body = {"csr": csr_for(new_key()).decode()}
        return http.post(
            "/v1/enroll", json=body, headers={"Authorization": f"Bearer {tokens[i // 2]}"}
        ).status_code

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(attempt, range(80)))
    finally:
        for c in clients:
            c.close()
    assert statuses.count(201) == 40 and statuses.count(401) == 40
    assert all(d.status == "enrolled" for d in pg_env.registry.devices())
    assert pg_env.registry.counts()["certificates"] == 40
