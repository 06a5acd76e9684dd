"""Certificate and device status are enums end to end (W12, ADR 0045): the records carry
`CertificateStatus`/`DeviceStatus`, the SQL spells no status of its own, and the database
refuses a status the code does not know, so no writer can leave a row that the security rules
("only active renews", "pending is never handed out") were not written for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from provisioning.records import CertificateStatus, DeviceStatus
from provisioning.registry import Registry

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
DEVICE = "acme/p1/press/l1/c2/press-07"


def registry_with_device() -> Registry:
    reg = Registry.open("sqlite://")
    with reg.unit() as unit:
        unit.insert_device(
            DEVICE, device_class="gateway", asset="", status=DeviceStatus.REGISTERED, now=NOW
        )
    return reg


def record(reg: Registry, serial: str, status: CertificateStatus | str) -> None:
    with reg.unit() as unit:
        unit.record_certificate(
            serial=serial,
            device_path=DEVICE,
            fingerprint="00" * 32,
            not_before=NOW,
            not_after=NOW + timedelta(days=90),
            via="enroll",
            now=NOW,
            status=status,  # type: ignore[arg-type]
        )


def test_records_carry_the_status_enums() -> None:
    reg = registry_with_device()
    record(reg, "0a", CertificateStatus.PENDING)
    device, cert = reg.device(DEVICE), reg.certificate("0a")
    assert device is not None and device.status is DeviceStatus.REGISTERED
    assert cert is not None and cert.status is CertificateStatus.PENDING


def test_a_certificate_status_the_code_does_not_know_is_refused_by_the_database() -> None:
    reg = registry_with_device()
    with pytest.raises(IntegrityError, match=r"(?i)check constraint|status_known"):
        record(reg, "0b", "valid")  # a plausible word, not a CertificateStatus
    assert reg.certificate("0b") is None


def test_a_device_status_the_code_does_not_know_is_refused_by_the_database() -> None:
    reg = Registry.open("sqlite://")
    with (
        pytest.raises(IntegrityError, match=r"(?i)check constraint|status_known"),
        reg.unit() as unit,
    ):
        unit.insert_device(
            DEVICE,
            device_class="gateway",
            asset="",
            status="active",  # type: ignore[arg-type]
            now=NOW,
        )
    assert reg.device(DEVICE) is None
