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

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "errors": ("AuditConfigError", "AuditError", "LogCorruptedError"),
    "events": ("AuditEvent", "AuditSink", "Outcome"),
    "keys": (
        "KEY_FILE",
        "VKEY_FILE",
        "existing_origin",
        "load_private_key",
        "read_vkey",
        "witness_cosigner",
    ),
    "log": ("AuditLog",),
    "note": ("NoteSigner", "VerifierKey"),
    "proof": ("build_proof", "verify_proof"),
    "report": ("build_report", "parse_time"),
    "report_html": ("render_html",),
    "storage": ("LogPaths", "iter_entries", "read_index"),
    "verify": ("verify_log",),
    "witness": ("Witness",),
    "witness_http": ("make_server", "submit_checkpoint"),
}

__all__, __getattr__ = lazy_surface(__name__, _SURFACE)
