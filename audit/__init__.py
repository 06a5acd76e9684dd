"""audit: what happened? The append-only, tamper-evident log of every security decision.

    from audit.log import AuditLog
    from audit.events import AuditEvent, Outcome

    with AuditLog.open(home.audit_dir, origin="plant1.example/idmz-audit") as log:
        receipt = log.record(AuditEvent(actor, "pki.cert.issued", serial, Outcome.SUCCESS))

Modules: `events` (what callers send), `log` (the durable sink, group commit), `writer`,
`storage`, `recovery` (files on disk), `merkle` (RFC 6962), `note`/`checkpoint` (C2SP
signed-note, tlog-checkpoint), `proof` (tlog-proof), `verify` (whole-log verification),
`witness`/`witness_http` (tlog-witness, tlog-cosignature), `report`/`report_html`
(compliance reports), `limits` (limits, capacity, clock), `keys`, `errors`. See docs/audit.md.
"""
