"""``POST /v1/enroll`` served below FastAPI (ADR 0140): the hot route of a power-up without the
per-request machinery of the framework (middleware stack, router scan, dependency solving,
exception-telemetry and exit-stack layers), answering exactly as the FastAPI route does.

Only that path and method are taken here; every other request, ``GET /v1/enroll`` and
``/v1/enroll/`` included, goes to the application behind (`provisioning.http.app.wrap`). What
is the same, by construction rather than by copy:

- the body limit: the declared ``Content-Length`` and the streamed bytes against
  ``max_body_bytes``, the same 413 (`provisioning.bodylimit`), before anything is parsed;
- the body as FastAPI reads it (strict content type): empty -> missing, a content type that is
  not ``application/json`` or ``application/*+json`` -> the raw bytes (422), not JSON -> 422,
  not decodable at all -> 400 ``There was an error parsing the body``; then `EnrollRequest`
  validated as FastAPI validates a single body model;
- the route itself: the FastAPI endpoint function `provisioning.http.enroll.enroll` is called
  with the same arguments (client rate limit, audited token refusal, token rate limit, the
  issuance gate and its 429 appointment, one hop to the thread pool);
- every error through the exception handlers registered on the application
  (`provisioning.http.errors`), found the way Starlette finds them; anything unhandled is a
  plain-text 500 and is re-raised for the server to log, as Starlette's outermost middleware
  does.
"""

from __future__ import annotations

import email.message
import inspect
import json
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from provisioning.bodylimit import declared_too_large, too_large
from provisioning.http import enroll as routes
from provisioning.http.deps import context_of
from provisioning.schemas import EnrollRequest

PATH = "/v1/enroll"
_MISSING = object()


class _OverLimitError(Exception):
    pass


class EnrollRoute:
    """An ASGI application: ``POST /v1/enroll`` here, everything else to ``behind``."""

    def __init__(self, app: FastAPI, behind: ASGIApp, max_body_bytes: int) -> None:
        self.app = app  # its context and its exception handlers
        self.behind = behind
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.behind(scope, receive, send)
            return
        if declared_too_large(scope, self.max):
            await too_large(send)
            return
        scope["app"] = self.app  # as Starlette sets it: the handlers find the context there
        request = Request(scope, receive)
        try:
            try:
                body = await self._body(receive)
            except _OverLimitError:
                await too_large(send)
                return
            except Exception as exc:  # as FastAPI: any read failure is a 400
                raise HTTPException(400, "There was an error parsing the body") from exc
            parsed = _parsed(body, request.headers.get("content-type"))
            response = await routes.enroll(_validated(parsed), request, context_of(request))
        except Exception as exc:  # noqa: BLE001 - translated by the app's handler, or a 500
            response = await self._translated(request, exc, send)
        await response(scope, receive, send)

    async def _translated(self, request: Request, exc: Exception, send: Send) -> Response:
        """The answer of the handler Starlette would pick (the first class of the exception's
        MRO registered on the app). Starlette handles errors at two levels, the route's and the
        application's, with the same handlers: an error raised by a handler gets one more
        translation. Past that, or without a handler, a plain 500 is sent and the error
        re-raised for the server to log, as Starlette's outermost middleware does."""
        handlers = self.app.exception_handlers
        for _level in ("route", "application"):
            handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
            if handler is None:
                break
            try:
                answer = handler(request, exc)  # provisioning.http.errors: all async
                response: Response = await answer if inspect.isawaitable(answer) else answer
            except Exception as again:  # noqa: BLE001 - translated once more, as Starlette does
                exc = again
            else:
                return response
        await PlainTextResponse("Internal Server Error", 500)(request.scope, request.receive, send)
        raise exc

    async def _body(self, receive: Receive) -> bytes:
        """The whole body; `_OverLimitError` as soon as it is over the limit (unread rest)."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client disconnected before the body was complete")
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max:
                raise _OverLimitError
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _parsed(body: bytes, content_type: str | None) -> Any:
    """What FastAPI makes of a body with a strict content type: `_MISSING`, the JSON value, or
    the bytes themselves (which no model accepts)."""
    if not body:
        return _MISSING
    if not content_type:
        return body
    if content_type != "application/json":
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        if message.get_content_maintype() != "application" or not (
            subtype == "json" or subtype.endswith("+json")
        ):
            return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([_error("json_invalid", ("body", exc.pos))]) from exc
    except Exception as exc:  # as FastAPI: undecodable is a 400, not a 422
        raise HTTPException(400, "There was an error parsing the body") from exc


def _validated(value: Any) -> EnrollRequest:
    if value is _MISSING:
        raise RequestValidationError([_error("missing", ("body",))])
    try:
        return EnrollRequest.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _error(kind: str, loc: tuple[str | int, ...]) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": kind, "input": None}


__all__ = ["EnrollRoute"]
