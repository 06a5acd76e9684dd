"""The device identity service: registry, enrollment tokens, enrollment and renewal over HTTPS
and EST (RFC 7030), revocation, air-gapped enrollment and expiry alerts.

The pieces, top down::

    api.py / est.py      FastAPI: JSON API and EST endpoints; errors -> HTTP statuses
    server.py            uvicorn over TLS; the peer certificate goes into the ASGI TLS extension
    service.py           the decisions: token -> device -> CSR -> issue -> registry -> audit
    tokens.py            enrollment and operator JWTs (EdDSA only)
    registry.py          devices, groups, certificates, tokens (SQLite or PostgreSQL)
    expiry.py            expiring certificates grouped by site/area/line
    notify.py            revocation and expiry notifications (webhook, MQTT)
    client.py            the gateway side: enroll, renew, offline request/import

>>> from provisioning.tokens import TokenKey
>>> key = TokenKey.generate()
>>> key.algorithm
'EdDSA'
"""
