"""The Vault backend through real hvac: against the Vault-API test server by default, against a
real Vault when VAULT_ADDR is set (docs/pki.md, "Testing against a real Vault").

Real Vault needs: VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID, VAULT_PKI_MOUNT (default pki),
VAULT_PKI_ROLE (default idmz-device; created as docs/pki.md says) and optionally VAULT_CACERT
and VAULT_PKI_SERVER_ROLE. Tests that need to make the upstream misbehave run only against the
test server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.authority import RevocationReason
from pki.csr import verify_csr
from pki.errors import (
    ConfigError,
    CSRError,
    IssuanceRefusedError,
    KeyStoreError,
    RevokedCertificateError,
)
from pki.keys import KeyPolicy
from pki.profiles import ProfileName, ServerName
from pki.vault import VaultCA, VaultConfig, vault_serial
from pki.verifier import ChainVerifier
from tests.pki.conftest import DEVICE, make_csr
from tests.support.net import free_port
from tests.support.vault_server import FakeVault, Role, VaultTestServer, idmz_roles

pytestmark = pytest.mark.vault
REAL_VAULT = bool(os.environ.get("VAULT_ADDR"))
fake_only = pytest.mark.skipif(REAL_VAULT, reason="needs the test server to misbehave on purpose")


@dataclass
class Target:
    config: VaultConfig
    fake: FakeVault | None  # None against a real Vault

    def connect(self, **changes: object) -> VaultCA:
        from dataclasses import replace

        return VaultCA.connect(replace(self.config, **changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    if REAL_VAULT:
        env = os.environ
        server_role = env.get("VAULT_PKI_SERVER_ROLE")
        yield Target(
            VaultConfig(
                url=env["VAULT_ADDR"],
                role_id=env["VAULT_ROLE_ID"],
                secret_id=env["VAULT_SECRET_ID"],
                mount=env.get("VAULT_PKI_MOUNT", "pki"),
                role=env.get("VAULT_PKI_ROLE", "idmz-device"),
                roles={ProfileName.SERVER: server_role} if server_role else {},
                namespace=env.get("VAULT_NAMESPACE") or None,
                ca_bundle=env.get("VAULT_CACERT") or None,
            ),
            None,
        )
        return
    fake = FakeVault()
    idmz_roles(fake)
    with VaultTestServer(fake) as server:
        config = VaultConfig(
            url=server.url,
            role_id=fake.role_id,
            secret_id=fake.secret_id,
            roles={ProfileName.SERVER: "idmz-server"},
        )
        yield Target(config, fake)


@pytest.fixture
def ca(target: Target) -> Iterator[VaultCA]:
    vault = VaultCA.connect(target.config)
    yield vault
    vault.close()


def now() -> datetime:
    return datetime.now(UTC)


def signs(target: Target) -> int:
    assert target.fake is not None
    return sum(1 for method, path in target.fake.requests if "/sign/" in path and method == "POST")


def test_device_certificate_from_vault_carries_exactly_the_requested_names(ca: VaultCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue(
        verify_csr(make_csr(key, cn="device-says-admin"), KeyPolicy()),
        DEVICE,
        profile=ProfileName.DEVICE,
        now=now(),
    )
    cert = issued.certificate
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE.path
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(DEVICE.spiffe_id)]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.chain == ca.ca_chain()
    verifier = ChainVerifier(roots=[issued.chain[-1]], crls=[ca.current_crl(now=now()).crl])
    assert verifier.verify_device(cert, list(issued.chain[:-1]), now=now()).identity == DEVICE


def test_revocation_in_vault_reaches_its_crl_and_the_verifier(ca: VaultCA) -> None:
    issued = ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
    )
    record = ca.revoke(issued.serial, RevocationReason.KEY_COMPROMISE, now=now())
    assert record.serial == issued.serial and not record.already_revoked
    crl = ca.current_crl(now=now()).crl
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None
    verifier = ChainVerifier(roots=[issued.chain[-1]], crls=[crl])
    with pytest.raises(RevokedCertificateError):
        verifier.verify_device(issued.certificate, list(issued.chain[:-1]), now=now())


def test_revoking_twice_reports_the_first_revocation(ca: VaultCA) -> None:
    issued = ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
    )
    first = ca.revoke(issued.serial, RevocationReason.SUPERSEDED, now=now())
    second = ca.revoke(issued.serial, RevocationReason.SUPERSEDED, now=now())
    assert second.already_revoked and second.revoked_at == first.revoked_at


def test_unknown_serial_revocation_is_refused(ca: VaultCA) -> None:
    with pytest.raises(IssuanceRefusedError, match="Vault refused revoke"):
        ca.revoke(0x1234567890ABCDEF, RevocationReason.UNSPECIFIED, now=now())


@pytest.mark.parametrize(
    ("csr", "found"),
    [
        pytest.param(
            lambda: make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505
            "1024",
            id="rsa1024",
        ),
        pytest.param(
            lambda: make_csr(sans=[x509.UniformResourceIdentifier("spiffe://acme/x/y/z/w/other")]),
            "other",
            id="other-device",
        ),
        pytest.param(lambda: b"not a csr", "PKCS#10", id="malformed"),
    ],
)
def test_local_csr_checks_run_before_vault_is_asked(
    ca: VaultCA, target: Target, csr, found: str
) -> None:  # type: ignore[no-untyped-def]
    before = signs(target) if target.fake else 0
    with pytest.raises(CSRError, match=found):
        ca.issue(verify_csr(csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now())
    if target.fake:
        assert signs(target) == before, "Vault must not see a CSR that fails local checks"


def test_validity_beyond_the_profile_is_refused_locally(ca: VaultCA) -> None:
    with pytest.raises(IssuanceRefusedError, match="up to 397 days"):
        ca.issue(
            verify_csr(make_csr(), KeyPolicy()),
            DEVICE,
            profile=ProfileName.DEVICE,
            now=now(),
            validity=timedelta(days=400),
        )


def test_wrong_approle_secret_is_an_upstream_error_that_does_not_echo_it(target: Target) -> None:
    with pytest.raises(KeyStoreError) as info:
        target.connect(secret_id="wrong-secret-4c1d")
    assert "wrong-secret-4c1d" not in str(info.value)
    assert target.config.secret_id not in repr(target.config)


@fake_only
def test_expired_token_is_renewed_by_logging_in_again(ca: VaultCA, target: Target) -> None:
    assert target.fake is not None
    target.fake.tokens.clear()  # every token revoked, as when its TTL ran out
    ca.issue(verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now())


@fake_only
@pytest.mark.parametrize(
    ("role", "complaint"),
    [
        pytest.param(
            Role(
                allowed_uri_sans=["spiffe://*"],
                allow_any_name=True,
                server_flag=False,
                use_csr_sans=False,
            ),
            "CN expected",
            id="csr-common-name",
        ),
        pytest.param(
            Role(
                allowed_uri_sans=["spiffe://*"],
                allow_any_name=True,
                use_csr_common_name=False,
                use_csr_sans=False,
            ),
            "extendedKeyUsage",
            id="adds-server-auth",
        ),
        pytest.param(
            Role(
                allowed_uri_sans=["spiffe://*"],
                allow_any_name=True,
                use_csr_common_name=False,
                use_csr_sans=False,
                server_flag=False,
                max_ttl_s=7 * 86400,
            ),
            "max_ttl",
            id="silent-ttl-cap",
        ),
    ],
)
def test_a_certificate_vault_got_wrong_is_revoked_and_refused(
    target: Target, role: Role, complaint: str
) -> None:
    assert target.fake is not None
    target.fake.roles["sloppy"] = role
    vault = target.connect(role="sloppy")
    with pytest.raises(IssuanceRefusedError, match=complaint) as info:
        vault.issue(
            verify_csr(make_csr(cn="device-says-admin"), KeyPolicy()),
            DEVICE,
            profile=ProfileName.DEVICE,
            now=now(),
        )
    serial = int(str(info.value).split("certificate ")[1].split(" ")[0], 16)
    assert target.fake.issued[serial].revoked_at is not None, "the stray certificate is revoked"
    vault.close()


@fake_only
def test_role_that_forbids_the_uri_is_reported_with_vaults_reason(target: Target) -> None:
    assert target.fake is not None
    target.fake.roles["other-site"] = Role(
        allowed_uri_sans=["spiffe://acme/plant2/*"],
        allow_any_name=True,
        use_csr_common_name=False,
        use_csr_sans=False,
        server_flag=False,
    )
    vault = target.connect(role="other-site")
    with pytest.raises(IssuanceRefusedError, match="not allowed by this role"):
        vault.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
        )
    vault.close()


@pytest.mark.skipif(
    REAL_VAULT and not os.environ.get("VAULT_PKI_SERVER_ROLE"), reason="no server role"
)
def test_server_certificate_from_vault_has_dns_and_ip_sans(ca: VaultCA) -> None:
    names = ServerName.parse("relay.plant1.example,10.0.0.5")
    cert = ca.issue(
        verify_csr(make_csr(), KeyPolicy()), names, profile=ProfileName.SERVER, now=now()
    ).certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["relay.plant1.example"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


def test_unreachable_vault_is_an_upstream_error(target: Target) -> None:
    with pytest.raises(KeyStoreError, match="cannot reach Vault"):
        target.connect(url=f"http://127.0.0.1:{free_port()}", timeout_s=2.0)


def test_plain_http_to_a_remote_vault_is_refused() -> None:
    with pytest.raises(ConfigError, match="https"):
        VaultConfig(url="http://vault.plant1.example:8200", role_id="r", secret_id="s")


def test_missing_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="role_id, secret_id"):
        VaultConfig.from_mapping({"url": "https://vault.example"})


def test_serials_use_vaults_colon_form() -> None:
    assert vault_serial(0x1A2B03) == "1a:2b:03"
    assert vault_serial(0x0F) == "0f"


@fake_only
def test_a_rotated_vault_issuer_is_picked_up_not_mistaken_for_a_forgery(target: Target) -> None:
    assert target.fake is not None
    fake = FakeVault()
    idmz_roles(fake)
    with VaultTestServer(fake) as server:
        from dataclasses import replace

        vault = VaultCA.connect(
            replace(target.config, url=server.url, role_id=fake.role_id, secret_id=fake.secret_id)
        )
        vault.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
        )  # caches the chain
        fake.rotate_issuer()
        issued = vault.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
        )
        assert issued.chain[0].subject == fake.issuing.subject
        assert fake.issued[issued.serial].revoked_at is None
        vault.close()
