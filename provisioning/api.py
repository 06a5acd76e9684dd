"""The HTTP layer: FastAPI routes for enrollment, renewal and the operator API.

This module only translates: requests into service calls, errors into statuses. Refusals get a
generic message (the precise reason is in the audit log):

==========================  ======  =========================================
error                       status  body ``error``
==========================  ======  =========================================
`TokenError`                401     ``unauthorized`` (+ ``WWW-Authenticate``)
`DeviceStateError`          403     ``forbidden``
`AccessDeniedError`         403     ``forbidden``
`RequestError`              400     ``bad_request``
`UsageError` (operator)     400     ``bad_request`` (operators see the reason)
body over the limit         413     ``too_large``
`RateLimitedError`          429     ``rate_limited`` (+ ``Retry-After``)
`UpstreamError`             503     ``unavailable``
unknown route               404     ``not_found``
==========================  ======  =========================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from bedrock.errors import http_status_for
from pki.authority import fingerprint_sha256, pem
from pki.csr import check_csr
from provisioning.bodylimit import BodyLimit
from provisioning.config import ServiceLimits
from provisioning.errors import (
    AccessDeniedError,
    DeviceStateError,
    RateLimitedError,
    RefusedError,
    RequestError,
    TokenError,
    UpstreamError,
    UsageError,
)
from provisioning.est import EST_CHALLENGE, EST_PREFIX
from provisioning.expiry import scan_expiry
from provisioning.ratelimit import KeyedRateLimiter
from provisioning.schemas import (
    CAResponse,
    CertificateResponse,
    DeviceIn,
    DeviceOut,
    EnrollRequest,
    ErrorOut,
    GroupIn,
    RenewRequest,
    RevokeIn,
    RevokeOut,
    TokenIn,
    TokenOut,
)
from provisioning.service import ENROLL_REFUSED, RENEW_REFUSED, Enrolled, ProvisioningService
from provisioning.tokens import OperatorClaims, Role, token_digest

_log = logging.getLogger("provisioning.api")
Clock = Callable[[], datetime]


# -- helpers ---------------------------------------------------------------------------------


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def peer_certificate_der(request: Request) -> bytes | None:
    """The TLS client certificate that `provisioning.server` put in the ASGI TLS extension."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    try:
        return x509.load_pem_x509_certificate(chain[0].encode()).public_bytes(
            serialization.Encoding.DER
        )
    except ValueError:
        return None


def bearer_token(request: Request) -> str:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("no bearer token was presented", code="no-token")
    return token.strip()


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


def certificate_response(result: Enrolled) -> CertificateResponse:
    issued = result.issued
    return CertificateResponse(
        identity=result.identity.path,
        serial=issued.serial_hex,
        fingerprint=issued.fingerprint,
        not_after=issued.not_after,
        certificate=issued.leaf_pem().decode(),
        chain=issued.chain_pem().decode(),
        root=issued.root_pem().decode(),
    )


def certificate_json(result: Enrolled) -> Response:
    body = certificate_response(result).model_dump_json().encode()
    return Response(body, status_code=201, media_type="application/json")


def _error(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


@dataclass(frozen=True, slots=True)
class Limiters:
    client: KeyedRateLimiter
    token: KeyedRateLimiter

    @classmethod
    def from_limits(cls, limits: ServiceLimits) -> Limiters:
        r = limits.rates
        return cls(
            KeyedRateLimiter(
                rate_per_s=r.per_client_per_s,
                burst=r.per_client_burst,
                max_keys=r.max_tracked_keys,
                what="client",
            ),
            KeyedRateLimiter(
                rate_per_s=r.per_token_per_s,
                burst=r.per_token_burst,
                max_keys=r.max_tracked_keys,
                what="token",
            ),
        )


def _operator(role: Role) -> Callable[[Request], OperatorClaims]:
    """A dependency: a verified operator token whose role includes ``role``."""

    def check(request: Request) -> OperatorClaims:
        state = request.app.state
        state.admit_client(request)
        claims: OperatorClaims = state.service.authenticate_operator(
            bearer_token(request), now=state.clock(), client=client_address(request)
        )
        if not claims.role.allows(role):
            raise AccessDeniedError(f"{claims.operator} has role {claims.role}; {role} is needed")
        return claims

    return check


AuditorClaims = Annotated[OperatorClaims, Depends(_operator(Role.AUDITOR))]
OperatorRoleClaims = Annotated[OperatorClaims, Depends(_operator(Role.OPERATOR))]

_REFUSAL_ACTIONS = {"/v1/enroll": ENROLL_REFUSED, "/v1/renew": RENEW_REFUSED}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 413, 429, 503)
}


def create_app(
    service: ProvisioningService,
    *,
    clock: Clock,
    limits: ServiceLimits | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The ASGI application. ``clock`` gives UTC ``now`` for every decision."""
    limits = limits or service.limits
    limiters = Limiters.from_limits(limits)
    app = FastAPI(
        title="idmz provisioning",
        version="1",
        description="Device enrollment, renewal (mutual TLS), EST (RFC 7030) and operator API.",
        responses=_RESPONSES,
        # The interactive pages load scripts from a CDN; plants are often offline and a
        # security service should not pull code into an operator's browser. /openapi.json stays.
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(TokenError)
    async def _token(request: Request, exc: TokenError) -> JSONResponse:
        est = request.url.path.startswith(EST_PREFIX)
        challenge = EST_CHALLENGE if est else "Bearer"
        return _error(401, "unauthorized", exc.public, {"WWW-Authenticate": challenge})

    @app.exception_handler(DeviceStateError)
    async def _state(_: Request, exc: DeviceStateError) -> JSONResponse:
        return _error(403, "forbidden", exc.public)

    @app.exception_handler(RequestError)
    async def _request(_: Request, exc: RequestError) -> JSONResponse:
        return _error(http_status_for(exc), "bad_request", exc.public)

    @app.exception_handler(RefusedError)
    async def _refused(_: Request, exc: RefusedError) -> JSONResponse:
        return _error(http_status_for(exc), "bad_request", exc.public)

    @app.exception_handler(AccessDeniedError)
    async def _denied(_: Request, exc: AccessDeniedError) -> JSONResponse:
        return _error(
            http_status_for(exc), "forbidden", "this token's role does not allow this action"
        )

    @app.exception_handler(UsageError)
    async def _usage(_: Request, exc: UsageError) -> JSONResponse:
        return _error(http_status_for(exc), "bad_request", str(exc))

    @app.exception_handler(RateLimitedError)
    async def _rate(_: Request, exc: RateLimitedError) -> JSONResponse:
        return _error(
            http_status_for(exc),
            "rate_limited",
            "too many requests; retry later",
            {"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(UpstreamError)
    async def _upstream(_: Request, exc: UpstreamError) -> JSONResponse:
        _log.error("upstream failure: %s", exc)
        return _error(
            http_status_for(exc),
            "unavailable",
            "the service cannot complete this request now; retry later",
            {"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        action = _REFUSAL_ACTIONS.get(request.url.path)
        if action is not None:  # a refused enrollment or renewal is audited even when malformed
            refusal = RequestError("the request body does not match the API schema", code="schema")
            await run_in_threadpool(
                service.record_refusal, action, refusal, client=client_address(request), via="api"
            )
        return _error(
            422, "invalid_request", "the request body or parameters do not match the API schema"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "not_found", 405: "method_not_allowed"}
        return _error(
            exc.status_code,
            names.get(exc.status_code, "error"),
            str(exc.detail),
            getattr(exc, "headers", None),
        )

    def admit_client(request: Request) -> str:
        address = client_address(request)
        limiters.client.admit(address, now_s=monotonic())
        return address

    app.state.service = service
    app.state.clock = clock
    app.state.admit_client = admit_client

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/ca", tags=["enrollment"])
    def ca() -> CAResponse:
        """The CA chain. Clients check ``root_sha256`` against their pinned fingerprint
        before trusting it (no trust on first use)."""
        return CAResponse(
            root=pem(service.root).decode(),
            chain=pem(service.issuing).decode(),
            root_sha256=fingerprint_sha256(service.root),
        )

    # The two hot endpoints are async with exactly one hop to the thread pool (the blocking
    # service call) and answer with pre-serialized JSON: FastAPI would otherwise hop to threads
    # for the sync endpoint and again to validate the response model (ADR 0045).
    @app.post(
        "/v1/enroll", status_code=201, tags=["enrollment"], response_model=CertificateResponse
    )
    async def enroll(body: EnrollRequest, request: Request) -> Response:
        """First enrollment with a one-time token (``Authorization: Bearer``)."""
        client = admit_client(request)
        try:
            token = bearer_token(request)
        except TokenError as exc:
            await run_in_threadpool(
                service.record_refusal,
                ENROLL_REFUSED,
                exc,
                client=client,
                via="enroll",
            )
            raise
        limiters.token.admit(token_digest(token), now_s=monotonic())
        result = await run_in_threadpool(
            enroll_with_csr,
            service,
            token,
            body.csr.encode(),
            now=clock(),
            client=client,
            via="enroll",
            requested_identity=body.identity,
        )
        return certificate_json(result)

    @app.post("/v1/renew", status_code=201, tags=["enrollment"], response_model=CertificateResponse)
    async def renew(body: RenewRequest, request: Request) -> Response:
        """Renewal authenticated by the current certificate over mutual TLS."""
        client = admit_client(request)
        result = await run_in_threadpool(
            renew_with_csr,
            service,
            peer_certificate_der(request),
            body.csr.encode(),
            now=clock(),
            client=client,
            via="renew",
        )
        return certificate_json(result)

    @app.get("/v1/devices", tags=["operator"])
    def devices(_: AuditorClaims) -> list[DeviceOut]:
        return [
            DeviceOut(path=d.path, status=d.status, device_class=d.device_class, asset=d.asset)
            for d in service.registry.devices()
        ]

    @app.post("/v1/devices", status_code=201, tags=["operator"])
    def add_device(body: DeviceIn, who: OperatorRoleClaims) -> DeviceOut:
        service.add_device(
            body.path,
            operator=who.operator,
            now=clock(),
            device_class=body.device_class,
            asset=body.asset,
        )
        d = service.registry.device(body.path)
        if d is None:  # added in its own transaction just above: the registry lost it
            raise UpstreamError(f"the registry does not return device {body.path} just added")
        return DeviceOut(path=d.path, status=d.status, device_class=d.device_class, asset=d.asset)

    @app.post("/v1/groups", status_code=201, tags=["operator"])
    def add_group(body: GroupIn, who: OperatorRoleClaims) -> GroupIn:
        service.add_group(
            body.prefix,
            operator=who.operator,
            now=clock(),
            device_class=body.device_class,
            validity_days=body.validity_days,
            renewal_grace_days=body.renewal_grace_days,
        )
        return body

    @app.post("/v1/tokens", status_code=201, tags=["operator"])
    def add_token(body: TokenIn, who: OperatorRoleClaims) -> TokenOut:
        token, claims = service.create_enrollment_token(
            operator=who.operator,
            now=clock(),
            device=body.device,
            group=body.group,
            ttl_s=body.ttl_s,
        )
        return TokenOut(token=token, token_id=claims.token_id, expires_at=claims.expires_at)

    @app.post("/v1/revocations", tags=["operator"])
    def revoke(body: RevokeIn, who: OperatorRoleClaims) -> RevokeOut:
        notice = service.revoke_device(
            body.path, operator=who.operator, now=clock(), reason=body.reason
        )
        return RevokeOut(
            device=notice.device, serials=list(notice.serials), crl_number=notice.crl_number
        )

    @app.get("/v1/expiry", tags=["operator"])
    def expiry(_: AuditorClaims) -> dict[str, Any]:
        report = scan_expiry(
            service.registry,
            now=clock(),
            alert_days=limits.expiry.alert_days,
            issuing_not_after=service.issuing.not_valid_after_utc,
            device_validity=service.max_device_validity,
        )
        return report.as_json()

    from provisioning.est import add_est_routes  # the EST routes share the error handlers

    add_est_routes(
        app, service, clock=clock, admit_client=admit_client, limiters=limiters, monotonic=monotonic
    )
    return app


def wrap(app: FastAPI, limits: ServiceLimits) -> ASGIApp:
    """The app behind the body limit (outermost, so oversized bodies never reach a route)."""
    return BodyLimit(app, limits.http.max_body_bytes)
