"""Admission: what an enrollment or renewal request may claim, checked before anything is
issued. The token's claims (a JWT, or the short EST password standing for one; ADR 0043), the
identity they bind, why a token could not be used, and the device-state rules (only a registered,
unrevoked device is issued; only its current certificate renews; the CSR must have passed).
Used by `provisioning.service`; no I/O beyond the registry reads passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pki.csr import CheckedCSR, VerifiedCSR
from pki.errors import CSRError, MalformedIdentityError
from pki.identity import DeviceIdentity, IdentityPrefix
from pki.keys import KeyPolicy
from policies.document import CertificatePolicy
from provisioning.errors import DeviceStateError, RequestError, TokenError
from provisioning.records import (
    CertificateRecord,
    CertificateStatus,
    DeviceRecord,
    DeviceStatus,
    GroupRecord,
)
from provisioning.registry import Registry
from provisioning.tokens import EnrollmentClaims, TokenKey, is_est_password


def enrollment_claims(
    token_key: TokenKey, registry: Registry, token: str, *, now: datetime, leeway_s: int
) -> EnrollmentClaims:
    """Claims of a JWT enrollment token, or of the short EST password standing for one
    (its MAC verified, then the registry row: subject and expiry; consumed like the JWT)."""
    if not is_est_password(token):
        return token_key.verify_enrollment(token, now=now, leeway_s=leeway_s)
    token_id = token_key.est_password_token_id(token)
    row = registry.token(token_id)
    if row is None or not row.subject.startswith(("device:", "group:")):
        raise TokenError(
            f"EST password names token {token_id}, which this registry never minted for enrollment",
            code="unknown-token",
        )
    if now > row.expires_at + timedelta(seconds=leeway_s):
        raise TokenError(
            f"token {token_id} expired at {row.expires_at:%Y-%m-%dT%H:%M:%SZ}", code="expired"
        )
    return EnrollmentClaims(token_id, row.subject, row.created_at, row.expires_at)


def identity_for(claims: EnrollmentClaims, requested: str | None) -> DeviceIdentity:
    try:
        if claims.device_path is not None:
            identity = DeviceIdentity.parse(claims.device_path)
            if requested is not None and requested != identity.path:
                raise TokenError(
                    f"token {claims.token_id} is bound to {identity.path}, not to {requested[:400]}",
                    code="other-device",
                )
            return identity
        if claims.group_prefix is None:  # verification admits only device: and group:
            raise TokenError(f"token {claims.token_id} names no device or group", code="malformed")
        prefix = IdentityPrefix.parse(claims.group_prefix)
        if requested is None:
            raise RequestError(
                "a group enrollment must name the device identity", code="no-identity"
            )
        identity = DeviceIdentity.parse(requested)
    except MalformedIdentityError as exc:
        raise RequestError(f"malformed identity: {exc}", code="bad-identity") from exc
    if not identity.is_under(prefix):
        raise TokenError(
            f"token {claims.token_id} is for group {prefix}; {identity} is outside it",
            code="other-device",
        )
    return identity


def why_token_unusable(registry: Registry, claims: EnrollmentClaims, now: datetime) -> TokenError:
    row = registry.token(claims.token_id)
    if row is None:
        return TokenError(
            f"token {claims.token_id} was never minted by this registry", code="unknown-token"
        )
    if row.subject != claims.subject:
        return TokenError(
            f"token {claims.token_id} registry binding differs from its claims",
            code="other-device",
        )
    if row.used_at is not None:
        return TokenError(
            f"token {claims.token_id} was already used at {row.used_at:%Y-%m-%dT%H:%M:%SZ} (replay)",
            code="replayed",
        )
    return TokenError(
        f"token {claims.token_id} expired at {row.expires_at:%Y-%m-%dT%H:%M:%SZ}",
        code="expired",
    )


def require_issuable(device: DeviceRecord | None, identity: DeviceIdentity) -> None:
    if device is None:
        raise DeviceStateError(f"device {identity} is not registered", code="unknown-device")
    if device.status == DeviceStatus.REVOKED:
        raise DeviceStateError(
            f"device {identity} is revoked; register it again to re-enroll",
            code="device-revoked",
        )


def require_renewable(
    device: DeviceRecord | None,
    record: CertificateRecord | None,
    identity: DeviceIdentity,
    serial: str,
) -> None:
    """Only an enrolled device's current certificate renews."""
    if device is None or device.status != DeviceStatus.ENROLLED:
        raise DeviceStateError(
            f"device {identity} is {device.status if device else 'not registered'}",
            code="device-not-enrolled",
        )
    if (
        record is None
        or record.status != CertificateStatus.ACTIVE
        or record.device_path != identity.path
    ):
        raise DeviceStateError(
            f"certificate {serial} of {identity} is {record.status if record else 'unknown to the registry'}; "
            "only the current certificate renews",
            code="certificate-not-current",
        )


def require_verified(csr: CheckedCSR) -> VerifiedCSR:
    """Step 3: the CSR checked where it arrived must have passed."""
    try:
        return csr.verified()
    except CSRError as exc:
        raise RequestError(f"CSR refused: {exc}", code="bad-csr") from exc


def require_enrollable(
    registry: Registry,
    identity: DeviceIdentity,
    claims: EnrollmentClaims,
    policy: CertificatePolicy,
) -> tuple[timedelta, GroupRecord | None]:
    """Step 2: the device the token binds may be issued; returns its validity and group."""
    device, group = registry.device_and_group(identity.path)
    if device is not None or claims.device_path is not None:
        require_issuable(device, identity)
    if device is not None and claims.group_prefix is not None:
        # A group token must never mint a second identity for a device that exists:
        # whoever holds it could otherwise impersonate any registered device on the line.
        raise DeviceStateError(
            f"group token {claims.token_id} enrolls new devices only; {identity} is already "
            "registered (mint a device token for it)",
            code="device-exists",
        )
    return device_validity(group, policy), group


def max_device_validity(policy: CertificatePolicy) -> timedelta:
    """The longest a device certificate may live (the certificate policy; 90 days default)."""
    return timedelta(days=int(policy.max_validity_days.get("device", 90)))


def device_validity(group: GroupRecord | None, policy: CertificatePolicy) -> timedelta:
    """The group's validity when it sets one, never beyond the policy's maximum."""
    limit = max_device_validity(policy)
    days = group.validity_days if group is not None and group.validity_days else limit.days
    return timedelta(days=min(days, limit.days))


def key_policy_for(policy: CertificatePolicy) -> KeyPolicy:
    curves = tuple(
        c for c, t in (("secp256r1", "ec-p256"), ("secp384r1", "ec-p384")) if t in policy.key_types
    )
    return KeyPolicy(
        allowed_curves=curves or ("secp256r1",),
        min_rsa_bits=max(2048, policy.min_rsa_bits),
        allow_rsa="rsa" in policy.key_types,
    )
