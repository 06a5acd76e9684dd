"""The device identity service: registry, enrollment tokens, enrollment and renewal over HTTPS
and EST (RFC 7030), revocation, air-gapped enrollment and expiry alerts.

The pieces, top down::

    api.py / est.py      FastAPI: JSON API and EST endpoints; errors -> HTTP statuses
    schemas.py           request/response bodies (the OpenAPI document)
    bodylimit.py         413 for oversized bodies, before any route parses them
    server.py            uvicorn over TLS; the peer certificate goes into the ASGI TLS extension
    service.py           the decisions: token -> device -> CSR -> issue -> registry -> audit
    peers.py             who a client certificate is (chain, CRL, profile, renewal grace)
    operations.py        operator actions: devices, groups, tokens, revocation
    tokens.py            enrollment and operator JWTs (EdDSA only)
    registry.py          devices, groups, certificates, tokens (SQLite or PostgreSQL)
    expiry.py            expiring certificates grouped by site/area/line
    notify.py            revocation and expiry notifications (webhook, MQTT)
    ratelimit.py         token buckets per client address and per token
    client.py            the gateway side: enroll, renew, offline request/import
    credentials.py       the gateway's credential directory (docs/contracts.md section 2)

>>> from provisioning.tokens import TokenKey
>>> key = TokenKey.generate()
>>> key.algorithm
'EdDSA'
"""
