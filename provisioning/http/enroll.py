"""Enrollment and renewal over the JSON API: ``GET /v1/ca``, ``POST /v1/enroll`` (one-time
token, ``Authorization: Bearer``) and ``POST /v1/renew`` (the current certificate over mutual
TLS). The EST routes (`provisioning.http.est`) reach the service through the same two calls.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pki.authority import fingerprint_sha256, pem
from pki.csr import check_csr
from provisioning.http.deps import Context, bearer_token, peer_certificate_der
from provisioning.schemas import CAResponse, CertificateResponse, EnrollRequest, RenewRequest
from provisioning.service import Enrolled, ProvisioningService

router = APIRouter()


def enroll_with_csr(
    service: ProvisioningService,
    token: str,
    unverified_csr: bytes,
    *,
    now: datetime,
    client: str,
    via: str,
    requested_identity: str | None = None,
) -> Enrolled:
    """Blocking (run it in the thread pool, one hop): parse and verify the CSR once, then enroll
    with the result; a refused CSR is reported by the service after authentication (ADR 0018)."""
    csr = check_csr(unverified_csr, service.key_policy)
    return service.enroll(
        token, csr, now=now, client=client, via=via, requested_identity=requested_identity
    )


def renew_with_csr(
    service: ProvisioningService,
    peer_der: bytes | None,
    unverified_csr: bytes,
    *,
    now: datetime,
    client: str,
    via: str,
) -> Enrolled:
    """Blocking, like `enroll_with_csr`, for renewal over mutual TLS."""
    csr = check_csr(unverified_csr, service.key_policy)
    return service.renew(peer_der, csr, now=now, client=client, via=via)


def certificate_json(result: Enrolled) -> Response:
    issued = result.issued
    body = CertificateResponse(
        identity=result.identity.path,
        serial=issued.serial_hex,
        fingerprint=issued.fingerprint,
        not_after=issued.not_after,
        certificate=issued.leaf_pem().decode(),
        chain=issued.chain_pem().decode(),
        root=issued.root_pem().decode(),
    )
    return Response(body.model_dump_json().encode(), status_code=201, media_type="application/json")


@router.get("/v1/ca", tags=["enrollment"])
def ca(context: Context) -> CAResponse:
    """The CA chain. Clients check ``root_sha256`` against their pinned fingerprint
    before trusting it (no trust on first use)."""
    service = context.services.enrollment
    return CAResponse(
        root=pem(service.root).decode(),
        chain=pem(service.issuing).decode(),
        root_sha256=fingerprint_sha256(service.root),
    )


# The two hot endpoints are async with exactly one hop to the thread pool (the blocking
# service call) and answer with pre-serialized JSON: FastAPI would otherwise hop to threads
# for the sync endpoint and again to validate the response model (ADR 0045).
@router.post("/v1/enroll", status_code=201, tags=["enrollment"], response_model=CertificateResponse)
async def enroll(body: EnrollRequest, request: Request, context: Context) -> Response:
    """First enrollment with a one-time token (``Authorization: Bearer``)."""
    client = context.admit_client(request)
    token = await context.enrollment_token(request, bearer_token, client=client, via="enroll")
    result = await context.issue(
        enroll_with_csr,
        context.services.enrollment,
        token,
        body.csr.encode(),
        now=context.clock(),
        client=client,
        via="enroll",
        requested_identity=body.identity,
    )
    return certificate_json(result)


@router.post("/v1/renew", status_code=201, tags=["enrollment"], response_model=CertificateResponse)
async def renew(body: RenewRequest, request: Request, context: Context) -> Response:
    """Renewal authenticated by the current certificate over mutual TLS."""
    client = context.admit_client(request)
    result = await context.issue(
        renew_with_csr,
        context.services.enrollment,
        peer_certificate_der(request),
        body.csr.encode(),
        now=context.clock(),
        client=client,
        via="renew",
    )
    return certificate_json(result)
