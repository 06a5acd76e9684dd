"""A real relay appliance for tests: a LocalCA in a tmp dir, two managed Mosquitto brokers with
TLS on ephemeral ports rendered from the example policy, N worker processes, the durable audit
log. Independent clients are `mosquitto_pub` / `mosquitto_sub` (tests.support.mqtt).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit.log import AuditLog
from audit.storage import LogPaths, iter_entries, read_index
from relay.appliance import Appliance
from relay.config import (
    ApplianceConfig,
    BrokerEndpoint,
    ManagedBroker,
    RelayLimits,
    TLSFiles,
    WorkerConfig,
)
from relay.errors import RevokePluginUnavailableError
from relay.revoke_plugin import build_plugin
from tests.support.ca import ClientCredentials, PKIFixture, make_test_pki
from tests.support.mqtt import Endpoint
from tests.support.net import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
POLICY_PATH = REPO / "deploy" / "policy" / "plant.toml"
PRESS_1 = "acme/plant1/stamping/line1/cell1/press-01"
PRESS_2 = "acme/plant1/stamping/line1/cell1/press-02"
RELAY_ID = "acme/it/idmz-relay"
HISTORIAN = "acme/it/historian"


def envelope(device: str, msg_id: str, kind: str = "telemetry", data: object = None) -> str:
    return json.dumps(
        {
            "v": 1,
            "id": msg_id,
            "ts": "2026-11-22T10:00:00.000Z",
            "device": device,
            "kind": kind,
            "data": data if data is not None else {"tags": []},
        },
        separators=(",", ":"),
    )


@dataclass
class Plant:
    """The test PKI and client credentials, shared by a module."""

    pki: PKIFixture
    server: ClientCredentials
    creds: dict[str, ClientCredentials]
    tmp: Path

    def cred(self, name: str) -> ClientCredentials:
        if name not in self.creds:
            if name.startswith("acme/it/"):
                self.creds[name] = self.pki.consumer(name)
            else:
                self.creds[name] = self.pki.device(name)
        return self.creds[name]


@dataclass
class Relay:
    plant: Plant
    appliance: Appliance
    config: ApplianceConfig
    ot: Endpoint
    it: Endpoint
    home: Path
    audit: AuditLog
    subscribers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def audit_events(self) -> list[dict[str, Any]]:
        """Every record in the audit log, parsed."""
        paths = LogPaths(self.home / "audit")
        return [json.loads(raw) for _, raw in iter_entries(paths, read_index(paths))]

    def bound(self, side: str) -> Endpoint:
        """The ``"ot"`` or ``"it"`` broker's bound-id listener (ADR 0058): there a client picks
        its client id, ``<identity>`` or ``<identity>:<suffix>``, so one identity may hold
        several sessions (on the main listener the client id is the certificate CN)."""
        broker = self.config.managed_ot if side == "ot" else self.config.managed_it
        assert broker is not None and broker.bound_port is not None
        return Endpoint(broker.bound_port, self.plant.pki.cafile)

    def metrics(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.appliance.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def health(self) -> tuple[int, dict[str, object]]:
        import urllib.error
        import urllib.request

        url = f"http://127.0.0.1:{self.appliance.health_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def snapshot_total(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.appliance.snapshots().values())

    def wait_connected(self) -> None:
        n = self.config.workers

        def ready() -> bool:
            snaps = self.appliance.snapshots()
            return len(snaps) >= n and all(
                s.get("ot_connected") and s.get("it_connected") for s in snaps.values()
            )

        wait_for(ready, timeout_s=60, what="relay workers connected to both brokers")


@pytest.fixture(scope="module")
def revoke_plugin() -> Path:
    """The compiled revoke plugin; the test is skipped, saying why, where it cannot be built."""
    try:
        return build_plugin()
    except RevokePluginUnavailableError as exc:
        pytest.skip(f"the revoke plugin cannot be built here: {exc}")


def issue_plant(pki: PKIFixture, devices: tuple[str, ...]) -> Plant:
    """The brokers' server certificate, the relay's and the historian's, and ``devices``'."""
    server = pki.server()
    creds = {RELAY_ID: pki.consumer(RELAY_ID), HISTORIAN: pki.consumer(HISTORIAN)}
    for device in devices:
        creds[device] = pki.device(device)
    return Plant(pki, server, creds, pki.dir)


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    pki = make_test_pki(tmp_path_factory.mktemp("relay-pki"))
    try:
        yield issue_plant(pki, (PRESS_1, PRESS_2))
    finally:
        pki.close()


def appliance_config(
    plant: Plant,
    home: Path,
    *,
    ports: tuple[int, int, int],
    workers: int = 1,
    limits: RelayLimits | None = None,
    policy_text: str | None = None,
    max_queued_messages: int = 100_000,
) -> ApplianceConfig:
    """The appliance's configuration for ``ports`` = (OT broker, IT broker, health)."""
    ot_port, it_port, health_port = ports
    relay_creds = plant.creds[RELAY_ID]
    tls = TLSFiles(plant.pki.cafile, relay_creds.cert, relay_creds.key)
    ca_dir = plant.pki.dir / "ca"
    worker = WorkerConfig(
        ot=BrokerEndpoint("127.0.0.1", ot_port, tls),
        it=BrokerEndpoint("127.0.0.1", it_port, tls),
        policy_text=policy_text if policy_text is not None else POLICY_PATH.read_text(),
        policy_source=str(POLICY_PATH),
        state_dir=home / "relay",
        audit_dir=home / "audit",
        audit_origin="test.example/idmz-audit",
        crl_path=ca_dir / "crl.pem",
        issuing_ca_path=ca_dir / "issuing.pem",
        ledger_path=ca_dir / "ledger.sqlite",
        limits=limits or RelayLimits(),
    )

    def managed(port: int) -> ManagedBroker:
        return ManagedBroker(
            "127.0.0.1",
            port,
            plant.pki.cafile,
            plant.server.cert,
            plant.server.key,
            bound_port=free_port(),  # the workers' bound-id listener (ADR 0058)
            max_queued_messages=max_queued_messages,
        )

    return ApplianceConfig(
        worker=worker,
        workers=workers,
        managed_ot=managed(ot_port),
        managed_it=managed(it_port),
        broker_dir=home / "brokers",
        health_port=health_port,
    )


def start_relay(
    plant: Plant,
    home: Path,
    *,
    workers: int = 1,
    limits: RelayLimits | None = None,
    policy_text: str | None = None,
    max_queued_messages: int = 100_000,
) -> Relay:
    ot_port, it_port, health_port = free_port(), free_port(), free_port()
    config = appliance_config(
        plant, home, ports=(ot_port, it_port, health_port), workers=workers, limits=limits,
        policy_text=policy_text, max_queued_messages=max_queued_messages,
    )  # fmt: skip
    audit = AuditLog.open(home / "audit", origin="test.example/idmz-audit")
    appliance = Appliance(config, audit=audit, log_level="info")
    try:
        appliance.start()
        relay = Relay(
            plant,
            appliance,
            config,
            Endpoint(ot_port, plant.pki.cafile),
            Endpoint(it_port, plant.pki.cafile),
            home,
            audit,
        )
        relay.wait_connected()
    except BaseException:
        # A relay that did not come up leaves nothing behind: no broker, worker or link thread
        # that would later dial a port another test's broker has taken.
        appliance.stop()
        audit.close()
        raise
    return relay


def stop_relay(relay: Relay) -> None:
    for proc in relay.subscribers:
        proc.terminate()
    relay.appliance.stop()
    relay.audit.close()


@pytest.fixture(scope="module")
def relay(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = start_relay(plant, tmp_path_factory.mktemp("relay-home"), workers=2)
    try:
        yield r
    finally:
        stop_relay(r)


def utcnow() -> datetime:
    return datetime.now(UTC)
