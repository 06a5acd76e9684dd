"""A plant-wide power-up against the real service: ``idmz provisioning serve`` with two worker
processes on one SQLite registry, over HTTPS, and many gateways enrolling at once through the
real client (`provisioning.client.enroll`, what ``idmz enroll`` runs), each on its own thread.
The service admits a few at a time (``--max-in-flight``) and answers the rest 429 with a
``Retry-After`` appointment; every gateway must finish, none may see a 5xx (ADR 0137).

And the one-time token under real concurrency across the two workers: many connections present
the same token at the same instant; exactly one certificate is issued (ADR 0040, ADR 0136).

CI runs 240 gateways (~15 s); ``IDMZ_TEST_GATEWAYS=5000`` runs the plant-sized herd with the
real client (2 min 15 s at load average 20 on two cores: 5,000 threads of httpx are the load),
and `bench/enroll.py --power-up 5000` runs it with a lighter client.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from idmz.home import Home
from idmz.provisioning_runtime import open_runtime
from provisioning.client import enroll
from provisioning.patience import Patience, Retry
from tests.provisioning.conftest import csr_for, new_key
from tests.support.net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
GATEWAYS = int(os.environ.get("IDMZ_TEST_GATEWAYS", "240"))
CONTENDERS = 24
# All gateways share 127.0.0.1 here; in a plant each has its own address.
UNLIMITED_CLIENT = ("--client-rate", "1e6", "--client-burst", "1000000")
pytestmark = pytest.mark.timeout(300)


def prepare(home: Path, paths: list[str]) -> tuple[list[str], str, Path]:
    """Register ``paths`` and mint one token each; the tokens, the root fingerprint and file."""
    with open_runtime(Home(home), organization="acme") as runtime:
        now = datetime.now(UTC)
        tokens = []
        for path in paths:
            runtime.services.operators.add_device(path, operator="operator:test", now=now)
            tokens.append(
                runtime.services.operators.create_enrollment_token(
                    operator="operator:test", now=now, device=path, ttl_s=3600
                )[0]
            )
        return tokens, runtime.ca.root_fingerprint, runtime.ca.paths.root_cert


@contextmanager
def served(home: Path, *args: str) -> Iterator[str]:
    """``idmz provisioning serve --workers 2`` on ``home``; its URL."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "idmz", "--home", str(home), "provisioning", "serve",
            "--port", str(port), "--workers", "2", *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        banner = server.stdout.readline().decode()
        assert "https://" in banner, banner + server.stdout.read().decode()
        url = f"https://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), timeout_s=60, what="the service to answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", verify=False, timeout=2).status_code == 200  # noqa: S501
    except httpx.HTTPError:
        return False


def test_power_up_every_gateway_enrolls_paced_by_429_and_none_sees_a_5xx(tmp_path: Path) -> None:
    paths = [f"acme/plant1/area{i % 4}/line{i % 3}/cell1/gw-{i:04d}" for i in range(GATEWAYS)]
    tokens, fingerprint, _ = prepare(tmp_path / "home", paths)
    retries: list[Retry] = []
    failures: list[str] = []
    start = threading.Barrier(GATEWAYS)

    def gateway(i: int, url: str) -> None:
        patience = Patience(total_s=240, on_retry=retries.append)
        start.wait()
        try:
            enroll(url, tokens[i], fingerprint, tmp_path / "gw" / str(i), patience=patience)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(f"{paths[i]}: {type(exc).__name__}: {exc}")

    shedding = ("--max-in-flight", "4")  # per worker: most of the herd is told to come back
    with served(tmp_path / "home", *shedding, *UNLIMITED_CLIENT) as url:
        threads = [threading.Thread(target=gateway, args=(i, url)) for i in range(GATEWAYS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    print(f"{len(retries)} retries, max attempt {max((r.attempt for r in retries), default=1)}")
    assert failures == []
    statuses = {r.status for r in retries}
    assert 429 in statuses  # the service shed: the patience was exercised, not idle
    assert not [s for s in statuses if s is not None and s >= 500]
    assert all(r.error is None for r in retries)  # no connection was refused or lost
    with open_runtime(Home(tmp_path / "home"), create_ca=False) as runtime:
        counts = runtime.registry.counts()
        assert counts["certificates"] == counts["tokens_used"] == GATEWAYS
        assert {d.status.value for d in runtime.registry.devices()} == {"enrolled"}


def test_one_token_presented_at_once_on_both_workers_issues_exactly_one_certificate(
    tmp_path: Path,
) -> None:
    device = "acme/plant1/press/line1/cell1/gw-contended"
    (token,), _, root = prepare(tmp_path / "home", [device])
    statuses: list[int] = []
    start = threading.Barrier(CONTENDERS)

    def contender(url: str) -> None:
        body = {"csr": csr_for(new_key()).decode()}
        with httpx.Client(verify=ssl.create_default_context(cafile=str(root)), timeout=60) as http:
            http.get(f"{url}/healthz")  # connected (to either worker) before the race starts
            start.wait()
            response = http.post(
                f"{url}/v1/enroll", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        statuses.append(response.status_code)

    with served(tmp_path / "home", *UNLIMITED_CLIENT) as url:
        threads = [threading.Thread(target=contender, args=(url,)) for _ in range(CONTENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 401, 429}  # refused as spent, or paced by the token limit
    with open_runtime(Home(tmp_path / "home"), create_ca=False) as runtime:
        assert len(runtime.registry.certificates(device)) == 1
        assert len(runtime.ca.ledger.entries()) == 2  # the service's TLS certificate + this one
