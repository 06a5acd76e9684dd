"""Live revocation with the Vault backend (issue 13): the same cut-off as with the local CA.

The plant's certificates are signed by a real OpenBao; `pki.vault.VaultCA` with the plant's CA
directory keeps the ledger (serial -> identity) and republishes Vault's chain and CRL there,
the files the brokers, the revoke plugin and the relay workers read. A revocation through Vault
cuts the device off within 5 s, as `test_revocation.py` asserts for the local CA.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pki.authority import RevocationReason
from pki.vault import VaultCA
from tests.relay.conftest import (
    Plant,
    Relay,
    envelope,
    issue_plant,
    start_relay,
    stop_relay,
    utcnow,
)
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.relay.test_revocation import BYSTANDER, CUTOFF_DEADLINE_S, VICTIM, DeviceConnection
from tests.support.ca import PKIFixture, ProductCA
from tests.support.mqtt import publish
from tests.support.net import wait_for
from tests.support.openbao import OpenBao
from tests.support.openbao import openbao as openbao

pytestmark = [pytest.mark.integration, pytest.mark.vault]


@pytest.fixture(scope="module")
def vault_plant(
    openbao: OpenBao,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Plant]:
    tmp = tmp_path_factory.mktemp("relay-vault-pki")
    ca = VaultCA.connect(openbao.config(), ca_dir=tmp / "ca")
    pki = PKIFixture(tmp, ProductCA(ca, tmp / "ca", datetime.now(UTC)))
    try:
        yield issue_plant(pki, (VICTIM, BYSTANDER))
    finally:
        ca.close()


@pytest.fixture(scope="module")
def vault_relay(
    vault_plant: Plant, revoke_plugin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
    r = start_relay(vault_plant, tmp_path_factory.mktemp("relay-vault"), workers=1)
    try:
        yield r
    finally:
        stop_relay(r)


def test_a_device_revoked_through_vault_is_cut_off_like_with_the_local_ca(
    vault_relay: Relay, tmp_path: Path
) -> None:
    """Revoked through Vault: the connected device is dropped within 5 s, the other gateway keeps
    its session and keeps flowing, the cut-off is audited, and a reconnect is refused at TLS once
    the broker has re-read Vault's CRL (waited for: the broker reloads it on SIGHUP, ADR 0057)."""
    relay = vault_relay
    consumer = ITConsumer(relay, tmp_path / "it.txt")
    make_live(relay, consumer, BYSTANDER)
    bystander = DeviceConnection(relay, BYSTANDER)
    victim = DeviceConnection(relay, VICTIM)
    try:
        serial = relay.plant.pki.ca.certificates_for(VICTIM)[-1].serial
        revoked_at = time.monotonic()
        relay.plant.pki.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=utcnow())
        wait_for(lambda: victim.dropped_at is not None, timeout_s=30, what="victim disconnected")
        assert victim.dropped_at is not None
        assert victim.dropped_at - revoked_at < CUTOFF_DEADLINE_S
    finally:
        victim.close()
    creds = relay.plant.cred(VICTIM)
    wait_for(
        lambda: (
            publish(
                relay.ot, creds, f"{VICTIM}/telemetry", envelope(VICTIM, "again"), v5=True
            ).returncode
            != 0
        ),
        timeout_s=30,
        what="the victim's reconnect refused at TLS",
    )
    assert any(
        e["action"] == "relay.device.cutoff" and e["resource"] == VICTIM
        for e in relay.audit_events()
    )
    info = bystander.client.publish(
        f"{BYSTANDER}/status", envelope(BYSTANDER, "bystander-after", "status", {}), qos=1
    )
    info.wait_for_publish(timeout=30)
    wait_for(lambda: consumer.lines_with("bystander-after"), timeout_s=60, what="bystander flows")
    assert bystander.dropped_at is None and bystander.connects == 1
    bystander.close()
    consumer.stop()
