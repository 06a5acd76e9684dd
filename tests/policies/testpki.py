"""A test PKI from the product CA (pki.local): root + issuing CA, a broker server certificate
for 127.0.0.1/localhost, client certificates (devices, consumers, the relay) and the CRL.

Deliberately broken certificates (too long-lived, expired CRL) are built with `cryptography`
directly in the check tests, because the product CA rightly refuses to issue them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pki.csr import verify_csr
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.keys import KeyPolicy, generate_private_key, private_key_pem
from pki.local import LocalCA, init_local_ca
from pki.profiles import ProfileName, ServerName

PASSPHRASE = b"test-ca-passphrase"


@dataclass(frozen=True)
class ClientCredentials:
    name: str
    cert: Path
    key: Path
    serial: int


@dataclass
class PKIFixture:
    dir: Path
    ca: LocalCA
    now: datetime
    cafile: Path = field(init=False)
    crlfile: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cafile = self.dir / "ca" / "chain.pem"
        self.crlfile = self.dir / "ca" / "crl.pem"

    def _issue(self, name: str, subject, profile: ProfileName, cn: str) -> ClientCredentials:
        key = generate_private_key("ec-p256")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        )
        issued = self.ca.issue(
            verify_csr(csr.public_bytes(serialization.Encoding.PEM), KeyPolicy()),
            subject,
            profile=profile,
            now=self.now,
        )
        out = self.dir / "clients" / name.replace("/", "_")
        out.mkdir(parents=True, exist_ok=True)
        (out / "cert.pem").write_bytes(issued.leaf_pem())
        (out / "key.pem").write_bytes(private_key_pem(key, None))
        (out / "key.pem").chmod(0o600)
        return ClientCredentials(name, out / "cert.pem", out / "key.pem", issued.serial)

    def device(self, path: str) -> ClientCredentials:
        return self._issue(path, DeviceIdentity.parse(path), ProfileName.DEVICE, path)

    def consumer(self, path: str) -> ClientCredentials:
        return self._issue(path, ConsumerIdentity.parse(path), ProfileName.CONSUMER, path)

    def server(self, name: str = "broker") -> ClientCredentials:
        names = ServerName(("localhost",), (ipaddress.ip_address("127.0.0.1"),))
        return self._issue(f"server-{name}", names, ProfileName.SERVER, "localhost")

    def revoke(self, creds: ClientCredentials) -> None:
        """Revoke ``creds`` and publish the CRL (atomically replacing ``crl.pem``)."""
        from pki.authority import RevocationReason

        now = datetime.now(UTC)
        self.ca.revoke(creds.serial, RevocationReason.KEY_COMPROMISE, now=now)
        self.ca.publish_crl(now=now)


def make_test_pki(directory: Path) -> PKIFixture:
    now = datetime.now(UTC)
    init_local_ca(
        directory / "ca", passphrase=PASSPHRASE, organization="acme", now=now - timedelta(minutes=5)
    )
    ca = LocalCA.open(directory / "ca", passphrase=PASSPHRASE)
    return PKIFixture(directory, ca, now)
