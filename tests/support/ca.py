"""The test CA: a real local CA made by the product's own code (`pki.local`), the one builder
every test uses (edge, pki, policies, relay, provisioning, demo, idmz).

`make_ca` makes and opens one (`init_ca` only makes it, for tests that open it themselves);
`ProductCA` issues through the product's issuance path from a CSR the test made, keeping the key
in memory (`Issued`), and writes what a client needs: a gateway's credential directory through
`pki.credentials.CredentialDir` (the contract's owner), or a certificate and key pair for
`mosquitto_pub`/`mosquitto_sub` (`ClientCredentials`, via `PKIFixture`).

Deliberately broken certificates (too long-lived, foreign extensions) are built with
`cryptography` directly in the tests that need them: the product CA rightly refuses to issue them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pki.authority import RevocationReason
from pki.ceremony import init_local_ca
from pki.credentials import CredentialDir
from pki.csr import verify_csr
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.keys import KeyPolicy, PrivateKey, generate_private_key, private_key_pem
from pki.local import LocalCA
from pki.profiles import ProfileName, ServerName, SignerName, Subject
from pki.vault import VaultCA

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Distinctive, so tests can prove it never leaks into logs, audit records or files.
PASSPHRASE = b"test-ca-passphrase-9f3a1c"
GATEWAY_ID = "acme/plant1/press/line1/cell2/gw-01"


def make_csr(
    key: PrivateKey | None = None,
    *,
    sans: Sequence[x509.GeneralName] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    cn: str | None = "whatever-the-device-says",
    hash_alg: hashes.HashAlgorithm | None = None,
    der: bool = False,
) -> bytes:
    """A CSR signed by ``key`` (a new P-256 key if none): subject CN ``cn`` (an empty subject
    when None), the given SANs and extensions; PEM unless ``der``."""
    key = key or generate_private_key("ec-p256")
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    csr = builder.sign(key, hash_alg or hashes.SHA256())  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM, as a client tool reads it."""
    return private_key_pem(key, None)


@dataclass(frozen=True)
class Issued:
    """A certificate the test CA issued, with the key the test generated for it."""

    key: PrivateKey
    cert_pem: bytes
    chain_pem: bytes  # issuing CA only
    serial: int

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


@dataclass(frozen=True)
class ClientCredentials:
    """A client certificate and key on disk, for `mosquitto_pub`/`mosquitto_sub`/paho."""

    name: str
    cert: Path
    key: Path
    serial: int


@dataclass
class ProductCA:
    """An open CA for tests (a local one from ``make_ca``; a `VaultCA` where the test runs
    against OpenBao). ``now`` is when the test made it: the instant tests that pin time issue
    at (the CA itself may be older, see ``make_ca``'s ``age``)."""

    ca: LocalCA | VaultCA
    dir: Path  # the CA directory (root.pem, chain.pem, crl.pem, ledger.sqlite, ...)
    now: datetime

    @property
    def root_pem(self) -> bytes:
        return self.ca.paths.root_cert.read_bytes()

    @property
    def root_certificate(self) -> x509.Certificate:
        return self.ca.ca_chain()[-1]

    @property
    def root_path(self) -> Path:
        return self.ca.paths.root_cert

    @property
    def chain_path(self) -> Path:
        return self.ca.paths.chain

    @property
    def crl_path(self) -> Path:
        return self.ca.paths.crl_pem

    def issue(
        self,
        subject: Subject,
        profile: ProfileName,
        *,
        now: datetime | None = None,
        validity: timedelta | None = None,
        cn: str | None = None,
    ) -> Issued:
        """Issue for a fresh P-256 key through the product's path (CSR, verification, plan)."""
        key = generate_private_key("ec-p256")
        issued = self.ca.issue(
            verify_csr(make_csr(key, cn=cn), KeyPolicy()),
            subject,
            profile=profile,
            now=now or datetime.now(UTC),
            validity=validity,
        )
        return Issued(key, issued.leaf_pem(), issued.chain_pem(), issued.serial)

    def signer(
        self,
        name: str = "reliability",
        *,
        now: datetime | None = None,
        validity: timedelta | None = None,
    ) -> Issued:
        subject = SignerName.parse(f"acme/signer/{name}")
        return self.issue(subject, ProfileName.MODEL_SIGNER, now=now, validity=validity)

    def server(self, names: str = "localhost,127.0.0.1", *, now: datetime | None = None) -> Issued:
        return self.issue(ServerName.parse(names), ProfileName.SERVER, now=now, cn="localhost")

    def device(self, path: str = GATEWAY_ID, *, now: datetime | None = None) -> Issued:
        return self.issue(DeviceIdentity.parse(path), ProfileName.DEVICE, now=now, cn=path)

    def consumer(self, path: str, *, now: datetime | None = None) -> Issued:
        return self.issue(ConsumerIdentity.parse(path), ProfileName.CONSUMER, now=now, cn=path)

    def write_credentials(self, directory: Path, issued: Issued, path: str = GATEWAY_ID) -> Path:
        """A gateway's credential directory (docs/contracts.md section 2), written by the
        contract's owner exactly as `idmz enroll`/`idmz renew` write it."""
        CredentialDir(directory).write(
            key=issued.key,
            cert_pem=issued.cert_pem,
            chain_pem=issued.chain_pem,
            root_pem=self.root_pem,
            identity=path,
        )
        return directory

    def revoke(self, serial: int, *, now: datetime | None = None) -> None:
        """Revoke ``serial`` (key compromise) and publish the CRL (``crl.pem`` replaced)."""
        now = now or datetime.now(UTC)
        self.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=now)
        self.publish_crl(now=now)

    def publish_crl(self, *, now: datetime | None = None) -> None:
        """A fresh CRL in ``crl.pem`` (Vault: its current one, republished)."""
        now = now or datetime.now(UTC)
        if isinstance(self.ca, LocalCA):
            self.ca.publish_crl(now=now)
        else:
            self.ca.current_crl(now=now)

    def ledger_rows(self) -> int:
        ledger = self.ca.ledger
        assert ledger is not None, "a CA without a directory keeps no ledger"
        return ledger.counts(self.now).issued

    def close(self) -> None:
        self.ca.close()


def init_ca(
    directory: Path,
    *,
    organization: str = "acme",
    age: timedelta = timedelta(0),
    now: datetime | None = None,
    key_type: str = "ec-p256",
    issuing_validity: timedelta = timedelta(days=1825),
) -> datetime:
    """Make a local CA in ``directory`` that was born ``age`` before ``now`` (default: the
    current time); an older CA lets tests hold certificates issued, and expired, in the past.
    Returns ``now``."""
    now = now or datetime.now(UTC)
    init_local_ca(
        directory,
        passphrase=PASSPHRASE,
        organization=organization,
        now=now - age,
        key_type=key_type,
        issuing_validity=issuing_validity,
    )
    return now


class CAOptions(TypedDict, total=False):
    """`init_ca`'s options, for `make_ca`."""

    organization: str
    age: timedelta
    now: datetime | None
    key_type: str
    issuing_validity: timedelta


def make_ca(directory: Path, **options: Unpack[CAOptions]) -> ProductCA:
    """`init_ca`, then open it with the product's `LocalCA`. Close it (``.close()``) after use."""
    now = init_ca(directory, **options)
    return ProductCA(LocalCA.open(directory, passphrase=PASSPHRASE), directory, now)


@dataclass
class PKIFixture:
    """A test CA under ``dir / "ca"`` and client certificates written under ``dir / "clients"``
    (for MQTT tests: brokers read ``cafile`` and ``crlfile``, clients their files). Everything
    is issued at ``product.now``."""

    dir: Path
    product: ProductCA
    cafile: Path = field(init=False)
    crlfile: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cafile = self.product.chain_path
        self.crlfile = self.product.crl_path

    @property
    def ca(self) -> LocalCA | VaultCA:
        return self.product.ca

    @property
    def now(self) -> datetime:
        return self.product.now

    def files(self, name: str, issued: Issued) -> ClientCredentials:
        out = self.dir / "clients" / name.replace("/", "_")
        out.mkdir(parents=True, exist_ok=True)
        (out / "cert.pem").write_bytes(issued.cert_pem)
        (out / "key.pem").write_bytes(issued.key_pem)
        (out / "key.pem").chmod(0o600)
        return ClientCredentials(name, out / "cert.pem", out / "key.pem", issued.serial)

    def device(self, path: str) -> ClientCredentials:
        return self.files(path, self.product.device(path, now=self.now))

    def consumer(self, path: str) -> ClientCredentials:
        return self.files(path, self.product.consumer(path, now=self.now))

    def server(self, name: str = "broker") -> ClientCredentials:
        return self.files(f"server-{name}", self.product.server(now=self.now))

    def revoke(self, creds: ClientCredentials) -> None:
        """Revoke ``creds`` and publish the CRL (atomically replacing ``crl.pem``)."""
        self.product.revoke(creds.serial)

    def close(self) -> None:
        self.product.close()


def make_test_pki(directory: Path, *, now: datetime | None = None) -> PKIFixture:
    """A `PKIFixture` whose CA was born five minutes before ``now``."""
    return PKIFixture(directory, make_ca(directory / "ca", age=timedelta(minutes=5), now=now))
