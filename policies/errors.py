"""The policies exception tree. Names say what the caller does next.

* PolicyError
  x PolicyConfigError    the policy document (or a render input) is invalid: fix it and reload.
                         Carries the key path and, where the parser allows, the line.
  x AccessDeniedError    a well-formed request that the policy refuses: refuse, count, audit.
                         Carries the `Decision`, so the reason code reaches the audit record.
  x MalformedPayloadError  the bytes are not a Sparkplug B payload: the checks in
                         `policies.sparkplug_checks` turn it into a refusal.

Messages name the key, the identity or the topic; they never contain payloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import bedrock.errors as category

if TYPE_CHECKING:
    from policies.decision import Decision


class PolicyError(category.IdmzError):
    """Root of every error the policies package raises on purpose."""


class PolicyConfigError(PolicyError, category.ConfigError):
    """A policy document or render input is invalid.

    ``key`` is the dotted key path (``limits.telemetry.max_message_bytes``), ``line`` the
    1-based line in the source when known, ``source`` the file name when the caller gave one.
    """

    def __init__(
        self, message: str, *, key: str = "", line: int | None = None, source: str = ""
    ) -> None:
        self.key = key
        self.line = line
        self.source = source
        self.message = message
        where = source or "policy"
        if line is not None:
            where += f":{line}"
        prefix = f"{where}: {key}: " if key else f"{where}: "
        super().__init__(prefix + message)


class AccessDeniedError(PolicyError, category.AccessDeniedError):
    """The policy refused a request; ``decision`` says why (``decision.reason_code``)."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(f"access denied ({decision.reason_code}): {decision.reason}")


class MalformedPayloadError(PolicyError, category.VerificationError):
    """The bytes are not a Sparkplug B payload. Raised by `decode_sparkplug` only; the checks in
    `policies.sparkplug_checks` turn it into a refusal."""
