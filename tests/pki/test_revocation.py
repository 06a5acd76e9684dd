"""Revocation by serial with a reason; a signed CRL with nextUpdate after every revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from pki.authority import RevocationReason, parse_serial
from pki.csr import verify_csr
from pki.errors import IssuanceRefusedError
from pki.keys import KeyPolicy
from pki.local import LocalCA, LocalCAConfig
from pki.profiles import ProfileName
from tests.pki.conftest import DEVICE
from tests.support.ca import PASSPHRASE, ProductCA, make_csr


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def on_disk(fx: ProductCA) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl((fx.dir / "crl.der").read_bytes())


def issue(fx: ProductCA) -> int:
    return fx.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=fx.now
    ).serial


def test_every_revocation_publishes_a_new_signed_crl(local_ca: ProductCA) -> None:
    serial = issue(local_ca)
    before = crl_number(on_disk(local_ca))
    local_ca.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    crl = on_disk(local_ca)
    assert crl_number(crl) == before + 1
    assert crl.is_signature_valid(local_ca.ca.issuing_certificate.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None and crl.next_update_utc > local_ca.now
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert (local_ca.dir / "crl.pem").read_bytes() == local_ca.ca.current_crl(now=local_ca.now).pem


def test_unspecified_reason_is_omitted_as_rfc5280_says(local_ca: ProductCA) -> None:
    serial = issue(local_ca)
    local_ca.ca.revoke(serial, RevocationReason.UNSPECIFIED, now=local_ca.now)
    entry = on_disk(local_ca).get_revoked_certificate_by_serial_number(serial)
    assert entry is not None and len(entry.extensions) == 0


def test_revoking_an_unknown_serial_is_refused_and_changes_nothing(local_ca: ProductCA) -> None:
    before = on_disk(local_ca)
    with pytest.raises(IssuanceRefusedError, match="abcdef"):
        local_ca.ca.revoke(0xABCDEF, RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    assert crl_number(on_disk(local_ca)) == crl_number(before)
    assert local_ca.ca.ledger.counts(local_ca.now).revoked == 0


def test_second_revocation_keeps_the_first_time_and_reason(local_ca: ProductCA) -> None:
    serial = issue(local_ca)
    first = local_ca.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    again = local_ca.ca.revoke(
        serial, RevocationReason.SUPERSEDED, now=local_ca.now + timedelta(hours=1)
    )
    assert again.already_revoked and again.reason is RevocationReason.KEY_COMPROMISE
    assert again.revoked_at == first.revoked_at


def test_an_expired_certificate_can_still_be_revoked(local_ca: ProductCA) -> None:
    # A leaked model-signing key must be blockable after its certificate expired (Vault #19452).
    serial = issue(local_ca)
    later = local_ca.now + timedelta(days=120)
    record = local_ca.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=later)
    assert not record.already_revoked
    assert on_disk(local_ca).get_revoked_certificate_by_serial_number(serial) is not None


def test_current_crl_is_regenerated_when_due_and_reused_when_fresh(local_ca: ProductCA) -> None:
    fresh = local_ca.ca.current_crl(now=local_ca.now)
    assert local_ca.ca.current_crl(now=local_ca.now + timedelta(hours=1)) is fresh
    due = local_ca.ca.current_crl(
        now=local_ca.now + timedelta(hours=13)
    )  # inside the refresh margin
    assert crl_number(due.crl) == crl_number(fresh.crl) + 1


def test_a_new_process_reuses_the_published_crl_instead_of_bumping_it(local_ca: ProductCA) -> None:
    number = crl_number(on_disk(local_ca))
    other = LocalCA.open(local_ca.dir, passphrase=PASSPHRASE)
    assert crl_number(other.current_crl(now=local_ca.now).crl) == number
    other.close()


def test_crl_lifetime_is_configurable(local_ca: ProductCA) -> None:
    ca = LocalCA.open(
        local_ca.dir,
        passphrase=PASSPHRASE,
        config=LocalCAConfig(
            crl_lifetime=timedelta(hours=6), crl_refresh_margin=timedelta(hours=2)
        ),
    )
    bundle = ca.publish_crl(now=local_ca.now)
    assert bundle.next_update - local_ca.now == timedelta(hours=6) - timedelta(
        microseconds=local_ca.now.microsecond
    )
    ca.close()


def test_a_fresh_crl_is_not_republished_and_one_past_half_its_lifetime_is(
    local_ca: ProductCA,
) -> None:
    """The background republishers' step (ADR 0016): by default a CRL is due once less than
    half its lifetime (1 day) is left, so an hourly check never lets it reach nextUpdate."""
    ca = local_ca.ca
    published = ca.publish_crl(now=local_ca.now)
    assert ca.republish_crl_if_due(now=local_ca.now + timedelta(hours=11)) is None
    assert crl_number(on_disk(local_ca)) == crl_number(published.crl)
    later = local_ca.now + timedelta(hours=12, minutes=1)
    fresh = ca.republish_crl_if_due(now=later)
    assert fresh is not None and crl_number(fresh.crl) == crl_number(published.crl) + 1
    assert fresh.next_update - later > timedelta(hours=23)
    assert crl_number(on_disk(local_ca)) == crl_number(fresh.crl)


def test_a_near_expiry_crl_published_by_another_process_is_republished(
    local_ca: ProductCA,
) -> None:
    other = LocalCA.open(local_ca.dir, passphrase=PASSPHRASE)
    other.current_crl(now=local_ca.now)
    stale_soon = local_ca.ca.publish_crl(now=local_ca.now - timedelta(hours=23))
    fresh = other.republish_crl_if_due(now=local_ca.now)
    other.close()
    assert fresh is not None and crl_number(fresh.crl) == crl_number(stale_soon.crl) + 1


def test_crl_with_20000_entries_lists_every_serial(local_ca: ProductCA) -> None:
    rows = [(0x10_0000 + i, DEVICE.path, local_ca.now) for i in range(20_000)]
    local_ca.ca.ledger.bulk_record_revoked(rows)
    crl = local_ca.ca.publish_crl(now=local_ca.now).crl
    assert len(crl) == 20_000
    for serial in (0x10_0000, 0x10_0000 + 12_345, 0x10_0000 + 19_999):
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None


@pytest.mark.parametrize("text", ["1a:2b:3c", "0x1a2b3c", "1A2B3C", " 1a2b3c\n", "1a-2b-3c"])
def test_serials_are_accepted_in_openssl_vault_and_hex_forms(text: str) -> None:
    assert parse_serial(text) == 0x1A2B3C


@pytest.mark.parametrize("text", ["", "0", "xyz", "-1"])
def test_malformed_serials_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="serial"):
        parse_serial(text)


def test_a_revocation_by_another_process_is_seen_by_current_crl_at_once(
    local_ca: ProductCA,
) -> None:
    # The provisioning service holds a LocalCA open; the operator revokes with `idmz ca revoke`.
    service = LocalCA.open(local_ca.dir, passphrase=PASSPHRASE)
    service.current_crl(now=local_ca.now)
    serial = issue(local_ca)
    local_ca.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    crl = service.current_crl(now=local_ca.now).crl
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    service.close()


@given(st.integers(min_value=1, max_value=2**159))
def test_every_serial_round_trips_through_hex_and_vault_forms(serial: int) -> None:
    from pki.authority import format_serial
    from pki.vault import vault_serial

    assert parse_serial(format_serial(serial)) == serial
    assert parse_serial(vault_serial(serial)) == serial


def test_crl_pem_is_the_standard_encoding_of_the_der(local_ca: ProductCA) -> None:
    from cryptography.hazmat.primitives import serialization

    bundle = local_ca.ca.publish_crl(now=local_ca.now)
    assert bundle.pem == bundle.crl.public_bytes(serialization.Encoding.PEM)
    assert x509.load_pem_x509_crl(bundle.pem).public_bytes(serialization.Encoding.DER) == bundle.der


def test_ledger_is_owner_only(local_ca: ProductCA) -> None:
    assert (local_ca.dir / "ledger.sqlite").stat().st_mode & 0o077 == 0
