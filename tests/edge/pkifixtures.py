"""Test PKI for the edge tests, made by the product's own local CA (`pki.local`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.authority import pem
from pki.csr import verify_csr
from pki.identity import DeviceIdentity
from pki.keys import KeyPolicy
from pki.local import LocalCA, init_local_ca
from pki.profiles import ProfileName, ServerName, SignerName, Subject

GATEWAY_ID = "acme/plant1/press/line1/cell2/gw-01"
PASSPHRASE = b"edge-tests-passphrase"


@dataclass
class Issued:
    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes  # issuing CA only
    serial: int


@dataclass
class ProductCA:
    ca: LocalCA
    directory: Path

    @property
    def root_pem(self) -> bytes:
        return pem(self.ca.root_certificate)

    @property
    def root_path(self) -> Path:
        return self.ca.paths.root_cert

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
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        issued = self.ca.issue(
            verify_csr(csr.public_bytes(serialization.Encoding.PEM), KeyPolicy()),
            subject,
            profile=profile,
            now=now or datetime.now(UTC),
            validity=validity,
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Issued(key_pem, issued.leaf_pem(), issued.chain_pem(), issued.serial)

    def signer(self, name: str = "reliability", **kw: object) -> Issued:
        return self.issue(SignerName.parse(f"acme/signer/{name}"), ProfileName.MODEL_SIGNER, **kw)  # type: ignore[arg-type]

    def server(self) -> Issued:
        return self.issue(ServerName.parse("localhost,127.0.0.1"), ProfileName.SERVER)

    def device(self, path: str = GATEWAY_ID) -> Issued:
        return self.issue(DeviceIdentity.parse(path), ProfileName.DEVICE)

    def write_credentials(self, directory: Path, issued: Issued, path: str = GATEWAY_ID) -> Path:
        """The layout of docs/contracts.md section 2, written atomically like `idmz renew`."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "key.pem": (issued.key_pem, 0o600),
            "cert.pem": (issued.cert_pem, 0o644),
            "chain.pem": (issued.chain_pem, 0o644),
            "ca.pem": (self.root_pem, 0o644),
            "identity": ((path + "\n").encode(), 0o644),
        }
        for name, (data, mode) in files.items():
            tmp = directory / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, directory / name)
        return directory


def make_ca(directory: Path, organization: str = "acme") -> ProductCA:
    # Made a year ago, so tests can issue backdated (already expired) certificates from it.
    born = datetime.now(UTC) - timedelta(days=365)
    init_local_ca(directory, passphrase=PASSPHRASE, organization=organization, now=born)
    return ProductCA(LocalCA.open(directory, passphrase=PASSPHRASE), directory)
