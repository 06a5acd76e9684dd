"""Revocation is final (review H1, S4): a holder of a stolen device key who renews or enrolls in
a loop while the operator revokes the device never ends up with a certificate the revocation
missed, and never turns the device back to ``enrolled``. Real threads, no hooks, on SQLite and
on the machine's PostgreSQL; the CRL is read back with ``openssl crl`` as an independent peer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.authority import format_serial
from provisioning.errors import RefusedError
from provisioning.registry import Registry
from provisioning.services import Services
from tests.provisioning.inprocess import (
    BACKENDS,
    CSRS,
    OPERATOR,
    Plant,
    now,
    open_plant,
    registry_url,
)
from tests.support.net import wait_for

TRIALS = 20


@pytest.fixture(params=BACKENDS)
def plant(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plant]:
    yield from open_plant(tmp_path, registry_url(request, tmp_path))


@dataclass
class Attacker:
    """Runs ``step`` in a loop on its own thread until stopped; counts outcomes."""

    step: Callable[[int], str | None]  # the serial issued, or None when it ran out of material
    issued: list[str] = field(default_factory=list)
    refused: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                try:
                    serial = self.step(i)
                except RefusedError:
                    self.refused += 1
                else:
                    if serial is None:
                        return
                    self.issued.append(serial)
                i += 1
        finally:
            self.done.set()


def race(attacker: Attacker, revoke: Callable[[], object], *, issued_before: int) -> None:
    """Start the attacker, revoke once it has been issued ``issued_before`` certificates, and
    stop it once it has been refused after the revocation (or ran out of material)."""
    thread = threading.Thread(target=attacker.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: len(attacker.issued) >= issued_before or attacker.done.is_set(),
            timeout_s=120,
            interval_s=0.002,
            what="the attacker's first certificates",
        )
        revoke()
        refused_at_revocation = attacker.refused
        wait_for(
            lambda: attacker.refused > refused_at_revocation or attacker.done.is_set(),
            timeout_s=120,
            interval_s=0.002,
            what="the attacker to be refused after the revocation",
        )
    finally:
        attacker.stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()


def revoke(services: Services, device: str) -> None:
    services.operators.revoke_device(device, operator=OPERATOR, now=now())


@dataclass
class Renewer:
    """The stolen-key holder: renews with the newest certificate it got."""

    services: Services
    newest: list[x509.Certificate]

    def step(self, i: int) -> str:
        der = self.newest[-1].public_bytes(serialization.Encoding.DER)
        cert = self.services.enrollment.renew(
            der, CSRS[i % 8], now=now(), client="gw"
        ).issued.certificate
        self.newest.append(cert)
        return format_serial(cert.serial_number)


def enroll_with(services: Services, tokens: list[str], i: int) -> str | None:
    if i >= len(tokens):
        return None
    return services.enrollment.enroll(
        tokens[i], CSRS[i % 8], now=now(), client="gw"
    ).issued.serial_hex


def assert_revocation_is_final(plant: Plant, device: str, issued: list[str]) -> None:
    record = plant.registry.device(device)
    assert record is not None and record.status == "revoked", record
    unrevoked = [
        format_serial(e.serial)
        for e in plant.ca.ledger.entries(subject=device)
        if e.revoked_at is None
    ]
    assert unrevoked == [], f"certificates of {device} the revocation missed: {unrevoked}"
    assert {c.status for c in plant.registry.certificates(device)} == {"revoked"}
    on_crl = plant.openssl_crl_serials()
    missing = [s for s in issued if s.lstrip("0") not in on_crl]
    assert missing == [], f"issued to the attacker but not on the CRL: {missing}"
    actions = plant.audit_actions()
    assert (OPERATOR, "provisioning.device.revoked", "unspecified") in actions


def test_renewal_racing_revocation_cannot_unrevoke_the_device(plant: Plant) -> None:
    services = plant.services
    for trial in range(TRIALS):
        device = f"acme/plant1/press/line1/cell2/renew-{trial}"
        services.operators.add_device(device, operator=OPERATOR, now=now())
        token, _ = services.operators.create_enrollment_token(
            operator=OPERATOR, now=now(), device=device
        )
        first = services.enrollment.enroll(
            token, CSRS[0], now=now(), client="gw"
        ).issued.certificate
        renewer = Renewer(services, [first])
        attacker = Attacker(renewer.step)
        race(attacker, partial(revoke, services, device), issued_before=1 + trial % 3)
        assert_revocation_is_final(
            plant, device, [format_serial(first.serial_number), *attacker.issued]
        )
        # The newest certificate the attacker holds renews no more; the refusal is audited.
        before = len(plant.audit_actions())
        with pytest.raises(RefusedError):
            services.enrollment.renew(
                renewer.newest[-1].public_bytes(serialization.Encoding.DER),
                CSRS[0],
                now=now(),
                client="gw",
            )
        after = plant.audit_actions()[before:]
        assert [a for _, a, _ in after] == ["provisioning.renew.refused"]


def test_enrollment_racing_revocation_cannot_unrevoke_the_device(plant: Plant) -> None:
    services = plant.services
    for trial in range(TRIALS):
        device = f"acme/plant1/press/line1/cell3/enroll-{trial}"
        services.operators.add_device(device, operator=OPERATOR, now=now())
        tokens = [
            services.operators.create_enrollment_token(operator=OPERATOR, now=now(), device=device)[
                0
            ]
            for _ in range(24)
        ]
        # The last token is kept back: it must be refused once the device is revoked.
        attacker = Attacker(partial(enroll_with, services, tokens[:-1]))
        race(attacker, partial(revoke, services, device), issued_before=1 + trial % 3)
        assert attacker.issued, "the attacker never enrolled before the revocation"
        assert_revocation_is_final(plant, device, attacker.issued)
        # A token the attacker never reached is refused for the revoked device, audited.
        with pytest.raises(RefusedError):
            services.enrollment.enroll(tokens[-1], CSRS[0], now=now(), client="gw")
        actor, action, reason = plant.audit_actions()[-1]
        assert (actor, action) == (device, "provisioning.enroll.refused")
        assert "revoked" in reason


def test_group_enrollment_racing_revocation_cannot_unrevoke_the_device(plant: Plant) -> None:
    """A group token enrolls a new device; the operator revokes it the moment it appears in
    the registry (between the pending record and the activation, when the race allows)."""
    services = plant.services
    prefix = "acme/plant1/press/line2"
    services.operators.add_group(prefix, operator=OPERATOR, now=now())
    for trial in range(TRIALS):
        device = f"{prefix}/cell1/new-{trial}"
        token, _ = services.operators.create_enrollment_token(
            operator=OPERATOR, now=now(), group=prefix
        )
        outcome: list[str | RefusedError] = []
        thread = threading.Thread(
            target=_enroll_into, args=(services, token, device, outcome), daemon=True
        )
        thread.start()
        wait_for(
            partial(_registered_or_done, plant.registry, device, outcome),
            timeout_s=120,
            interval_s=0.0005,
            what="the group enrollment to register the device",
        )
        services.operators.revoke_device(device, operator=OPERATOR, now=now())
        thread.join(timeout=120)
        assert not thread.is_alive()
        issued = [o for o in outcome if isinstance(o, str)]
        assert_revocation_is_final(plant, device, issued)


def _enroll_into(
    services: Services, token: str, device: str, outcome: list[str | RefusedError]
) -> None:
    try:
        enrolled = services.enrollment.enroll(
            token, CSRS[0], now=now(), client="gw", requested_identity=device
        )
        outcome.append(enrolled.issued.serial_hex)
    except RefusedError as exc:
        outcome.append(exc)


def _registered_or_done(registry: Registry, device: str, outcome: list[str | RefusedError]) -> bool:
    return registry.device(device) is not None or bool(outcome)
