"""A gateway's credential directory (docs/contracts.md section 2), written atomically.

``key.pem`` (0600, PKCS#8, generated here and never sent), ``cert.pem`` (leaf), ``chain.pem``
(issuing CA), ``ca.pem`` (the pinned root), ``identity`` (one line). Each file is written to a
temporary name, fsynced and renamed; ``cert.pem`` is renamed last, so a reader that watches its
mtime sees a matching key. ``server`` (one line, the enrollment URL) lets ``idmz renew`` find
the service without flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bedrock.files import write_atomic
from pki.authority import fingerprint_sha256
from pki.keys import PrivateKey, load_private_key, private_key_pem
from provisioning.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CredentialDir:
    root: Path

    @property
    def key(self) -> Path:
        return self.root / "key.pem"

    @property
    def pending_key(self) -> Path:
        return self.root / "pending.key.pem"

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def chain(self) -> Path:
        return self.root / "chain.pem"

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def identity(self) -> Path:
        return self.root / "identity"

    @property
    def server(self) -> Path:
        return self.root / "server"

    def ensure(self) -> CredentialDir:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def write(
        self,
        *,
        key: PrivateKey,
        cert_pem: bytes,
        chain_pem: bytes,
        root_pem: bytes,
        identity: str,
        server: str | None = None,
    ) -> None:
        """Install a credential set; the key must match the certificate."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.public_key() != key.public_key():
            raise ConfigError("the certificate does not match the private key generated for it")
        self.ensure()
        write_atomic(self.ca, root_pem)
        write_atomic(self.identity, identity.encode() + b"\n")
        if server is not None:
            write_atomic(self.server, server.encode() + b"\n")
        write_atomic(self.chain, chain_pem)
        write_atomic(self.key, private_key_pem(key, None), 0o600)
        write_atomic(self.cert, cert_pem)

    def load_certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(f"{self.cert} does not exist; enroll first (`idmz enroll`)") from exc
        except ValueError as exc:
            raise ConfigError(f"{self.cert} is not a PEM certificate") from exc

    def load_key(self) -> PrivateKey:
        try:
            return load_private_key(self.key, None)
        except Exception as exc:
            raise ConfigError(f"cannot load the device key {self.key}") from exc

    def root_fingerprint(self) -> str:
        return fingerprint_sha256(x509.load_pem_x509_certificate(self.ca.read_bytes()))

    def server_url(self) -> str | None:
        return self.server.read_text().strip() if self.server.exists() else None


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
