"""Fixtures for the edge tests: a product CA, a TLS-only Mosquitto, the plant simulator."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from edge.simulator import SimulatorSettings, SimulatorThread
from tests.support.ca import ProductCA, make_ca
from tests.support.mosquitto import Broker, start_broker
from tests.support.net import free_port

# Made a year ago, so tests can issue backdated (already expired) certificates from it.
CA_AGE = timedelta(days=365)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductCA]:
    ca = make_ca(tmp_path_factory.mktemp("edge-ca") / "ca", age=CA_AGE)
    yield ca
    ca.close()


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductCA]:
    """A CA nobody trusts."""
    ca = make_ca(tmp_path_factory.mktemp("other-ca") / "ca", organization="mallory", age=CA_AGE)
    yield ca
    ca.close()


def mtls_broker_config(
    test_ca: ProductCA, workdir: Path, port: int, *, persistence: bool = False
) -> str:
    server = test_ca.server()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "server.pem").write_bytes(server.cert_pem + server.chain_pem)
    (workdir / "server.key").write_bytes(server.key_pem)
    (workdir / "server.key").chmod(0o600)
    (workdir / "clients-ca.pem").write_bytes(test_ca.chain_path.read_bytes())
    lines = [
        # Started as root, Mosquitto would switch to user "mosquitto", which cannot read the
        # test's private temporary directory; stay the user that owns it.
        f"user {getpass.getuser()}",
        f"listener {port} 127.0.0.1",
        f"cafile {workdir / 'clients-ca.pem'}",
        f"certfile {workdir / 'server.pem'}",
        f"keyfile {workdir / 'server.key'}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        "allow_anonymous false",
        "max_queued_messages 100000",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if persistence:
        lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def mtls_broker(test_ca: ProductCA, tmp_path: Path) -> Iterator[Broker]:
    port = free_port()
    broker = start_broker(
        mtls_broker_config(test_ca, tmp_path / "broker", port), port, tmp_path / "broker"
    )
    yield broker
    broker.stop()


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    sim = SimulatorThread(
        SimulatorSettings(opcua_port=free_port(), modbus_port=free_port(), seed=7)
    )
    sim.start()
    yield sim
    sim.stop()
