"""Operator actions: register devices and groups, mint tokens, revoke. Every one is audited
with the operator as the actor; the CLI (on the CA host) and the operator API call the same
methods (ADR 0042).

`OperatorActions` is one of the composed provisioning services (ADR 0090): it receives the CA,
the registry, the audit log, the token key, the certificate policy and the limits it acts with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from cryptography import x509

from audit.events import AuditEvent, AuditSink, Outcome
from pki.authority import CertificateAuthority, RevocationReason, format_serial
from pki.errors import MalformedIdentityError, PKIError
from pki.identity import DeviceIdentity, IdentityPrefix
from pki.ledger import LedgerEntry
from policies.document import CertificatePolicy
from provisioning.config import ServiceLimits
from provisioning.errors import DeviceStateError, UpstreamError, UsageError
from provisioning.recording import record
from provisioning.records import DeviceStatus
from provisioning.registry import Registry
from provisioning.tokens import EnrollmentClaims, OperatorClaims, Role, TokenKey

_log = logging.getLogger("provisioning")

RevocationListener = Callable[["RevocationNotice"], None]


@dataclass(frozen=True, slots=True)
class RevocationNotice:
    """What listeners (the relay, webhooks, MQTT) learn when a device is revoked."""

    device: str
    serials: tuple[str, ...]
    reason: str
    revoked_at: datetime
    crl_number: int | None


@dataclass(kw_only=True, slots=True)
class OperatorActions:
    ca: CertificateAuthority
    registry: Registry
    audit: AuditSink
    token_key: TokenKey
    policy: CertificatePolicy
    limits: ServiceLimits
    listeners: tuple[RevocationListener, ...] = ()

    def _record(self, event: AuditEvent) -> None:
        record(self.audit, event)

    def add_device(
        self,
        path: str,
        *,
        operator: str,
        now: datetime,
        device_class: str = "gateway",
        asset: str = "",
    ) -> None:
        identity = parse_device(path)
        try:
            with self.registry.unit() as unit:
                unit.insert_device(
                    identity.path,
                    device_class=device_class,
                    asset=asset,
                    status=DeviceStatus.REGISTERED,
                    now=now,
                )
                self._record(
                    AuditEvent(
                        operator,
                        "provisioning.device.added",
                        identity.path,
                        Outcome.SUCCESS,
                        details={"class": device_class, "asset": asset[:200]},
                    )
                )
        except DeviceStateError as exc:
            raise UsageError(str(exc)) from exc

    def add_group(
        self,
        prefix: str,
        *,
        operator: str,
        now: datetime,
        device_class: str = "gateway",
        validity_days: int | None = None,
        renewal_grace_days: int = 0,
    ) -> None:
        try:
            parsed = IdentityPrefix.parse(prefix)
        except MalformedIdentityError as exc:
            raise UsageError(str(exc)) from exc
        max_days = int(self.policy.max_validity_days.get("device", 90))
        if validity_days is not None and not 0 < validity_days <= max_days:
            raise UsageError(
                f"group validity must be 1..{max_days} days (certificate policy); found {validity_days}"
            )
        if renewal_grace_days < 0:
            raise UsageError("renewal grace must be >= 0 days")
        with self.registry.unit() as unit:
            unit.insert_group(
                parsed.path,
                device_class=device_class,
                validity_days=validity_days,
                renewal_grace_days=renewal_grace_days,
                now=now,
            )
            self._record(
                AuditEvent(
                    operator,
                    "provisioning.group.added",
                    parsed.path,
                    Outcome.SUCCESS,
                    details={
                        "validity_days": validity_days,
                        "renewal_grace_days": renewal_grace_days,
                    },
                )
            )

    def create_enrollment_token(
        self,
        *,
        operator: str,
        now: datetime,
        device: str | None = None,
        group: str | None = None,
        ttl_s: int | None = None,
    ) -> tuple[str, EnrollmentClaims]:
        ttl = ttl_s if ttl_s is not None else self.limits.tokens.enrollment_ttl_s
        if not 0 < ttl <= self.limits.tokens.max_enrollment_ttl_s:
            raise UsageError(
                f"token lifetime must be 1..{self.limits.tokens.max_enrollment_ttl_s} s; found {ttl}"
            )
        if device is not None and group is None:
            identity = parse_device(device)
            row = self.registry.device(identity.path)
            if row is None:
                raise UsageError(
                    f"device {identity} is not registered; run `idmz provisioning device add {identity}` first"
                )
            if row.status == DeviceStatus.REVOKED:
                raise UsageError(f"device {identity} is revoked")
            subject = f"device:{identity.path}"
        elif group is not None and device is None:
            if not any(g.prefix == group for g in self.registry.groups()):
                raise UsageError(f"enrollment group {group} does not exist")
            subject = f"group:{group}"
        else:
            raise UsageError("a token is bound to exactly one device or one group")
        token, claims = self.token_key.mint_enrollment(subject, ttl_s=ttl, now=now)
        self._record_token(
            claims.token_id, subject, operator=operator, now=claims.issued_at,
            expires_at=claims.expires_at,
        )  # fmt: skip
        return token, claims

    def create_operator_token(
        self, *, operator: str, name: str, role: Role, now: datetime, ttl_s: int | None = None
    ) -> tuple[str, OperatorClaims]:
        ttl = ttl_s if ttl_s is not None else self.limits.tokens.operator_ttl_s
        if not 0 < ttl <= self.limits.tokens.max_operator_ttl_s:
            raise UsageError(
                f"operator token lifetime must be 1..{self.limits.tokens.max_operator_ttl_s} s"
            )
        token, claims = self.token_key.mint_operator(name, role, ttl_s=ttl, now=now)
        # Recorded (never used up) so that it can be revoked by id (review S7).
        self._record_token(
            claims.token_id, f"operator:{name}", operator=operator, now=now,
            expires_at=claims.expires_at, role=role,
        )  # fmt: skip
        return token, claims

    def _record_token(
        self,
        jti: str,
        subject: str,
        *,
        operator: str,
        now: datetime,
        expires_at: datetime,
        role: Role | None = None,
    ) -> None:
        """Register a minted token's id (never the token) and audit it, in one unit."""
        details = {"token_id": jti, "expires_at": expires_at.isoformat()}
        if role is not None:
            details["role"] = role.value
        with self.registry.unit() as unit:
            unit.insert_token(
                jti, subject, created_at=now, expires_at=expires_at, created_by=operator
            )
            self._record(
                AuditEvent(
                    operator, "provisioning.token.created", subject, Outcome.SUCCESS,
                    details=details,
                )
            )  # fmt: skip

    def revoke_device(
        self,
        path: str,
        *,
        operator: str,
        now: datetime,
        reason: RevocationReason = RevocationReason.UNSPECIFIED,
    ) -> RevocationNotice:
        """Revoke the device and every certificate the CA ever issued to it that is still
        valid: the registry's rows and, where the CA keeps a ledger, its entries for the
        subject (a certificate issued but never recorded, e.g. by a unit that rolled back).

        The device row is locked first, as issuance and activation lock it (H1): a renewal or
        enrollment either committed its ``pending`` certificate before (revoked here) or
        re-checks the status after this commits (refused)."""
        identity = parse_device(path)
        with self.registry.unit() as unit:
            if unit.lock_device(identity.path) is None:
                raise UsageError(f"device {identity} is not registered")
            serials = unit.mark_certificates_revoked(identity.path)
            serials += self._unrevoked_in_ca(identity.path, known=serials, now=now)
            for serial in serials:
                try:
                    self.ca.revoke(int(serial, 16), reason, now=now)  # regenerates the CRL
                except PKIError as exc:
                    raise UpstreamError(f"the CA could not revoke {serial}: {exc}") from exc
            if not serials:
                self.ca.current_crl(now=now)
            unit.set_device_status(identity.path, DeviceStatus.REVOKED, now=now)
            self._record(
                AuditEvent(
                    operator,
                    "provisioning.device.revoked",
                    identity.path,
                    Outcome.SUCCESS,
                    reason=reason.value,
                    after={"status": DeviceStatus.REVOKED},
                    details={"serials": ",".join(serials)[:4000], "count": len(serials)},
                )
            )
        crl_number = _crl_number(self.ca.current_crl(now=now).crl)
        notice = RevocationNotice(identity.path, tuple(serials), reason.value, now, crl_number)
        for listener in self.listeners:
            try:
                listener(notice)
            except Exception:  # noqa: BLE001 - a failed listener must not undo a revocation
                _log.exception("revocation listener failed for %s", identity)
        return notice

    def _unrevoked_in_ca(self, subject: str, *, known: list[str], now: datetime) -> list[str]:
        """Serials of unexpired, unrevoked certificates the CA's own inventory holds for
        ``subject`` beyond ``known``. A CA without an inventory (Vault) returns none: there the
        registry, which records every issuance under the device lock, is the inventory."""
        if not isinstance(self.ca, IssuanceInventory):
            return []
        seen = set(known)
        return [
            hex_serial
            for entry in self.ca.certificates_for(subject)
            if entry.revoked_at is None
            and entry.not_after > now
            and (hex_serial := format_serial(entry.serial)) not in seen
        ]


@runtime_checkable
class IssuanceInventory(Protocol):
    """A CA that can list what it issued to a subject (`pki.local.LocalCA` and its ledger)."""

    def certificates_for(self, subject: str) -> list[LedgerEntry]: ...


def parse_device(path: str) -> DeviceIdentity:
    try:
        return DeviceIdentity.parse(path)
    except MalformedIdentityError as exc:
        raise UsageError(str(exc)) from exc


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None
