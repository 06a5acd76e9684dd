"""The gateway credential directory has one owner, `pki.credentials.CredentialDir`: what
enrollment writes is exactly what the uplink loads, and a directory someone tampered with
(another device's certificate, a key that does not belong, a loosened key mode) is refused
before any connection is made (docs/contracts.md section 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pki.authority import pem
from pki.credentials import CredentialDir
from pki.csr import verify_csr
from pki.errors import ConfigError
from pki.identity import DeviceIdentity
from pki.keys import KeyPolicy
from pki.profiles import ProfileName
from tests.pki.conftest import DEVICE, OTHER_DEVICE
from tests.support.ca import ProductCA, make_csr


def enroll(local_ca: ProductCA, out: Path, device: DeviceIdentity, *, named: str) -> CredentialDir:
    """What `idmz enroll` does on the gateway: a key made here, the CA's answer installed."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = local_ca.ca.issue(
        verify_csr(make_csr(key), KeyPolicy()), device, profile=ProfileName.DEVICE, now=local_ca.now
    )
    creds = CredentialDir(out)
    creds.write(
        key=key,
        cert_pem=issued.leaf_pem(),
        chain_pem=issued.chain_pem(),
        root_pem=pem(issued.chain[-1]),
        identity=named,
        server="https://provisioning.example:8443",
    )
    return creds


def test_what_enrollment_writes_is_what_the_uplink_loads(
    local_ca: ProductCA, tmp_path: Path
) -> None:
    creds = enroll(local_ca, tmp_path / "gw", DEVICE, named=DEVICE.path)
    loaded = creds.load()
    assert loaded.identity == DEVICE
    assert loaded.fingerprint == creds.fingerprint()
    assert {name for name, _, size in loaded.fingerprint if size > 0} == {
        p.name for p in creds.required
    }
    assert creds.server_url() == "https://provisioning.example:8443"
    assert os.stat(creds.key).st_mode & 0o777 == 0o600


def test_a_certificate_for_another_device_is_refused(local_ca: ProductCA, tmp_path: Path) -> None:
    creds = enroll(local_ca, tmp_path / "gw", OTHER_DEVICE, named=DEVICE.path)
    with pytest.raises(ConfigError, match="expected exactly"):
        creds.load()


def test_a_key_that_does_not_belong_to_the_certificate_is_refused_and_nothing_written(
    local_ca: ProductCA, tmp_path: Path
) -> None:
    issued = local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=local_ca.now
    )
    creds = CredentialDir(tmp_path / "gw")
    with pytest.raises(ConfigError, match="does not match"):
        creds.write(
            key=ec.generate_private_key(ec.SECP256R1()),
            cert_pem=issued.leaf_pem(),
            chain_pem=issued.chain_pem(),
            root_pem=pem(issued.chain[-1]),
            identity=DEVICE.path,
        )
    assert not creds.root.exists()


def test_a_private_key_readable_by_others_is_refused(local_ca: ProductCA, tmp_path: Path) -> None:
    creds = enroll(local_ca, tmp_path / "gw", DEVICE, named=DEVICE.path)
    os.chmod(creds.key, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        creds.load()


def test_a_missing_file_is_named(local_ca: ProductCA, tmp_path: Path) -> None:
    creds = enroll(local_ca, tmp_path / "gw", DEVICE, named=DEVICE.path)
    creds.chain.unlink()
    with pytest.raises(ConfigError, match=r"lacks chain\.pem"):
        creds.load()
