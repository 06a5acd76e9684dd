"""``POST /v1/enroll`` below FastAPI (ADR 0140) answers every attack exactly as the FastAPI
route does: each request is sent, as raw ASGI messages, to the application as served (`wrap`)
and to the same FastAPI application behind only the body limit (the route before ADR 0140),
over the same services. Status, headers and body must be equal, the audit records they append
must be equal, and a refused request must leave the CA ledger and the registry unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from provisioning.bodylimit import BodyLimit
from provisioning.http.app import create_app, wrap
from tests.provisioning.conftest import DEVICE, Env, csr_for, new_key

CLIENT = ("10.9.8.7", 50123)
MAX_BODY = 64 * 1024  # HttpLimits' default, the one the env's service runs with
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raised: str | None


@dataclass(frozen=True)
class Raw:
    method: str = "POST"
    path: str = "/v1/enroll"
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    chunks: tuple[bytes, ...] = (b"",)
    disconnect: bool = False  # the client goes away before the body is complete


def call(app: App, request: Raw) -> Answer:
    """One request as uvicorn hands it to an ASGI application; what the app sent back."""

    async def run() -> Answer:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "https",
            "path": request.path,
            "raw_path": request.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in request.headers],
            "client": CLIENT,
            "server": ("127.0.0.1", 8443),
        }
        last = len(request.chunks) - 1
        inbox: list[dict[str, Any]] = [
            {"type": "http.request", "body": c, "more_body": i < last or request.disconnect}
            for i, c in enumerate(request.chunks)
        ]

        async def receive() -> dict[str, Any]:
            return inbox.pop(0) if inbox else {"type": "http.disconnect"}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        raised = None
        try:
            await app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - the server logs it; compared by type
            raised = type(exc).__name__
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return Answer(start["status"], list(start["headers"]), body, raised)

    return asyncio.run(run())


@dataclass
class Both:
    env: Env
    served: App  # as `idmz provisioning serve` composes it
    framework: App  # the FastAPI route behind the body limit only

    def audit_seen(self) -> int:
        return len(self.env.audit_records())

    def new_audit(self, since: int) -> list[tuple[Any, ...]]:
        keys = ("actor", "action", "resource", "outcome", "reason")
        return [tuple(r.get(k) for k in keys) for r in self.env.audit_records()[since:]]

    def compare(self, request: Raw) -> tuple[Answer, list[tuple[Any, ...]]]:
        """Send ``request`` to both; they must answer and audit alike, and change nothing.
        The answer and the records (actor, action, resource, outcome, reason) each appended."""
        answers, audits = [], []
        for app in (self.framework, self.served):
            before, seen = self.env.snapshot(), self.audit_seen()
            answers.append(call(app, request))
            audits.append(self.new_audit(seen))
            assert self.env.snapshot() == before, "a refused request changed the ledger/registry"
        assert answers[1] == answers[0]
        assert audits[1] == audits[0]
        return answers[1], audits[1]


@pytest.fixture
def both(env: Env) -> Iterator[Both]:
    services = env.services
    limits = services.enrollment.limits
    assert limits.http.max_body_bytes == MAX_BODY
    served = wrap(create_app(services, clock=env.now, limits=limits), limits)
    framework = BodyLimit(create_app(services, clock=env.now, limits=limits), MAX_BODY)
    env.add_device()
    yield Both(env, served, framework)


def bearer(
    token: str, content_type: str | None = "application/json"
) -> tuple[tuple[str, str], ...]:
    headers = (("authorization", f"Bearer {token}"),)
    return headers + ((("content-type", content_type),) if content_type else ())


def valid_body() -> bytes:
    return json.dumps({"csr": csr_for(new_key()).decode()}).encode()


def error_of(answer: Answer) -> str:
    return str(json.loads(answer.body)["error"])


# -- body limit ---------------------------------------------------------------------------------


def test_declared_oversized_body_is_413_before_anything_is_read(both: Both) -> None:
    headers = (*bearer(both.env.token()), ("content-length", str(MAX_BODY + 1)))
    answer, audited = both.compare(Raw(headers=headers, chunks=(b"{}",)))
    assert answer.status == 413 and error_of(answer) == "too_large"
    assert audited == []  # 413 is not audited (ADR 0044)


def test_malformed_content_length_is_413(both: Both) -> None:
    headers = (*bearer(both.env.token()), ("content-length", "12, 13"))
    answer, audited = both.compare(Raw(headers=headers, chunks=(b"{}",)))
    assert answer.status == 413 and audited == []


def test_chunked_body_beyond_the_limit_is_413_unaudited(both: Both) -> None:
    chunks = (b"{" + b" " * 16 * 1024,) * 5  # no Content-Length: streamed past the limit
    answer, audited = both.compare(Raw(headers=bearer(both.env.token()), chunks=chunks))
    assert answer.status == 413 and error_of(answer) == "too_large"
    assert audited == []


def test_body_of_exactly_the_limit_is_read_and_judged(both: Both) -> None:
    body = b'{"csr": "x"}'
    body += b" " * (MAX_BODY - len(body))
    answer, _audited = both.compare(
        Raw(headers=bearer(both.env.token()), chunks=(body[:100], body[100:]))
    )
    assert answer.status == 400  # read whole, then the CSR is refused after the token


def test_body_one_byte_over_the_limit_streamed_is_413(both: Both) -> None:
    body = b'{"csr": "x"}'
    body += b" " * (MAX_BODY + 1 - len(body))
    answer, audited = both.compare(
        Raw(headers=bearer(both.env.token()), chunks=(body[:100], body[100:]))
    )
    assert answer.status == 413 and audited == []


def test_client_gone_mid_body_gets_the_parse_error_and_nothing_is_audited(both: Both) -> None:
    answer, audited = both.compare(
        Raw(headers=bearer(both.env.token()), chunks=(b'{"csr": "',), disconnect=True)
    )
    assert answer.status == 400 and audited == []


# -- content type and strict JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"],
    ids=["none", "empty", "text", "form", "multipart"],
)
def test_json_body_under_a_non_json_content_type_is_422_and_audited(
    both: Both, content_type: str | None
) -> None:
    request = Raw(headers=bearer(both.env.token(), content_type), chunks=(valid_body(),))
    answer, audited = both.compare(request)
    assert answer.status == 422 and error_of(answer) == "invalid_request"
    assert [a[1] for a in audited] == ["provisioning.enroll.refused"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.idmz+json"],
)
def test_json_content_type_variants_are_read_as_json(both: Both, content_type: str) -> None:
    # a CSR that is not one: read as JSON, validated, then refused after the token (400)
    request = Raw(headers=bearer(both.env.token(), content_type), chunks=(b'{"csr": "x"}',))
    answer, audited = both.compare(request)
    assert answer.status == 400 and [a[1] for a in audited] == ["provisioning.enroll.refused"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"csr": "x"} trailing',
        b'{"csr": NaN}',
        b'{"csr": Infinity}',
        b'{"csr": 1e400}',
        b'{"csr": 5}',
        b'{"csr": "\\ud800"}',
        b"\xfe\xff\x00{",
        b'{"csr": null}',
        b'{"csr": ["x"]}',
        b"[]",
        b'"csr"',
        b"{}",
        b'{"identity": "x"}',
        b'{"csr": "' + b"A" * 24 * 1024 + b'0"}',
        b'{"csr": "x", "identity": "' + b"i" * 401 + b'"}',
    ],
    ids=[
        "empty",
        "unterminated",
        "trailing-garbage",
        "nan",
        "infinity",
        "huge-number",
        "csr-number",
        "csr-lone-surrogate",
        "utf16-bom-not-json",
        "csr-null",
        "csr-list",
        "array",
        "string",
        "no-csr",
        "identity-only",
        "csr-over-max",
        "identity-over-max",
    ],
)
def test_body_that_is_not_the_schema_is_422_and_audited(both: Both, body: bytes) -> None:
    answer, audited = both.compare(Raw(headers=bearer(both.env.token()), chunks=(body,)))
    assert answer.status == 422 and error_of(answer) == "invalid_request"
    assert [a[1] for a in audited] == ["provisioning.enroll.refused"]


@pytest.mark.parametrize(
    "body",
    [b'{"csr": "\xff"}', b"[" * 100_000 + b"]" * 100_000],
    ids=["not-utf8", "nesting-bomb-over-the-limit"],
)
def test_body_that_cannot_be_decoded_is_400_or_413_unaudited(both: Both, body: bytes) -> None:
    answer, audited = both.compare(Raw(headers=bearer(both.env.token()), chunks=(body,)))
    assert answer.status in (400, 413)
    assert audited == []


def test_nesting_bomb_within_the_limit_is_400_unaudited(both: Both) -> None:
    body = b"[" * 30_000 + b"]" * 30_000
    answer, audited = both.compare(Raw(headers=bearer(both.env.token()), chunks=(body,)))
    assert answer.status in (400, 422)
    assert answer.status == 422 or audited == []


def test_duplicate_keys_the_last_one_decides_in_both(both: Both) -> None:
    """A parser taking the first duplicate would check another request than the one issued:
    the checked value is the last one, as before; the token survives the refused CSR."""
    valid = csr_for(new_key()).decode()
    body = b'{"csr": %s, "csr": "not a csr"}' % json.dumps(valid).encode()
    token = both.env.token()
    answer, _audited = both.compare(Raw(headers=bearer(token), chunks=(body,)))
    assert answer.status == 400 and error_of(answer) == "bad_request"
    again = call(both.served, Raw(headers=bearer(token), chunks=(valid_body(),)))
    assert again.status == 201  # the refusals spent nothing


# -- token ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc"],
    ids=["none", "empty", "bearer-only", "bearer-blank", "basic", "other-scheme"],
)
def test_missing_token_is_401_with_a_bearer_challenge_and_audited(
    both: Both, authorization: str | None
) -> None:
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    if authorization is not None:
        headers += (("authorization", authorization),)
    answer, audited = both.compare(Raw(headers=headers, chunks=(valid_body(),)))
    assert answer.status == 401 and (b"www-authenticate", b"Bearer") in answer.headers
    assert [a[4] for a in audited] == ["no bearer token was presented"]


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "x" * 5000],
    ids=["garbage", "three-parts", "alg-none", "oversized"],
)
def test_invalid_token_is_401_and_audited(both: Both, token: str) -> None:
    answer, audited = both.compare(Raw(headers=bearer(token), chunks=(valid_body(),)))
    assert answer.status == 401 and error_of(answer) == "unauthorized"
    assert [a[1] for a in audited] == ["provisioning.enroll.refused"]


def test_token_of_another_device_is_refused_alike(both: Both) -> None:
    other = "acme/plant1/press/line1/cell2/press-99"
    both.env.add_device(other)
    body = json.dumps({"csr": csr_for(new_key()).decode(), "identity": DEVICE}).encode()
    answer, _audited = both.compare(Raw(headers=bearer(both.env.token(other)), chunks=(body,)))
    assert answer.status == 401


def test_replayed_token_is_refused_alike(both: Both) -> None:
    token = both.env.token()
    first = call(both.served, Raw(headers=bearer(token), chunks=(valid_body(),)))
    assert first.status == 201
    answer, _audited = both.compare(Raw(headers=bearer(token), chunks=(valid_body(),)))
    assert answer.status == 401


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/enroll"), ("PUT", "/v1/enroll"), ("DELETE", "/v1/enroll"),
     ("POST", "/v1/enroll/"), ("POST", "/v1/enrol"), ("POST", "/v1/enroll/x")],
)  # fmt: skip
def test_other_methods_and_paths_are_answered_by_the_application(
    both: Both, method: str, path: str
) -> None:
    answer, _audited = both.compare(
        Raw(method=method, path=path, headers=bearer(both.env.token()), chunks=(b"{}",))
    )
    assert answer.status in (307, 404, 405)


def test_enrollment_is_answered_below_fastapi_and_the_rest_by_it(env: Env) -> None:
    limits = env.services.enrollment.limits
    app = create_app(env.services, clock=env.now, limits=limits)
    through: list[str] = []

    @app.middleware("http")
    async def record(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        through.append(f"{request.method} {request.url.path}")
        return await call_next(request)

    served = wrap(app, limits)
    env.add_device()
    ok = call(served, Raw(headers=bearer(env.token()), chunks=(valid_body(),)))
    refused = call(served, Raw(headers=bearer("garbage"), chunks=(valid_body(),)))
    other = call(served, Raw(method="GET"))
    assert (ok.status, refused.status, other.status) == (201, 401, 405)
    assert through == ["GET /v1/enroll"]


# -- success --------------------------------------------------------------------------------


def test_enrollment_answers_alike_apart_from_the_certificate(both: Both) -> None:
    other = "acme/plant1/press/line1/cell2/press-98"
    both.env.add_device(other)
    answers = [
        call(app, Raw(headers=bearer(both.env.token(path)), chunks=(valid_body(),)))
        for app, path in ((both.framework, DEVICE), (both.served, other))
    ]
    assert [a.status for a in answers] == [201, 201]
    assert [a.raised for a in answers] == [None, None]
    assert [[n for n, _ in a.headers] for a in answers] == [
        [b"content-length", b"content-type"]
    ] * 2
    assert [dict(a.headers)[b"content-type"] for a in answers] == [b"application/json"] * 2
    bodies = [json.loads(a.body) for a in answers]
    assert [list(b) for b in bodies] == [list(bodies[0])] * 2
    assert [b["identity"] for b in bodies] == [DEVICE, other]
    devices = dict(both.env.snapshot().devices)
    assert devices[DEVICE] == devices[other] == "enrolled"


def test_rate_limited_client_is_429_with_retry_after_unaudited(env: Env) -> None:
    from provisioning.config import RateLimits, ServiceLimits

    limits = ServiceLimits(rates=RateLimits(per_client_per_s=0.01, per_client_burst=1))
    env.add_device()
    apps = [
        wrap(create_app(env.services, clock=env.now, limits=limits), limits),
        BodyLimit(create_app(env.services, clock=env.now, limits=limits), MAX_BODY),
    ]
    answers = []
    for app in apps:
        token = env.token()
        first = call(app, Raw(headers=bearer("garbage"), chunks=(valid_body(),)))
        seen = len(env.audit_records())
        answers.append(call(app, Raw(headers=bearer(token), chunks=(valid_body(),))))
        assert first.status == 401 and len(env.audit_records()) == seen
    assert answers[0] == answers[1]
    assert answers[0].status == 429 and dict(answers[0].headers)[b"retry-after"] == b"100"


def test_issuance_gate_full_is_429_with_an_appointment(env: Env) -> None:
    from provisioning.config import RateLimits, ServiceLimits, SheddingLimits

    limits = ServiceLimits(
        rates=RateLimits(per_client_per_s=1000, per_client_burst=1000),
        shedding=SheddingLimits(max_in_flight=1),
    )
    env.add_device()
    answers = []
    for build in (
        lambda app: wrap(app, limits),
        lambda app: BodyLimit(app, MAX_BODY),
    ):
        app: FastAPI = create_app(env.services, clock=env.now, limits=limits)
        app.state.provisioning.limiters.issuance.enter(now_s=0.0)  # one inside, never leaving
        answers.append(call(build(app), Raw(headers=bearer(env.token()), chunks=(valid_body(),))))
    assert answers[0] == answers[1]
    assert answers[0].status == 429 and b"retry-after" in dict(answers[0].headers)


# -- the audit log unavailable ------------------------------------------------------------------


def test_refusal_that_cannot_be_audited_fails_alike(both: Both) -> None:
    """No refusal may be answered as if it had been recorded: a missing token whose refusal
    cannot be appended is a 503; so is a schema mismatch, whose error handler fails while
    auditing and whose failure Starlette translates once more (the fast route must too)."""
    token = both.env.token()
    both.env.audit.close()
    answers = []
    for app in (both.framework, both.served):
        missing = call(app, Raw(chunks=(valid_body(),)))
        malformed = call(app, Raw(headers=bearer(token), chunks=(b"{}",)))
        answers.append((missing, malformed))
    assert answers[1] == answers[0]
    missing, malformed = answers[1]
    assert missing.status == 503 and error_of(missing) == "unavailable"
    assert malformed.status == 503 and error_of(malformed) == "unavailable"
    assert (missing.raised, malformed.raised) == (None, None)
