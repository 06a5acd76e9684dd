"""The provisioning application: the routes of each concern, the error translations and the
context they share, composed once (ADR 0090); and in front of it all the body limit and the
enrollment route below FastAPI (ADR 0140)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from provisioning.bodylimit import BodyLimit
from provisioning.config import ServiceLimits
from provisioning.http import enroll, est, operator
from provisioning.http.deps import Clock, HttpContext, Limiters, install
from provisioning.http.enroll_asgi import EnrollRoute
from provisioning.http.errors import install_error_handlers
from provisioning.schemas import ErrorOut
from provisioning.services import Services

_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 413, 429, 503)
}


def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(
    services: Services,
    *,
    clock: Clock,
    limits: ServiceLimits | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The ASGI application. ``clock`` gives UTC ``now`` for every decision."""
    limits = limits or services.enrollment.limits
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
    install(app, HttpContext(services, clock, limits, Limiters.from_limits(limits), monotonic))
    install_error_handlers(app)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["service"])
    for concern in (enroll, operator, est):
        app.include_router(concern.router)
    return app


def wrap(app: FastAPI, limits: ServiceLimits) -> ASGIApp:
    """The app behind the body limit (outermost, so oversized bodies never reach a route), and
    ``POST /v1/enroll`` answered below FastAPI with the same limit, checks and answers."""
    max_body_bytes = limits.http.max_body_bytes
    return EnrollRoute(app, BodyLimit(app, max_body_bytes), max_body_bytes)
