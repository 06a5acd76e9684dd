"""What went wrong in the audit log, named for what the caller does next.

``AuditUnavailableError``  the event could NOT be recorded: refuse the action it describes
                           (identity, certificate and policy changes) or apply the relay's
                           configured failure policy. Never retry by writing elsewhere.
``LogCorruptedError``      the stored log failed verification: treat it as evidence of
                           tampering or storage failure; ``index`` names the first bad entry.
``ProofError``             a Merkle inclusion/consistency proof did not verify.
``CheckpointError``        a checkpoint or signed note is malformed or its signature is wrong.
``WitnessRefusedError``    a witness refused a checkpoint (rollback, fork, bad signature).
``AuditConfigError``       the log or witness was configured wrongly: fix the call/config.
``InvalidEventError``      the event itself can never be recorded (too big, no reason).
"""

from __future__ import annotations

import bedrock.errors as category


class AuditError(category.IdmzError):
    """Base class for every error raised by the audit package."""


class AuditConfigError(AuditError, category.ConfigError):
    """A setting or argument is invalid (origin, key file, limits). Fix it and start again."""


class AuditUnavailableError(AuditError, category.UpstreamError):
    """The event was not recorded (disk full, I/O error, log closed). Do not perform the
    action it describes; nothing partial was written."""


class LogCorruptedError(AuditError, category.VerificationError):
    """The stored log failed verification. ``index`` is the first entry that is wrong or
    missing (None when the problem is not tied to one entry, e.g. a bad checkpoint file)."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ProofError(AuditError, category.VerificationError):
    """A Merkle proof does not prove what it claims (RFC 9162 sections 2.1.3.2 / 2.1.4.2)."""


class CheckpointError(AuditError, category.VerificationError):
    """A checkpoint or signed note is malformed, from an unknown key, or badly signed."""


class WitnessRefusedError(AuditError, category.VerificationError):
    """A witness refused a checkpoint. ``status`` is the tlog-witness HTTP status (403 bad
    signature, 404 unknown origin, 409 size conflict/fork, 422 bad consistency proof)."""

    def __init__(self, message: str, *, status: int, witness_size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.witness_size = witness_size


class InvalidEventError(AuditConfigError):
    """The event cannot be recorded as given (too large, missing reason, not JSON-safe).
    Fix the caller; nothing was written."""
