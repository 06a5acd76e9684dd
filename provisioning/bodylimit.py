"""The request body limit, as ASGI middleware outside FastAPI: a body over ``max_body_bytes``
is answered with 413 whether its length is declared (``Content-Length``) or streamed (chunked),
before any route parses it. The enrollment route below FastAPI (`provisioning.http.enroll_asgi`)
applies the same declared-length check and answers the same 413."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """Refuse bodies over ``max_body_bytes`` with 413, whether declared or streamed."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max):
            await too_large(send)
            return
        seen = 0
        exceeded = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns any error while reading the body into a 400; once the limit was
            # crossed, whatever the app answers is replaced by the 413.
            nonlocal answered
            if exceeded:
                if not answered and message["type"] == "http.response.start":
                    answered = True
                    await too_large(send)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLargeError:
            if not answered:
                answered = True
                await too_large(send)


def declared_too_large(scope: Scope, max_body_bytes: int) -> bool:
    """Whether a ``Content-Length`` of the request is malformed or over ``max_body_bytes``."""
    for name, value in scope.get("headers", []):
        if name == b"content-length" and (not value.isdigit() or int(value) > max_body_bytes):
            return True
    return False


async def too_large(send: Send) -> None:
    """The 413 answer (the connection is closed after it: the rest of the body is unread)."""
    body = b'{"error":"too_large","detail":"the request body is larger than this service accepts"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
