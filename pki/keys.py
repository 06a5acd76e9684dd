"""Key types the CA accepts, key generation, and encrypted PEM storage.

ECDSA P-256 is the default; P-384 and RSA of at least 2048 bits (policy can raise it) are
accepted in CSRs. Nothing weaker: no RSA < 2048, no other curves, no DSA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bedrock.files import write_atomic
from pki.errors import ConfigError, CSRError, KeyStoreError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_CURVES: dict[str, type[ec.EllipticCurve]] = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Which public keys the CA signs. Policy documents may raise ``min_rsa_bits``."""

    allowed_curves: tuple[str, ...] = ("secp256r1", "secp384r1")
    min_rsa_bits: int = 2048
    allow_rsa: bool = True

    def __post_init__(self) -> None:
        if self.min_rsa_bits < 2048:
            raise ConfigError(f"min_rsa_bits must be at least 2048; found {self.min_rsa_bits}")
        unknown = set(self.allowed_curves) - set(_CURVES)
        if unknown:
            raise ConfigError(f"unsupported curves {sorted(unknown)}; supported: {sorted(_CURVES)}")


def describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__


def check_public_key(key: object, policy: KeyPolicy) -> PublicKey:
    """Return ``key`` typed as an accepted public key, or raise `CSRError`."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in policy.allowed_curves:
            raise CSRError(
                f"expected an ECDSA key on {' or '.join(policy.allowed_curves)}; found {key.curve.name}"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not policy.allow_rsa:
            raise CSRError("expected an ECDSA key; found RSA, which this policy does not allow")
        if key.key_size < policy.min_rsa_bits:
            raise CSRError(
                f"expected an RSA key of at least {policy.min_rsa_bits} bits; found {key.key_size}"
            )
        return key
    raise CSRError(f"expected an ECDSA (P-256/P-384) or RSA key; found {describe_key(key)}")


def generate_private_key(key_type: str = "ec-p256") -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ConfigError(f"key type must be one of {', '.join(KEY_TYPES)}; found {key_type!r}")


def private_key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    """Write a private key, replacing ``path`` atomically, mode 0600 from the first byte
    (`bedrock.files.write_atomic`: never through a planted tmp file or symlink)."""
    write_atomic(path, private_key_pem(key, passphrase), 0o600)


def load_private_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    """Load a PEM private key; a wrong passphrase is a `KeyStoreError` that names the file only."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        # Never echo the passphrase or key bytes; the cause is kept for debugging.
        raise KeyStoreError(
            f"cannot decrypt private key {path}: wrong passphrase or not a PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyStoreError(f"private key {path} is {describe_key(key)}; expected ECDSA or RSA")
    return key
