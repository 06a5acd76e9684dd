"""Live revocation with the Vault backend (issue 13): the same cut-off as with the local CA.

The plant's certificates are signed by a real OpenBao; `pki.vault.VaultCA` with the plant's CA
directory keeps the ledger (serial -> identity) and republishes Vault's chain and CRL there,
the files the brokers, the revoke plugin and the relay workers read. A revocation through Vault
cuts the device off within 5 s, exactly as `test_revocation.py` asserts for the local CA.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pki.vault import VaultCA
from tests.policies.testpki import PKIFixture
from tests.relay import test_revocation
from tests.relay.conftest import HISTORIAN, RELAY_ID, Plant, Relay, start_relay, stop_relay
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
    pki = PKIFixture(tmp, ca, datetime.now(UTC))  # type: ignore[arg-type] - same protocol
    server = pki.server()
    creds = {RELAY_ID: pki.consumer(RELAY_ID), HISTORIAN: pki.consumer(HISTORIAN)}
    for device in (test_revocation.VICTIM, test_revocation.BYSTANDER):
        creds[device] = pki.device(device)
    try:
        yield Plant(pki, server, creds, tmp)
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
    test_revocation.test_revoked_device_is_cut_off_refused_and_its_in_flight_messages_are_audited(
        vault_relay, tmp_path
    )
