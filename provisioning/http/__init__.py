"""Provisioning's HTTP layer (ADR 0090): FastAPI routes by concern over the composed services,
which are injected, never looked up. It translates requests into service calls and errors into
statuses; it decides nothing.

    app.py       create_app: the routes, the error handlers, the dependencies; wrap: body limit
                 and the enrollment route below FastAPI
    enroll_asgi.py  POST /v1/enroll without the framework's per-request layers, same answers
                 (ADR 0140)
    deps.py      the typed context the routes receive (services, clock, rate limiters)
    errors.py    exception -> status, body and headers (the table in its docstring)
    enroll.py    /v1/ca, /v1/enroll, /v1/renew (renewal over mutual TLS)
    operator.py  /v1/devices, /v1/groups, /v1/tokens, /v1/revocations, /v1/expiry
    est.py       /.well-known/est/ (RFC 7030)
"""
