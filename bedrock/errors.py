"""The error categories every idmz package derives its errors from (ADR 0007).

A category says what the caller does next, so the exit code and the HTTP status follow from it
by ``isinstance`` (never from a class name)::

    IdmzError                 the root: anything idmz raises on purpose
    ├── ConfigError           fix the configuration or data directory, then start again  2  500
    ├── UsageError            fix the call (command, argument, request parameters)        2  400
    ├── VerificationError     untrusted input failed a check: reject, audit, never retry  1  400
    ├── AccessDeniedError     a well-formed request that policy, role or state refuses     1  403
    ├── CapacityError         a bound is reached: shed or hold the work, come back later   1  429
    ├── OperationError        a step of ours failed; the message says which and why        1  500
    └── UpstreamError         something outside idmz failed (broker, PLC, Vault, disk)     3  503

Each package's ``errors.py`` roots derive from ``IdmzError`` and each of its errors from exactly
one category, e.g. ``class KeyStoreError(PKIError, UpstreamError)``. The HTTP layer may refine a
status within a category (a missing bearer token is 401), never move an error across categories.
"""

from __future__ import annotations


class IdmzError(Exception):
    """Root of every error idmz raises on purpose. Not raised itself: raise a category."""


class ConfigError(IdmzError):
    """The configuration or data directory is missing, malformed or unsafe."""


class UsageError(IdmzError):
    """The caller asked for something invalid or that does not exist."""


class VerificationError(IdmzError):
    """Untrusted input (a certificate, a CSR, a token, a log, a model) failed a check."""


class AccessDeniedError(IdmzError):
    """A well-formed request that a policy, a role or the subject's state does not allow."""


class CapacityError(IdmzError):
    """A bound was reached (spool, outbox, rate); the work is held or shed, not lost silently."""


class OperationError(IdmzError):
    """A step of ours failed for a reason the message names (a demo step, a model run)."""


class UpstreamError(IdmzError):
    """A dependency outside idmz failed: a broker, a PLC, Vault, the database, the disk."""


CATEGORIES: tuple[type[IdmzError], ...] = (
    ConfigError,
    UsageError,
    VerificationError,
    AccessDeniedError,
    CapacityError,
    OperationError,
    UpstreamError,
)

# (category, exit code, HTTP status); exit codes: 2 fix the configuration or the call,
# 3 a dependency failed (retry later), 1 a check failed or a request was refused.
_MEANING: tuple[tuple[type[IdmzError], int, int], ...] = (
    (ConfigError, 2, 500),
    (UsageError, 2, 400),
    (VerificationError, 1, 400),
    (AccessDeniedError, 1, 403),
    (CapacityError, 1, 429),
    (OperationError, 1, 500),
    (UpstreamError, 3, 503),
)


def category_of(exc: BaseException) -> type[IdmzError] | None:
    """The category ``exc`` belongs to, or None for an error that is not ours (a bug)."""
    for category, _, _ in _MEANING:
        if isinstance(exc, category):
            return category
    return None


def exit_code_for(exc: BaseException) -> int | None:
    """The process exit code for an idmz error, or None for an error that is not ours."""
    for category, code, _ in _MEANING:
        if isinstance(exc, category):
            return code
    return None


def http_status_for(exc: BaseException) -> int:
    """The HTTP status for an error: its category's, else 500 (a bug is a server error)."""
    for category, _, status in _MEANING:
        if isinstance(exc, category):
            return status
    return 500
