"""Fixtures for the pki tests: a fresh test CA per test (`tests.support.ca`), a CLI home."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pki.identity import DeviceIdentity
from tests.pki.cli import SECRET, idmz
from tests.support.ca import ProductCA, make_ca
from tests.support.openbao import openbao  # noqa: F401 - the session fixture, for every pki test

DEVICE = DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-07")
OTHER_DEVICE = DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-08")


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def local_ca(tmp_path: Path, now: datetime) -> Iterator[ProductCA]:
    ca = make_ca(tmp_path / "ca", now=now)
    try:
        yield ca
    finally:
        ca.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("IDMZ_HOME", "IDMZ_CA_PASSPHRASE", "IDMZ_CA_PASSPHRASE_FILE", "VAULT_ADDR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


@pytest.fixture
def ready(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", SECRET)
    assert idmz(capsys, home, "ca", "init", "--organization", "acme")[0] == 0
    return home
