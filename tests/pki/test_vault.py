"""The Vault backend through real hvac: against a real OpenBao dev server started for the test
session (`tests.support.openbao`), or against any real Vault when VAULT_ADDR is set (docs/pki.md,
"Testing against a real Vault").

Real Vault needs: VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID, VAULT_PKI_MOUNT (default pki),
VAULT_PKI_ROLE (default idmz-device; created as docs/pki.md says) and optionally VAULT_CACERT
and VAULT_PKI_SERVER_ROLE. Tests that configure the server (sloppy roles, revoked tokens, a rotated
secret_id) need the OpenBao server's root token and are skipped against an outside Vault; an
issuer rotated between two requests runs on its own OpenBao. No Vault-API test double remains:
every fault these tests need, the real server produces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from tests.pki.conftest import DEVICE
from tests.support.ca import make_csr
from tests.support.net import free_port
from tests.support.openbao import MOUNT, OpenBao, bao_binary, start_openbao

pytestmark = pytest.mark.vault
REAL_VAULT = bool(os.environ.get("VAULT_ADDR"))
bao_only = pytest.mark.skipif(
    REAL_VAULT, reason="configures the server with its root token (the session's OpenBao only)"
)


@dataclass
class Target:
    config: VaultConfig
    bao: OpenBao | None = None  # the session's OpenBao server (None against an outside Vault)

    def connect(self, **changes: object) -> VaultCA:
        from dataclasses import replace

        return VaultCA.connect(replace(self.config, **changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
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
        )
        return
    bao: OpenBao = request.getfixturevalue("openbao")
    yield Target(bao.config(), bao=bao)


@pytest.fixture
def ca(target: Target, tmp_path: Path) -> Iterator[VaultCA]:
    # The ledger keeps what Vault's no_store roles do not: the certificate, to revoke it.
    vault = VaultCA.connect(target.config, ca_dir=tmp_path / "ca")
    yield vault
    vault.close()


def now() -> datetime:
    return datetime.now(UTC)


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
    with pytest.raises(CSRError, match=found):
        ca.issue(verify_csr(csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now())


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


@bao_only
def test_expired_token_is_renewed_by_logging_in_again(ca: VaultCA, target: Target) -> None:
    assert target.bao is not None
    target.bao.revoke_approle_tokens()  # every token revoked, as when its TTL ran out
    ca.issue(verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now())
    assert ca.logins == 2


_SLOPPY_BASE = {
    "allow_any_name": True,
    "enforce_hostnames": False,
    "allowed_uri_sans": ["spiffe://*"],
    "key_type": "any",
    "key_usage": ["DigitalSignature"],
    "no_store": True,
    "max_ttl": "9528h",
    "basic_constraints_valid_for_non_ca": True,
}


@bao_only
@pytest.mark.parametrize(
    ("role", "complaint"),
    [
        pytest.param(
            {"use_csr_common_name": True, "use_csr_sans": False, "server_flag": False},
            "CN expected",
            id="csr-common-name",
        ),
        pytest.param(
            {"use_csr_common_name": False, "use_csr_sans": False, "server_flag": True},
            "extendedKeyUsage",
            id="adds-server-auth",
        ),
        pytest.param(
            {
                "use_csr_common_name": False,
                "use_csr_sans": False,
                "server_flag": False,
                "max_ttl": "168h",
            },
            "max_ttl",
            id="silent-ttl-cap",
        ),
    ],
)
def test_a_certificate_vault_got_wrong_is_revoked_and_refused(
    target: Target, role: dict[str, object], complaint: str, request: pytest.FixtureRequest
) -> None:
    assert target.bao is not None
    name = f"idmz-sloppy-{request.node.callspec.id}"
    target.bao.api("POST", f"{MOUNT}/roles/{name}", **{**_SLOPPY_BASE, **role})
    vault = target.connect(role=name)
    with pytest.raises(IssuanceRefusedError, match=complaint) as info:
        vault.issue(
            verify_csr(make_csr(cn="device-says-admin"), KeyPolicy()),
            DEVICE,
            profile=ProfileName.DEVICE,
            now=now(),
        )
    serial = int(str(info.value).split("certificate ")[1].split(" ")[0], 16)
    crl = x509.load_pem_x509_crl(target.bao.crl_pem())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None, (
        "the stray certificate is revoked in Vault's CRL"
    )
    vault.close()


@bao_only
def test_role_that_forbids_the_uri_is_reported_with_vaults_reason(target: Target) -> None:
    assert target.bao is not None
    target.bao.api(
        "POST",
        f"{MOUNT}/roles/idmz-other-site",
        **{**_SLOPPY_BASE, "allowed_uri_sans": ["spiffe://acme/plant2/*"]},
        use_csr_common_name=False,
        use_csr_sans=False,
        server_flag=False,
    )
    vault = target.connect(role="idmz-other-site")
    with pytest.raises(IssuanceRefusedError, match="Vault refused sign"):
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


def test_a_rotated_vault_issuer_is_picked_up_not_mistaken_for_a_forgery(tmp_path: Path) -> None:
    """The mount's issuer is rotated between two requests of one client (its own OpenBao here,
    so the session's server keeps its issuer): the new chain is read, nothing is revoked."""
    binary = bao_binary()
    assert binary is not None
    bao = start_openbao(tmp_path / "openbao", binary)
    try:
        vault = VaultCA.connect(bao.config(), ca_dir=tmp_path / "ca")
        first = vault.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
        )  # caches the chain
        bao.rotate_issuer("idmz test issuing CA 2 (OpenBao)")
        issued = vault.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
        )
        assert issued.chain[0].subject != first.chain[0].subject
        assert issued.chain[0].subject.rfc4514_string() == "CN=idmz test issuing CA 2 (OpenBao)"
        crl = x509.load_pem_x509_crl(bao.crl_pem())
        assert crl.get_revoked_certificate_by_serial_number(issued.serial) is None
        vault.close()
    finally:
        bao.stop()


# -- issue 13: the Vault backend for real (OpenBao) ------------------------------------------


def test_revoked_no_store_certificate_is_in_vaults_crl_for_openssl(
    target: Target, tmp_path: Path
) -> None:
    """The roles use no_store: idmz keeps the certificate and revokes with it; the republished
    crl.pem is Vault's CRL, and openssl (an independent peer) refuses the certificate."""
    import subprocess

    vault = VaultCA.connect(target.config, ca_dir=tmp_path / "ca")
    issued = vault.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
    )
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(issued.leaf_pem())
    paths = vault.paths

    def openssl_verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "openssl", "verify", "-crl_check", "-CAfile", str(paths.root_cert),
                "-untrusted", str(paths.issuing_cert), "-CRLfile", str(paths.crl_pem), str(leaf),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert openssl_verify().returncode == 0, openssl_verify().stdout
    vault.revoke(issued.serial, RevocationReason.KEY_COMPROMISE, now=now())
    listed = subprocess.run(
        ["openssl", "crl", "-in", str(paths.crl_pem), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert format(issued.serial, "X").rjust(2, "0") in listed.replace(":", "")
    refused = openssl_verify()
    assert refused.returncode != 0 and "revoked" in (refused.stdout + refused.stderr)
    entry = vault.ledger.get(issued.serial) if vault.ledger else None
    assert entry is not None and entry.revoked_at is not None
    vault.close()


def test_a_crl_older_than_the_published_one_is_refused(target: Target, tmp_path: Path) -> None:
    from pki.vault_mirror import VaultMirror, crl_number

    vault = VaultCA.connect(target.config, ca_dir=tmp_path / "ca")
    old = vault.current_crl(now=now())
    issued = vault.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now()
    )
    vault.revoke(issued.serial, RevocationReason.SUPERSEDED, now=now())
    published = vault.paths.crl_der.read_bytes()
    assert crl_number(x509.load_der_x509_crl(published)) > crl_number(old.crl)
    with pytest.raises(KeyStoreError, match="refusing to roll the CRL back"):
        VaultMirror(vault.paths).publish_crl(old)
    assert vault.paths.crl_der.read_bytes() == published
    vault.close()


def test_the_approle_token_is_renewed_before_it_expires(target: Target) -> None:
    clock = [0.0]
    vault = VaultCA.connect(target.config)
    session = vault._session
    session._monotonic = lambda: clock[0]
    session._token = type(session._token)(obtained_at=0.0, lease_s=1200.0, renewable=True)
    clock[0] = 1200 * 0.7  # less than a third of the lease left
    vault.issue(verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now())
    assert (vault.renewals, vault.logins) == (1, 1), "renewed, not logged in again"
    vault.close()


@bao_only
def test_a_rotated_approle_secret_is_read_again_at_the_next_login(
    target: Target, tmp_path: Path
) -> None:
    from dataclasses import replace

    assert target.bao is not None
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(target.bao.new_secret_id())
    vault = VaultCA.connect(
        replace(target.config, secret_id_reader=lambda: secret_file.read_text().strip())
    )
    old = secret_file.read_text()
    secret_file.write_text(target.bao.new_secret_id())  # the operator rotates the secret_id
    target.bao.destroy_secret_id(old)
    target.bao.revoke_approle_tokens()  # and the current token expires
    vault.issue(verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now())
    assert vault.logins == 2
    vault.close()


def test_a_crl_close_to_its_next_update_is_rebuilt_and_republished(
    target: Target, tmp_path: Path
) -> None:
    """Before nextUpdate, idmz asks Vault to rebuild the CRL (crl/rotate) and republishes it."""
    from dataclasses import replace

    from pki.vault_mirror import crl_number

    vault = VaultCA.connect(target.config, ca_dir=tmp_path / "ca")
    first = crl_number(x509.load_der_x509_crl(vault.paths.crl_der.read_bytes()))
    vault.close()
    # A margin longer than the CRL's lifetime: every read finds it "due".
    eager = VaultCA.connect(
        replace(target.config, crl_refresh_margin=timedelta(days=3650)), ca_dir=tmp_path / "ca"
    )
    bundle = eager.current_crl(now=now())
    published = x509.load_der_x509_crl(eager.paths.crl_der.read_bytes())
    assert crl_number(published) == crl_number(bundle.crl) > first
    eager.close()
