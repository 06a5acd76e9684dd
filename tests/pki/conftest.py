"""Test PKI generated per test: a local CA, CSRs (good and deliberately bad), broken leaves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki.identity import DeviceIdentity
from pki.keys import PrivateKey
from pki.local import LocalCA, init_local_ca
from tests.pki.cli import SECRET, idmz
from tests.support.openbao import openbao  # noqa: F401 - the session fixture, for every pki test

PASSPHRASE = b"test-passphrase-9f3a1c"  # distinctive, so tests can prove it never leaks
DEVICE = DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-07")
OTHER_DEVICE = DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-08")


def make_csr(
    key: PrivateKey | None = None,
    *,
    sans: list[x509.GeneralName] | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    cn: str = "whatever-the-device-says",
    hash_alg: hashes.HashAlgorithm | None = None,
    der: bool = False,
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    csr = builder.sign(key, hash_alg or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class CAFixture:
    dir: Path
    ca: LocalCA
    now: datetime

    def ledger_rows(self) -> int:
        return self.ca.ledger.counts(self.now).issued


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def local_ca(tmp_path: Path, now: datetime) -> Iterator[CAFixture]:
    ca_dir = tmp_path / "ca"
    init_local_ca(ca_dir, passphrase=PASSPHRASE, organization="acme", now=now)
    ca = LocalCA.open(ca_dir, passphrase=PASSPHRASE)
    try:
        yield CAFixture(ca_dir, ca, now)
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
