"""Request and response bodies of the JSON API (pydantic), with the limits the schema enforces.
They are also what the OpenAPI document at ``/openapi.json`` describes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from pki.authority import RevocationReason
from provisioning.records import DeviceStatus

MAX_CSR_CHARS = 24 * 1024


class EnrollRequest(BaseModel):
    csr: str = Field(
        max_length=MAX_CSR_CHARS, description="PEM PKCS#10 request; the key never leaves the device"
    )
    identity: str | None = Field(
        default=None, max_length=400, description="optional: the identity the device expects"
    )


class RenewRequest(BaseModel):
    csr: str = Field(max_length=MAX_CSR_CHARS)


class CertificateResponse(BaseModel):
    identity: str
    serial: str
    fingerprint: str
    not_after: datetime
    certificate: str = Field(description="leaf, PEM")
    chain: str = Field(description="issuing CA, PEM (leaf and root excluded)")
    root: str = Field(description="root CA, PEM")


class CAResponse(BaseModel):
    root: str
    chain: str
    root_sha256: str


class DeviceIn(BaseModel):
    path: str = Field(max_length=400)
    device_class: str = Field(
        default="gateway", max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$"
    )
    asset: str = Field(default="", max_length=400)


class DeviceOut(BaseModel):
    path: str
    status: DeviceStatus
    device_class: str
    asset: str


class GroupIn(BaseModel):
    prefix: str = Field(max_length=400)
    device_class: str = Field(
        default="gateway", max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$"
    )
    validity_days: int | None = Field(default=None, ge=1, le=3650)
    renewal_grace_days: int = Field(default=0, ge=0, le=3650)


class TokenIn(BaseModel):
    device: str | None = Field(default=None, max_length=400)
    group: str | None = Field(default=None, max_length=400)
    ttl_s: int | None = Field(default=None, ge=1, le=30 * 86400)


class TokenOut(BaseModel):
    token: str
    token_id: str
    expires_at: datetime


class RevokeIn(BaseModel):
    path: str = Field(max_length=400)
    reason: RevocationReason = RevocationReason.UNSPECIFIED


class RevokeOut(BaseModel):
    device: str
    serials: list[str]
    crl_number: int | None


class ErrorOut(BaseModel):
    error: str
    detail: str
