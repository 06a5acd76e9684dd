"""OPC UA application instance certificates (OPC 10000-6 section 6.2.2), made with `cryptography`.

An OPC UA client or server proves itself with a self-signed (or CA-issued) RSA certificate
whose URI SAN is its ApplicationUri. The gateway's OPC UA client certificate is separate from
its MQTT device certificate on purpose: PLC vendors' trust lists take a certificate per
application, and the IDMZ identity must not be handed to every PLC on the cell network.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> cert, key = make_application_certificate(d, "urn:acme:gw-01:opcua", "gw-01", server=False)
>>> cert.name, key.name
('cert.pem', 'key.pem')
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.errors import ConfigError


def make_application_certificate(
    directory: Path,
    application_uri: str,
    common_name: str,
    *,
    server: bool,
    hostnames: tuple[str, ...] = (),
    days: int = 730,
    now: datetime | None = None,
) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (0600) into `directory`; return their paths.
    Refuses to overwrite an existing key."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists; refusing to replace an application key")
    now = now or datetime.now(UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    dns = hostnames or (socket.gethostname(), "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(application_uri), *(x509.DNSName(h) for h in dns)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def application_uri_of(cert_path: Path) -> str:
    """The ApplicationUri (the URI SAN) of an application certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise ConfigError(f"{cert_path}: not an OPC UA application certificate: {exc}") from exc
    if len(uris) != 1:
        raise ConfigError(f"{cert_path}: expected one URI SAN (the ApplicationUri); found {uris}")
    return uris[0]
