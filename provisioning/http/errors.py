"""Errors into HTTP answers. Refusals get a generic message (the precise reason is in the audit
log); the status comes from the error's bedrock category (`bedrock.errors.http_status_for`)
except where the HTTP meaning is narrower than the category (401 asks for credentials):

==========================  ======  =========================================
error                       status  body ``error``
==========================  ======  =========================================
`TokenError`                401     ``unauthorized`` (+ ``WWW-Authenticate``)
`DeviceStateError`          403     ``forbidden``
`AccessDeniedError`         403     ``forbidden``
`RequestError`              400     ``bad_request``
`UsageError` (operator)     400     ``bad_request`` (operators see the reason)
body over the limit         413     ``too_large`` (`provisioning.bodylimit`)
`RateLimitedError`          429     ``rate_limited`` (+ ``Retry-After``)
`UpstreamError`             503     ``unavailable``
schema mismatch             422     ``invalid_request`` (audited on enroll/renew, after
                                    the client's rate limit: else 429)
unknown route               404     ``not_found``
==========================  ======  =========================================

Every body is ``{"error": ..., "detail": ...}``. A refused token on an EST route is challenged
with HTTP Basic (RFC 7030 section 3.2.3), elsewhere with Bearer.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bedrock.errors import http_status_for
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
from provisioning.http.deps import context_of
from provisioning.http.est import EST_CHALLENGE, EST_PREFIX
from provisioning.service import ENROLL_REFUSED, RENEW_REFUSED

_log = logging.getLogger("provisioning.api")
# A malformed enrollment or renewal is still a refused one, and audited as such.
_REFUSAL_ACTIONS = {"/v1/enroll": ENROLL_REFUSED, "/v1/renew": RENEW_REFUSED}
_HTTP_NAMES = {404: "not_found", 405: "method_not_allowed"}


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


async def _token(request: Request, exc: TokenError) -> JSONResponse:
    est = request.url.path.startswith(EST_PREFIX)
    challenge = EST_CHALLENGE if est else "Bearer"
    return error_response(401, "unauthorized", exc.public, {"WWW-Authenticate": challenge})


async def _state(_: Request, exc: DeviceStateError) -> JSONResponse:
    return error_response(403, "forbidden", exc.public)


async def _bad_request(_: Request, exc: RefusedError) -> JSONResponse:
    """`RequestError` and any other refusal: the public reason, the category's status."""
    return error_response(http_status_for(exc), "bad_request", exc.public)


async def _denied(_: Request, exc: AccessDeniedError) -> JSONResponse:
    return error_response(
        http_status_for(exc), "forbidden", "this token's role does not allow this action"
    )


async def _usage(_: Request, exc: UsageError) -> JSONResponse:
    return error_response(http_status_for(exc), "bad_request", str(exc))


async def _rate(_: Request, exc: RateLimitedError) -> JSONResponse:
    return error_response(
        http_status_for(exc),
        "rate_limited",
        "too many requests; retry later",
        {"Retry-After": str(exc.retry_after_s)},
    )


async def _upstream(_: Request, exc: UpstreamError) -> JSONResponse:
    _log.error("upstream failure: %s", exc)
    return error_response(
        http_status_for(exc),
        "unavailable",
        "the service cannot complete this request now; retry later",
        {"Retry-After": "5"},
    )


async def _validation(request: Request, _: RequestValidationError) -> JSONResponse:
    action = _REFUSAL_ACTIONS.get(request.url.path)
    if action is not None:  # a refused enrollment or renewal is audited even when malformed ...
        context = context_of(request)
        try:  # ... once the client's rate limit admitted it, as the route would (ADR 0044)
            client = context.admit_client(request)
        except RateLimitedError as exc:
            return await _rate(request, exc)
        refusal = RequestError("the request body does not match the API schema", code="schema")
        await context.record_refusal(action, refusal, client=client, via="api")
    return error_response(
        422, "invalid_request", "the request body or parameters do not match the API schema"
    )


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(
        exc.status_code,
        _HTTP_NAMES.get(exc.status_code, "error"),
        str(exc.detail),
        getattr(exc, "headers", None),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the translations above on ``app`` (the most specific class wins)."""
    handlers = (
        (TokenError, _token),
        (DeviceStateError, _state),
        (RefusedError, _bad_request),
        (AccessDeniedError, _denied),
        (UsageError, _usage),
        (RateLimitedError, _rate),
        (UpstreamError, _upstream),
        (RequestValidationError, _validation),
        (StarletteHTTPException, _http),
    )
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)  # type: ignore[arg-type]
