"""What the routes receive (ADR 0090): one typed `HttpContext` (the composed services, the
clock, the rate limiters) set on the application when `provisioning.http.app.create_app` builds
it, and handed to each route by FastAPI's ``Depends``; plus what a request itself says (client
address, TLS peer certificate, bearer token, operator role).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, ParamSpec, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from provisioning.config import ServiceLimits
from provisioning.errors import AccessDeniedError, RefusedError, TokenError
from provisioning.ratelimit import KeyedRateLimiter
from provisioning.service import ENROLL_REFUSED
from provisioning.services import Services
from provisioning.shedding import EnrollmentGate
from provisioning.tokens import OperatorClaims, Role, token_digest

Clock = Callable[[], datetime]
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limiters:
    client: KeyedRateLimiter
    token: KeyedRateLimiter
    issuance: EnrollmentGate  # enrollments and renewals in this process at once

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
            EnrollmentGate(
                max_in_flight=limits.shedding.max_in_flight,
                min_rate_per_s=limits.shedding.min_rate_per_s,
                initial_rate_per_s=limits.shedding.initial_rate_per_s,
                max_retry_after_s=limits.shedding.max_retry_after_s,
            ),
        )


@dataclass(frozen=True, slots=True)
class HttpContext:
    """Everything a route acts with; one per application."""

    services: Services
    clock: Clock
    limits: ServiceLimits
    limiters: Limiters
    monotonic: Callable[[], float]

    def admit_client(self, request: Request) -> str:
        """The client's address, after its rate limit admitted the request (else 429)."""
        address = client_address(request)
        self.limiters.client.admit(address, now_s=self.monotonic())
        return address

    def admit_token(self, token: str) -> None:
        """The per-token rate limit (by digest: the token itself is never kept)."""
        self.limiters.token.admit(token_digest(token), now_s=self.monotonic())

    async def enrollment_token(
        self, request: Request, read: Callable[[Request], str], *, client: str, via: str
    ) -> str:
        """The enrollment token ``read`` finds in ``request``, admitted by its rate limit; a
        missing or malformed one is refused, audited as a refused enrollment."""
        try:
            token = read(request)
        except TokenError as exc:
            await self.record_refusal(ENROLL_REFUSED, exc, client=client, via=via)
            raise
        self.admit_token(token)
        return token

    async def issue(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking enrollment or renewal in the thread pool (one hop), if the
        issuance gate admits it; else 429 with an appointment (ADR 0137)."""
        gate = self.limiters.issuance
        gate.enter(now_s=self.monotonic())
        try:
            return await run_in_threadpool(call, *args, **kwargs)
        finally:
            gate.leave(now_s=self.monotonic())

    async def record_refusal(
        self, action: str, exc: RefusedError, *, client: str, via: str
    ) -> None:
        """Audit a refusal from an ``async`` handler: the durable append waits for an fsync,
        which must not stall every other request on this event loop."""
        await run_in_threadpool(
            self.services.enrollment.record_refusal, action, exc, client=client, via=via
        )


def install(app: FastAPI, context: HttpContext) -> None:
    """Give ``app`` its context, once, when it is created."""
    app.state.provisioning = context


def context_of(request: Request) -> HttpContext:
    """The context `install` gave the application serving ``request``."""
    context = request.app.state.provisioning
    if not isinstance(context, HttpContext):
        raise TypeError("the provisioning application was not built by create_app")
    return context


async def provide_context(request: Request) -> HttpContext:
    # async: FastAPI runs a sync dependency in the thread pool, an extra hop per request
    return context_of(request)


Context = Annotated[HttpContext, Depends(provide_context)]


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


def _operator(role: Role) -> Callable[[Request, HttpContext], OperatorClaims]:
    """A dependency: a verified operator token whose role includes ``role``."""

    def check(request: Request, context: Context) -> OperatorClaims:
        context.admit_client(request)
        claims = context.services.operator_tokens.authenticate_operator(
            bearer_token(request), now=context.clock(), client=client_address(request)
        )
        if not claims.role.allows(role):
            raise AccessDeniedError(f"{claims.operator} has role {claims.role}; {role} is needed")
        return claims

    return check


AuditorClaims = Annotated[OperatorClaims, Depends(_operator(Role.AUDITOR))]
OperatorRoleClaims = Annotated[OperatorClaims, Depends(_operator(Role.OPERATOR))]
