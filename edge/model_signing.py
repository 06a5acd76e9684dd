"""Detached signatures for anomaly models, and the check the gateway runs before loading one.

A bundle (``model.onnx.sig``) is JSON::

    {"format": "idmz-model-signature/v1", "artifact": "model.onnx",
     "sha256": "<hex of the model bytes>", "model_version": "...",
     "algorithm": "ecdsa-sha256" | "ecdsa-sha384" | "ed25519",
     "signature": "<base64>", "certificate_chain": "<PEM: signer, then intermediates>",
     "signed_at": "<UTC ISO 8601>"}

The signature covers a domain-separated statement, ``idmz-model-signature/v1\\n<sha256>\\n``,
so it cannot be replayed as a signature over anything else. A ``v2`` bundle also carries a
signed release number, ``"release": n`` (n >= 1, increasing with every model a fleet gets) and
``"rollback_of": f`` (0, or the release this model deliberately replaces, f > n), in the
statement ``idmz-model-signature/v2\\n<sha256>\\nrelease <n>\\nrollback-of <f>\\n``; a gateway
refuses to go back to a lower release except through such a rollback, signed by one of its
``rollback_signers`` (`edge.model_release`). A ``v1`` bundle counts as release 0. The gateway accepts a model only
if, in this order: the bundle parses; the model's SHA-256 equals the bundle's; the signer
certificate chains to the configured model trust root, carries extendedKeyUsage codeSigning,
is valid now and is not on the CRL (`pki.verifier.ChainVerifier.verify_signer`, the product's
model-signer profile: URI SAN ``spiffe://<enterprise>/signer/<name>``); the signer is on the
allow-list when one is configured; the signature verifies with the signer's key; and the ONNX
metadata names a version, feature names and a threshold. Anything else raises
`ModelVerificationError` and nothing is loaded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import onnx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edge.anomaly_model import model_metadata
from edge.errors import ConfigError, ModelVerificationError
from pki.errors import PKIError
from pki.verifier import ChainVerifier, load_certificates

_log = logging.getLogger("idmz.edge.model")
FORMAT = "idmz-model-signature/v1"
FORMAT_V2 = "idmz-model-signature/v2"  # v1 plus a signed release number and rollback marker
MAX_BUNDLE_BYTES = 256 * 1024
MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_RELEASE = 2**53  # exact in JSON numbers everywhere


def _statement(sha256_hex: str, release: int = 0, rollback_of: int = 0) -> bytes:
    if release == 0:
        return f"{FORMAT}\n{sha256_hex}\n".encode()
    return f"{FORMAT_V2}\n{sha256_hex}\nrelease {release}\nrollback-of {rollback_of}\n".encode()


def _check_release(release: object, rollback_of: object) -> tuple[int, int]:
    """A release is an integer 1..2**53; ``rollback_of`` 0 or a higher release."""
    if (
        type(release) is not int
        or type(rollback_of) is not int
        or not 0 < release <= MAX_RELEASE
        or not (rollback_of == 0 or release < rollback_of <= MAX_RELEASE)
    ):
        raise ValueError(
            f"release must be an integer in 1..{MAX_RELEASE} and rollback_of 0 or a higher "
            f"release; found release={release!r}, rollback_of={rollback_of!r}"
        )
    return release, rollback_of


@dataclass(frozen=True, slots=True)
class ModelTrust:
    """Who may sign models for this gateway."""

    roots: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    allowed_signers: tuple[str, ...] = ()  # signer paths "<ent>/signer/<name>"; empty = any
    unsafe_skip_revocation: bool = False
    rollback_signers: tuple[str, ...] = ()  # who may sign a rollback; empty = nobody

    def __post_init__(self) -> None:
        if not self.roots:
            raise ConfigError("model trust needs at least one root certificate")
        if not self.crls and not self.unsafe_skip_revocation:
            raise ConfigError(
                "model trust needs the CA's CRL (model.crl) to check the signer for "
                "revocation, or unsafe_skip_revocation = true"
            )


@dataclass(frozen=True, slots=True)
class VerifiedModel:
    """A model whose bytes, signer and metadata were checked. Only `verify_model` makes one."""

    model_bytes: bytes
    sha256: str
    version: str
    feature_names: tuple[str, ...]
    threshold: float
    signer: str
    signer_fingerprint: str
    signer_not_after: datetime
    training_summary: dict[str, object]
    release: int = 0  # signed release number (0: a v1 bundle, no release)
    rollback_of: int = 0  # the release a signed rollback replaces; 0 when not a rollback


def sign_model(
    model_bytes: bytes,
    *,
    artifact: str,
    signer_cert_pem: bytes,
    signer_key_pem: bytes,
    chain_pem: bytes,
    now: datetime,
    key_password: bytes | None = None,
    release: int = 0,
    rollback_of: int = 0,
) -> bytes:
    """Make the signature bundle (JSON bytes) for `model_bytes`: v2 with ``release`` (and
    ``rollback_of`` for a rollback), v1 without a release."""
    if release or rollback_of:
        try:
            _check_release(release, rollback_of)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    try:
        key = serialization.load_pem_private_key(signer_key_pem, password=key_password)
        cert = x509.load_pem_x509_certificate(signer_cert_pem)
        intermediates = load_certificates(chain_pem) if chain_pem.strip() else []
    except (ValueError, TypeError, PKIError) as exc:
        raise ConfigError(f"cannot read the signer key or certificates: {exc}") from exc
    if cert.public_key() != key.public_key():
        raise ConfigError("the signer certificate does not belong to the signer key")
    digest = hashlib.sha256(model_bytes).hexdigest()
    msg = _statement(digest, release, rollback_of)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        h: hashes.HashAlgorithm = hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()
        signature = key.sign(msg, ec.ECDSA(h))
        algorithm = f"ecdsa-{h.name}"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature, algorithm = key.sign(msg), "ed25519"
    else:
        raise ConfigError("model signer keys must be ECDSA (P-256/P-384) or Ed25519")
    try:
        version = model_metadata(onnx.load_from_string(model_bytes)).get("model_version", "")
    except Exception as exc:
        raise ConfigError(f"{artifact} is not an ONNX model: {exc}") from exc
    chain_text = "".join(
        c.public_bytes(serialization.Encoding.PEM).decode() for c in [cert, *intermediates]
    )
    bundle: dict[str, object] = {
        "format": FORMAT_V2 if release else FORMAT,
        "artifact": artifact,
        "sha256": digest,
        "model_version": version,
        "algorithm": algorithm,
        "signature": base64.b64encode(signature).decode(),
        "certificate_chain": chain_text,
        "signed_at": now.astimezone(UTC).isoformat(),
    }
    if release:
        bundle |= {"release": release, "rollback_of": rollback_of}
    return (json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode()


def _check_signature(
    cert: x509.Certificate, algorithm: str, signature: bytes, msg: bytes, artifact: str
) -> None:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm in (
            "ecdsa-sha256",
            "ecdsa-sha384",
        ):
            h: hashes.HashAlgorithm = (
                hashes.SHA256() if algorithm == "ecdsa-sha256" else hashes.SHA384()
            )
            key.verify(signature, msg, ec.ECDSA(h))
        elif isinstance(key, ed25519.Ed25519PublicKey) and algorithm == "ed25519":
            key.verify(signature, msg)
        else:
            raise ModelVerificationError(
                f"{artifact}: algorithm {algorithm!r} does not match the signer's key type"
            )
    except InvalidSignature as exc:
        raise ModelVerificationError(
            f"{artifact}: the signature does not verify with the signer's key"
        ) from exc


def verify_model(
    model_bytes: bytes, bundle_bytes: bytes, trust: ModelTrust, *, now: datetime
) -> VerifiedModel:
    """Check everything listed in the module docstring; return the trusted model or raise."""
    if len(bundle_bytes) > MAX_BUNDLE_BYTES:
        raise ModelVerificationError(f"signature bundle is {len(bundle_bytes)} bytes; too large")
    try:
        bundle = json.loads(bundle_bytes)
        fmt, artifact = bundle["format"], str(bundle.get("artifact", "model"))
        want_sha = str(bundle["sha256"])
        algorithm = str(bundle["algorithm"])
        signature = base64.b64decode(bundle["signature"], validate=True)
        chain = load_certificates(str(bundle["certificate_chain"]).encode())
        release, rollback_of = 0, 0
        if fmt == FORMAT_V2:
            release, rollback_of = _check_release(bundle["release"], bundle["rollback_of"])
    except (ValueError, KeyError, TypeError, binascii.Error, PKIError) as exc:
        raise ModelVerificationError(f"malformed model signature bundle: {exc!r}") from exc
    if fmt not in (FORMAT, FORMAT_V2):
        raise ModelVerificationError(
            f"signature bundle format {fmt!r}; expected {FORMAT!r} or {FORMAT_V2!r}"
        )
    got_sha = hashlib.sha256(model_bytes).hexdigest()
    if got_sha != want_sha:
        raise ModelVerificationError(
            f"{artifact}: SHA-256 is {got_sha[:16]}..., the signature covers {want_sha[:16]}..."
        )
    leaf, intermediates = chain[0], chain[1:]
    verifier = ChainVerifier(
        roots=list(trust.roots),
        crls=list(trust.crls),
        unsafe_skip_revocation=trust.unsafe_skip_revocation,
    )
    try:
        signer = verifier.verify_signer(leaf, intermediates, now=now)
    except PKIError as exc:
        raise ModelVerificationError(f"{artifact}: signer certificate refused: {exc}") from exc
    if trust.allowed_signers and signer.identity.path not in trust.allowed_signers:
        raise ModelVerificationError(
            f"{artifact}: signer {signer.identity.path} is not in allowed_signers"
        )
    statement = _statement(got_sha, release, rollback_of)
    _check_signature(leaf, algorithm, signature, statement, artifact)
    try:
        meta = model_metadata(onnx.load_from_string(model_bytes))
        version = meta["model_version"]
        names = tuple(json.loads(meta["feature_names"]))
        threshold = float(meta["threshold"])
        summary = json.loads(meta.get("training_summary", "{}"))
    except Exception as exc:
        raise ModelVerificationError(
            f"{artifact}: signed, but not an idmz anomaly model (metadata: {exc!r})"
        ) from exc
    if not version or not names or not threshold > 0:
        raise ModelVerificationError(f"{artifact}: metadata lacks version, features or threshold")
    return VerifiedModel(
        model_bytes=model_bytes,
        sha256=got_sha,
        version=str(version),
        feature_names=tuple(str(n) for n in names),
        threshold=threshold,
        signer=signer.identity.path,
        signer_fingerprint=signer.fingerprint,
        signer_not_after=signer.not_after,
        training_summary=dict(summary),
        release=release,
        rollback_of=rollback_of,
    )


def load_trust(
    root_paths: Sequence[Path],
    crl_paths: Sequence[Path] = (),
    *,
    allowed_signers: Sequence[str] = (),
    unsafe_skip_revocation: bool = False,
    rollback_signers: Sequence[str] = (),
) -> ModelTrust:
    """Read trust roots and CRLs (PEM or DER) from files."""
    roots: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    try:
        for p in root_paths:
            roots.extend(load_certificates(p.read_bytes()))
        for p in crl_paths:
            data = p.read_bytes()
            crls.append(
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
    except (OSError, ValueError, PKIError) as exc:
        raise ConfigError(f"cannot read model trust roots or CRL: {exc}") from exc
    if unsafe_skip_revocation:
        _log.warning("model signer revocation is NOT checked (unsafe_skip_revocation)")
    return ModelTrust(
        tuple(roots),
        tuple(crls),
        tuple(allowed_signers),
        unsafe_skip_revocation,
        tuple(rollback_signers),
    )


def load_verified_model(
    model_path: Path, signature_path: Path, trust: ModelTrust, *, now: datetime
) -> VerifiedModel:
    """Read a model and its bundle from files and verify them."""
    try:
        if model_path.stat().st_size > MAX_MODEL_BYTES:
            raise ModelVerificationError(f"{model_path} is larger than {MAX_MODEL_BYTES} bytes")
        model_bytes = model_path.read_bytes()
        bundle = signature_path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelVerificationError(f"model or signature file missing: {exc.filename}") from exc
    return verify_model(model_bytes, bundle, trust, now=now)
