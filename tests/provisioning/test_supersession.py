"""After a renewal the superseded certificate does not stay valid for its whole lifetime (review
S6): it is revoked with reason ``superseded`` once the switch-over grace is over (ADR 0047), at
once with a grace of 0. Checked by ``openssl verify`` with the CRL as an independent peer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.authority import RevocationReason, format_serial, pem
from provisioning.config import RenewalPolicy, ServiceLimits
from provisioning.errors import ConfigError, RefusedError
from tests.provisioning.conftest import DEVICE
from tests.provisioning.inprocess import (
    BACKENDS,
    CSRS,
    OPERATOR,
    Plant,
    now,
    open_plant,
    registry_url,
)


def _plant_with_grace(request: pytest.FixtureRequest, home: Path, grace_s: int) -> Iterator[Plant]:
    limits = ServiceLimits(renewal=RenewalPolicy(superseded_grace_s=grace_s))
    yield from open_plant(home, registry_url(request, home), limits=limits)


@pytest.fixture(params=BACKENDS)
def immediate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plant]:
    yield from _plant_with_grace(request, tmp_path, 0)


@pytest.fixture(params=BACKENDS)
def graceful(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plant]:
    yield from _plant_with_grace(request, tmp_path, 600)


def enroll_and_renew(plant: Plant) -> tuple[x509.Certificate, x509.Certificate]:
    services = plant.services
    services.operators.add_device(DEVICE, operator=OPERATOR, now=now())
    token, _ = services.operators.create_enrollment_token(
        operator=OPERATOR, now=now(), device=DEVICE
    )
    old = services.enrollment.enroll(token, CSRS[0], now=now(), client="gw").issued.certificate
    der = old.public_bytes(serialization.Encoding.DER)
    new = services.enrollment.renew(der, CSRS[1], now=now(), client="gw").issued.certificate
    return old, new


def test_superseded_certificate_is_refused_after_renewal(immediate: Plant) -> None:
    plant = immediate
    old, new = enroll_and_renew(plant)
    old_serial = format_serial(old.serial_number)

    refused = plant.openssl_verify(pem(old))
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    assert plant.openssl_verify(pem(new)).returncode == 0
    entry = plant.ca.lookup(old.serial_number)
    assert entry is not None and entry.reason == RevocationReason.SUPERSEDED
    # The device stays live on its new certificate; the old one is refused for renewal too.
    device = plant.registry.device(DEVICE)
    assert device is not None and device.status == "enrolled"
    statuses = {c.serial: c.status for c in plant.registry.certificates(DEVICE)}
    assert statuses == {old_serial: "revoked", format_serial(new.serial_number): "active"}
    with pytest.raises(RefusedError):
        plant.services.enrollment.renew(
            old.public_bytes(serialization.Encoding.DER), CSRS[2], now=now(), client="gw"
        )
    records = plant.audit_records()
    revoked = [r for r in records if r["action"] == "pki.cert.revoked"]
    assert [(r["resource"], r["actor"]) for r in revoked] == [(old_serial, "service:provisioning")]
    assert str(revoked[0]["reason"]).startswith("superseded")
    assert records[-1]["action"] == "provisioning.renew.refused"


def test_superseded_certificate_stays_valid_through_the_switch_over_grace(
    graceful: Plant,
) -> None:
    plant = graceful
    old, new = enroll_and_renew(plant)
    # Within the grace the gateway may still reconnect with the old certificate.
    assert plant.openssl_verify(pem(old)).returncode == 0
    assert plant.services.enrollment.revoke_superseded(now=now() + timedelta(seconds=590)) == []
    # Once it is over, the periodic sweep revokes it, exactly once across repeated sweeps.
    later = now() + timedelta(seconds=601)
    assert plant.services.enrollment.revoke_superseded(now=later) == [
        format_serial(old.serial_number)
    ]
    assert plant.services.enrollment.revoke_superseded(now=later) == []
    # (The sweep ran 10 minutes ahead, so its CRL is not valid yet for `openssl verify`.)
    on_crl = plant.openssl_crl_serials()
    assert format_serial(old.serial_number) in on_crl
    assert format_serial(new.serial_number) not in on_crl


def test_revoking_the_device_inside_the_grace_leaves_nothing_for_the_sweep(
    graceful: Plant,
) -> None:
    plant = graceful
    old, new = enroll_and_renew(plant)
    notice = plant.services.operators.revoke_device(DEVICE, operator=OPERATOR, now=now())
    assert set(notice.serials) == {
        format_serial(old.serial_number),
        format_serial(new.serial_number),
    }
    assert plant.services.enrollment.revoke_superseded(now=now() + timedelta(days=1)) == []


def test_a_grace_beyond_the_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RenewalPolicy(superseded_grace_s=2 * 24 * 3600)
    with pytest.raises(ConfigError):
        RenewalPolicy(superseded_grace_s=-1)
