"""The CA files other parts may read have one owner, `pki.publication` (docs/contracts.md
section 5). A reader of the published ledger (the relay) never creates, writes or migrates the
CA's private ledger, even if it tries, and sees what the CA writes while it holds the view."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pki.csr import verify_csr
from pki.errors import KeyStoreError
from pki.files import CAPaths
from pki.keys import KeyPolicy
from pki.ledger import Ledger
from pki.profiles import ProfileName
from pki.publication import CAPublication, LedgerView, read_ledger
from tests.pki.conftest import DEVICE, OTHER_DEVICE
from tests.support.ca import ProductCA, make_csr


def test_the_published_files_hold_no_secret(local_ca: ProductCA) -> None:
    paths, published = CAPaths(local_ca.dir), CAPublication(local_ca.dir)
    assert paths.root_key not in published.files and paths.issuing_key not in published.files
    assert all(p.parent == local_ca.dir for p in published.files)
    assert published.crl_pem == paths.crl_pem and published.ledger == paths.ledger


def test_a_reader_never_creates_a_missing_ledger(tmp_path: Path) -> None:
    missing = tmp_path / "ca" / "ledger.sqlite"
    missing.parent.mkdir()
    with pytest.raises(KeyStoreError, match="to read"):
        LedgerView(missing)
    assert os.listdir(missing.parent) == []


def test_a_reader_that_tries_to_write_the_ledger_is_refused(local_ca: ProductCA) -> None:
    local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=local_ca.now
    )
    before = local_ca.ledger_rows()
    sneaky = Ledger(CAPublication(local_ca.dir).ledger, read_only=True)
    try:
        with pytest.raises(KeyStoreError):
            sneaky.record_issued(
                serial=0xBAD,
                subject=str(OTHER_DEVICE),
                profile="device",
                fingerprint="00",
                not_after=local_ca.now + timedelta(days=1),
                now=local_ca.now,
            )
    finally:
        sneaky.close()
    assert local_ca.ledger_rows() == before


def test_a_reader_sees_what_the_ca_writes_while_it_holds_the_view(local_ca: ProductCA) -> None:
    with read_ledger(CAPublication(local_ca.dir).ledger) as view:
        assert view.entries() == []
        key = ec.generate_private_key(ec.SECP256R1())
        issued = local_ca.ca.issue(
            verify_csr(make_csr(key), KeyPolicy()),
            DEVICE,
            profile=ProfileName.DEVICE,
            now=local_ca.now,
        )
        rows = view.entries()
    assert [(r.subject, r.serial) for r in rows] == [(DEVICE.path, issued.serial)]
    assert not hasattr(view, "record_issued") and not hasattr(view, "mark_revoked")
