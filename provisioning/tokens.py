"""Enrollment and operator bearer tokens: JWTs signed with the service's Ed25519 key.

The algorithm is pinned (EdDSA, RFC 8037): ``alg: none``, HMAC with the public key as the
secret, or any other algorithm are refused by PyJWT before a signature is looked at. The
audience separates the two kinds, so an operator token never enrolls a device and an enrollment
token never calls the admin API. Verification returns trusted claims or raises `TokenError`;
whether an enrollment token is still unused is the registry's job (consumed atomically there).

>>> from datetime import UTC, datetime
>>> key = TokenKey.generate()
>>> now = datetime.now(UTC)
>>> token, claims = key.mint_enrollment("device:acme/p1/a/l1/c1/d1", ttl_s=60, now=now)
>>> key.verify_enrollment(token, now=now).subject
'device:acme/p1/a/l1/c1/d1'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from provisioning.errors import ConfigError, TokenError

ALGORITHM = "EdDSA"
ISSUER = "idmz-provisioning"
ENROLL_AUDIENCE = "idmz:enroll"
ADMIN_AUDIENCE = "idmz:admin"
MAX_TOKEN_CHARS = 4096  # ours are ~300; anything longer is not ours
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti"]
# An EST password: ``<token id>.<MAC>``; a JWT has two dots, so the forms never meet (ADR 0043).
EST_PASSWORD = re.compile(r"([A-Za-z0-9_-]{8,64})\.([A-Za-z0-9_-]{22})")
_EST_INFO = b"idmz EST password v1"


def is_est_password(token: str) -> bool:
    return EST_PASSWORD.fullmatch(token) is not None


class Role(StrEnum):
    """Operator roles, each including the ones below it."""

    AUDITOR = "auditor"  # read the registry and expiry reports
    OPERATOR = "operator"  # add devices and groups, mint enrollment tokens, revoke
    ADMIN = "admin"  # everything, including minting operator tokens

    @property
    def rank(self) -> int:
        return (Role.AUDITOR, Role.OPERATOR, Role.ADMIN).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True, slots=True)
class EnrollmentClaims:
    """Verified claims of an enrollment token. ``subject`` is ``device:<path>`` or
    ``group:<prefix>``; the registry decides whether ``token_id`` is still unused."""

    token_id: str
    subject: str
    issued_at: datetime
    expires_at: datetime

    @property
    def device_path(self) -> str | None:
        return self.subject.removeprefix("device:") if self.subject.startswith("device:") else None

    @property
    def group_prefix(self) -> str | None:
        return self.subject.removeprefix("group:") if self.subject.startswith("group:") else None


@dataclass(frozen=True, slots=True)
class OperatorClaims:
    token_id: str
    operator: str
    role: Role
    expires_at: datetime


def token_digest(token: str) -> str:
    """A short, non-reversible name for a token (rate-limit keys, logs); never the token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]


class TokenKey:
    """The service's token signing key (Ed25519). Load it once; it is used on every request."""

    algorithm = ALGORITHM

    def __init__(self, private_key: Ed25519PrivateKey | None, public_key: Ed25519PublicKey) -> None:
        self._private = private_key
        self._public = public_key
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        # The EST password MAC key is derived from the signing key (HKDF, RFC 5869): only the
        # service that can sign tokens can make or check passwords.
        self._est_key = (
            HKDF(hashes.SHA256(), 32, salt=None, info=_EST_INFO).derive(
                private_key.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                )
            )
            if private_key is not None
            else None
        )

    @classmethod
    def generate(cls) -> TokenKey:
        key = Ed25519PrivateKey.generate()
        return cls(key, key.public_key())

    @classmethod
    def load_or_create(cls, path: Path) -> TokenKey:
        """Load ``path`` (PKCS#8 PEM, 0600), creating it on first use."""
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            data = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return cls.load_or_create(path)  # another process created it first
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"token signing key {path} must be mode 0600")
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigError(f"token signing key {path} is not a PEM private key") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ConfigError(f"token signing key {path} must be Ed25519")
        return cls(loaded, loaded.public_key())

    # -- minting --------------------------------------------------------------------------

    def _mint(self, claims: dict[str, Any]) -> str:
        if self._private is None:
            raise ConfigError("this token key can only verify; it has no private key")
        return jwt.encode(claims, self._private, algorithm=ALGORITHM, headers={"kid": self.key_id})

    def mint_enrollment(
        self, subject: str, *, ttl_s: int, now: datetime
    ) -> tuple[str, EnrollmentClaims]:
        jti = secrets.token_urlsafe(18)
        iat = int(now.timestamp())
        exp = iat + ttl_s
        token = self._mint(
            {
                "iss": ISSUER,
                "aud": ENROLL_AUDIENCE,
                "sub": subject,
                "jti": jti,
                "iat": iat,
                "exp": exp,
            }
        )
        return token, EnrollmentClaims(jti, subject, _dt(iat), _dt(exp))

    def mint_operator(
        self, operator: str, role: Role, *, ttl_s: int, now: datetime
    ) -> tuple[str, OperatorClaims]:
        jti = secrets.token_urlsafe(18)
        iat = int(now.timestamp())
        exp = iat + ttl_s
        token = self._mint(
            {
                "iss": ISSUER,
                "aud": ADMIN_AUDIENCE,
                "sub": operator,
                "role": role.value,
                "jti": jti,
                "iat": iat,
                "exp": exp,
            }
        )
        return token, OperatorClaims(jti, operator, role, _dt(exp))

    # -- verifying ------------------------------------------------------------------------

    def _decode(self, token: str, audience: str, now: datetime, leeway_s: int) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(
                "the token is missing or longer than any token this service mints", code="malformed"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError("the token is not a JWT", code="malformed") from exc
        if header.get("alg") != ALGORITHM:
            # PyJWT would refuse it too; naming the algorithm makes the audit record useful.
            raise TokenError(
                f"token algorithm {str(header.get('alg'))[:16]!r} is not the pinned {ALGORITHM}",
                code="forged",
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                leeway=leeway_s,
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise TokenError(
                "token signature does not verify with the service key", code="forged"
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError(f"token audience is not {audience}", code="wrong-audience") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is invalid: {type(exc).__name__}", code="malformed") from exc
        # Expiry is checked against the caller's clock (`now`), not the machine's.
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise TokenError("token exp/iat are not integers", code="malformed")
        if now.timestamp() > exp + leeway_s:
            raise TokenError(
                f"token {str(claims['jti'])[:32]} expired at {_dt(exp):%Y-%m-%dT%H:%M:%SZ}",
                code="expired",
            )
        if iat > now.timestamp() + leeway_s:
            raise TokenError("token was issued in the future", code="malformed")
        for name in ("sub", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise TokenError(f"token claim {name} must be a non-empty string", code="malformed")
        return claims

    def verify_enrollment(
        self, token: str, *, now: datetime, leeway_s: int = 30
    ) -> EnrollmentClaims:
        claims = self._decode(token, ENROLL_AUDIENCE, now, leeway_s)
        subject = claims["sub"]
        if not subject.startswith(("device:", "group:")):
            raise TokenError(
                "enrollment token subject names neither a device nor a group", code="malformed"
            )
        return EnrollmentClaims(claims["jti"], subject, _dt(claims["iat"]), _dt(claims["exp"]))

    def est_password(self, token_id: str) -> str:
        """The short form of enrollment token ``token_id`` for EST clients whose HTTP Basic
        header cannot hold a JWT (strongSwan's ``pki --est`` keeps 256 bytes): the token id and a
        128-bit MAC over it. Single-use and expiring with the token (the registry row decides)."""
        return f"{token_id}.{self._est_mac(token_id)}"

    def est_password_token_id(self, password: str) -> str:
        """The token id an EST password stands for, once its MAC verified; else `TokenError`."""
        match = EST_PASSWORD.fullmatch(password)
        if match is None:
            raise TokenError("not an EST password", code="malformed")
        token_id, mac = match.groups()
        if not hmac.compare_digest(mac, self._est_mac(token_id)):
            raise TokenError(f"EST password for token {token_id} does not verify", code="forged")
        return token_id

    def _est_mac(self, token_id: str) -> str:
        if self._est_key is None:
            raise ConfigError("EST passwords need the token signing key, not only its public half")
        mac = hmac.new(self._est_key, token_id.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def verify_operator(self, token: str, *, now: datetime, leeway_s: int = 30) -> OperatorClaims:
        claims = self._decode(token, ADMIN_AUDIENCE, now, leeway_s)
        try:
            role = Role(str(claims.get("role")))
        except ValueError as exc:
            raise TokenError("operator token carries no known role", code="malformed") from exc
        return OperatorClaims(claims["jti"], claims["sub"], role, _dt(claims["exp"]))


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
