"""The operator API: devices, groups, tokens, revocations and the expiry report, each behind an
operator token of the role it needs (``auditor`` reads, ``operator`` changes; ADR 0042, 0048).
The operator actions are the ones the CLI calls on the CA host, audited the same way.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from provisioning.errors import UpstreamError
from provisioning.expiry import scan_expiry
from provisioning.http.deps import AuditorClaims, Context, OperatorRoleClaims
from provisioning.records import DeviceRecord
from provisioning.schemas import (
    DeviceIn,
    DeviceOut,
    GroupIn,
    RevokeIn,
    RevokeOut,
    TokenIn,
    TokenOut,
)

router = APIRouter(tags=["operator"])


def device_out(d: DeviceRecord) -> DeviceOut:
    return DeviceOut(path=d.path, status=d.status, device_class=d.device_class, asset=d.asset)


@router.get("/v1/devices")
def devices(_: AuditorClaims, context: Context) -> list[DeviceOut]:
    return [device_out(d) for d in context.services.operators.registry.devices()]


@router.post("/v1/devices", status_code=201)
def add_device(body: DeviceIn, who: OperatorRoleClaims, context: Context) -> DeviceOut:
    operators = context.services.operators
    operators.add_device(
        body.path,
        operator=who.operator,
        now=context.clock(),
        device_class=body.device_class,
        asset=body.asset,
    )
    d = operators.registry.device(body.path)
    if d is None:  # added in its own transaction just above: the registry lost it
        raise UpstreamError(f"the registry does not return device {body.path} just added")
    return device_out(d)


@router.post("/v1/groups", status_code=201)
def add_group(body: GroupIn, who: OperatorRoleClaims, context: Context) -> GroupIn:
    context.services.operators.add_group(
        body.prefix,
        operator=who.operator,
        now=context.clock(),
        device_class=body.device_class,
        validity_days=body.validity_days,
        renewal_grace_days=body.renewal_grace_days,
    )
    return body


@router.post("/v1/tokens", status_code=201)
def add_token(body: TokenIn, who: OperatorRoleClaims, context: Context) -> TokenOut:
    token, claims = context.services.operators.create_enrollment_token(
        operator=who.operator,
        now=context.clock(),
        device=body.device,
        group=body.group,
        ttl_s=body.ttl_s,
    )
    return TokenOut(token=token, token_id=claims.token_id, expires_at=claims.expires_at)


@router.post("/v1/revocations")
def revoke(body: RevokeIn, who: OperatorRoleClaims, context: Context) -> RevokeOut:
    notice = context.services.operators.revoke_device(
        body.path, operator=who.operator, now=context.clock(), reason=body.reason
    )
    return RevokeOut(
        device=notice.device, serials=list(notice.serials), crl_number=notice.crl_number
    )


@router.get("/v1/expiry")
def expiry(_: AuditorClaims, context: Context) -> dict[str, Any]:
    service = context.services.enrollment
    report = scan_expiry(
        service.registry,
        now=context.clock(),
        alert_days=context.limits.expiry.alert_days,
        issuing_not_after=service.issuing.not_valid_after_utc,
        device_validity=service.max_device_validity,
    )
    return report.as_json()
