"""The device identity service: registry, enrollment tokens, enrollment and renewal over HTTPS
and EST (RFC 7030), revocation, air-gapped enrollment and expiry alerts.

The pieces, top down::

    http/                FastAPI, routes by concern (enroll, operator, est), injected context,
                         errors -> HTTP statuses (ADR 0090)
    schemas.py           request/response bodies (the OpenAPI document)
    bodylimit.py         413 for oversized bodies, before any route parses them
    server.py            uvicorn over TLS; the peer certificate goes into the ASGI TLS extension
    services.py          the composed services: enrollment, operator actions, operator tokens
    service.py           the decisions: token -> device -> CSR -> issue -> registry -> audit
    admission.py         what a request may claim: token, identity, device state, validity
    peers.py             who a client certificate is (chain, CRL, profile, renewal grace)
    operations.py        operator actions: devices, groups, tokens, revocation
    operator_tokens.py   operator tokens: authentication and the deny-list
    retirement.py        superseded and never-activated certificates revoked by the service
    recording.py         audit appends that fail closed, refusals and upstream failures
    tokens.py            enrollment and operator JWTs (EdDSA only)
    registry.py          devices, groups, certificates, tokens (SQLite or PostgreSQL)
    expiry.py            expiring certificates grouped by site/area/line
    notify.py            revocation and expiry notifications (webhook, MQTT)
    ratelimit.py         token buckets per client address and per token
    shedding.py          enrollments in flight bounded; 429 with an appointment past it
    committer.py         group commit of concurrent issuances (registry units, audit fsync)
    client.py            the gateway side: enroll, renew, offline request/import
    patience.py          the gateway side of shedding: Retry-After honoured, with jitter
    credentials.py       the gateway's credential directory (docs/contracts.md section 2)

>>> from provisioning.tokens import TokenKey
>>> key = TokenKey.generate()
>>> key.algorithm
'EdDSA'
"""

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "client": ("client", "offline_response", "parse_offline_request"),
    "config": ("RateLimits", "RenewalPolicy", "ServiceLimits", "SheddingLimits", "parse_duration"),
    "errors": ("UsageError",),
    "expiry": ("alert_expiring", "scan_expiry"),
    "http.app": ("create_app", "wrap"),
    "notify": ("MqttTarget", "Notifier"),
    "operations": ("RevocationListener",),
    "patience": ("Patience",),
    "retirement": ("revoke_superseded", "withdraw_stale_pending"),
    "registry": ("Registry",),
    "server": ("ServeOptions", "build_server", "default_server_names", "ensure_server_certificate"),
    "services": ("Services",),
    "tokens": ("MAX_TOKEN_CHARS", "Role", "TokenKey"),
}

__all__, __getattr__ = lazy_surface(__name__, _SURFACE)
