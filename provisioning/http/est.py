"""EST (RFC 7030) over the same service: ``/.well-known/est/cacerts``, ``/simpleenroll`` and
``/simplereenroll``, so that standard EST clients (libest, globalsign/est, curl + openssl)
enroll without idmz code on the device.

* ``GET cacerts`` (4.1): the issuing CA and the root as a certs-only CMS (PKCS#7) structure,
  base64 in one line (``Content-Transfer-Encoding: base64``, RFC 8951 section 3.1). The client checks the root against its pin.
* ``POST simpleenroll`` (4.2): body is a base64 DER PKCS#10 (``application/pkcs10``); the client
  authenticates with the one-time enrollment token, either ``Authorization: Bearer <token>`` or
  HTTP Basic with any user name and the token as the password (3.2.3, for clients that only
  speak Basic). A refused token is challenged with ``WWW-Authenticate: Basic`` (what RFC 7030
  clients answer), not Bearer. The reply (4.2.3) is ``application/pkcs7-mime; smime-type=certs-only`` with the
  new certificate, base64.
* ``POST simplereenroll`` (4.2.2): authenticated by the current certificate over mutual TLS.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from fastapi import APIRouter, Request, Response

from provisioning.errors import RequestError, TokenError
from provisioning.http.deps import Context, HttpContext, peer_certificate_der
from provisioning.http.enroll import enroll_with_csr, renew_with_csr
from provisioning.service import ENROLL_REFUSED, RENEW_REFUSED

PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
EST_PREFIX = "/.well-known/est/"
# RFC 7030 section 3.2.3: EST clients answer an HTTP Basic challenge.
EST_CHALLENGE = 'Basic realm="idmz EST"'
_PKCS10_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/pkcs10": {
                "schema": {"type": "string", "description": "base64 DER PKCS#10"}
            }
        },
    }
}
_PKCS7_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/pkcs7-mime": {"schema": {"type": "string"}}},
        "description": "base64 certs-only CMS",
    }
}


def certs_only(certs: list[Any]) -> bytes:
    """A base64 certs-only CMS SignedData (RFC 7030 section 4.1.3), in one line: RFC 8951
    section 3.1 fixes EST's base64 as RFC 4648 section 4, without line breaks, and clients such
    as strongSwan's ``pki --est`` decode no whitespace."""
    der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
    return base64.b64encode(der)


def certs_response(certs: list[Any], media_type: str = PKCS7_CERTS_ONLY) -> Response:
    """The one shape of every EST certificate answer: base64 certs-only CMS."""
    return Response(
        certs_only(certs),
        media_type=media_type,
        headers={"Content-Transfer-Encoding": "base64"},
    )


def decode_pkcs10(body: bytes) -> bytes:
    """RFC 7030 section 4.2.1: base64 DER. PEM is accepted too (what some clients send)."""
    if body.lstrip().startswith(b"-----BEGIN"):
        return body
    compact = b"".join(body.split())
    if not compact:
        raise RequestError("the EST request body is empty", code="bad-csr")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError("the EST request body is not base64", code="bad-csr") from exc


def est_token(request: Request) -> str:
    """The enrollment token from ``Bearer`` or from the password of HTTP ``Basic``."""
    value = request.headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if scheme.lower() == "basic" and credentials.strip():
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TokenError(
                "HTTP Basic credentials are not base64 UTF-8", code="malformed"
            ) from exc
        _, sep, password = decoded.partition(":")
        if sep and password:
            return password
    raise TokenError(
        "no enrollment token was presented (Bearer, or Basic with the token as password)",
        code="no-token",
    )


async def csr_from_body(
    request: Request, context: HttpContext, action: str, *, client: str
) -> bytes:
    """The PKCS#10 in the request body; an undecodable one is refused, audited as ``action``."""
    body = await request.body()
    try:
        return decode_pkcs10(body)
    except RequestError as exc:
        await context.record_refusal(action, exc, client=client, via="est")
        raise


# Both enrollment routes take a PKCS#10 body and answer certs-only CMS.
_PKCS10_IN_PKCS7_OUT: dict[str, Any] = {
    "openapi_extra": _PKCS10_BODY,
    "responses": _PKCS7_RESPONSE,
    "response_class": Response,
}
router = APIRouter(prefix=EST_PREFIX.rstrip("/"), tags=["est"])


@router.get("/cacerts", responses=_PKCS7_RESPONSE, response_class=Response)
def cacerts(context: Context) -> Response:
    service = context.services.enrollment
    return certs_response([service.issuing, service.root], "application/pkcs7-mime")


@router.post("/simpleenroll", **_PKCS10_IN_PKCS7_OUT)
async def simpleenroll(request: Request, context: Context) -> Response:
    client = context.admit_client(request)
    token = await context.enrollment_token(request, est_token, client=client, via="est")
    csr = await csr_from_body(request, context, ENROLL_REFUSED, client=client)
    result = await context.issue(
        enroll_with_csr,
        context.services.enrollment,
        token,
        csr,
        now=context.clock(),
        client=client,
        via="est",
    )
    return certs_response([result.issued.certificate])


@router.post("/simplereenroll", **_PKCS10_IN_PKCS7_OUT)
async def simplereenroll(request: Request, context: Context) -> Response:
    client = context.admit_client(request)
    csr = await csr_from_body(request, context, RENEW_REFUSED, client=client)
    result = await context.issue(
        renew_with_csr,
        context.services.enrollment,
        peer_certificate_der(request),
        csr,
        now=context.clock(),
        client=client,
        via="est-reenroll",
    )
    return certs_response([result.issued.certificate])
