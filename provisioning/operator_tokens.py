"""Operator tokens can be revoked (review S7, ADR 0048): a deny-list of token ids in the
registry, consulted by every instance on every operator-API request, with every refusal audited.

`OperatorTokens` is one of the composed provisioning services (ADR 0090), beside
`OperatorActions`, whose minting records each operator token's id (never the token).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from audit.events import AuditEvent, AuditSink, Outcome
from provisioning.config import ServiceLimits
from provisioning.errors import TokenError, UsageError
from provisioning.recording import record
from provisioning.registry import Registry
from provisioning.tokens import OperatorClaims, TokenKey


@dataclass(frozen=True, kw_only=True, slots=True)
class OperatorTokens:
    registry: Registry
    audit: AuditSink
    token_key: TokenKey
    limits: ServiceLimits

    def revoke_operator_token(
        self,
        *,
        operator: str,
        now: datetime,
        token_id: str | None = None,
        token: str | None = None,
    ) -> str:
        """Put an operator token on the registry's deny-list, named by its id (``jti``, printed
        when it was minted) or given whole; from then on every instance refuses it, audited
        (`authenticate_operator`). Only the ``jti`` is stored, never the token. Returns the id."""
        if token is not None and token_id is None:
            try:
                claims = self.token_key.verify_operator(
                    token, now=now, leeway_s=self.limits.tokens.clock_leeway_s
                )
            except TokenError as exc:
                raise UsageError(f"not a live operator token of this service: {exc}") from exc
            jti, subject, expires_at = (
                claims.token_id,
                f"operator:{claims.operator}",
                claims.expires_at,
            )
        elif token_id is not None and token is None:
            row = self.registry.token(token_id[:64])
            if row is None or not row.subject.startswith("operator:"):
                raise UsageError(
                    f"no operator token with id {token_id[:64]} was minted by this registry; "
                    "pass the token itself (--token-file)"
                )
            jti, subject, expires_at = row.jti, row.subject, row.expires_at
        else:
            raise UsageError("name the operator token by its id or give the token, not both")
        with self.registry.unit() as unit:
            if unit.deny_token(
                jti, subject=subject, expires_at=expires_at, now=now, revoked_by=operator
            ):
                record(
                    self.audit,
                    AuditEvent(
                        operator,
                        "provisioning.token.revoked",
                        subject,
                        Outcome.SUCCESS,
                        details={"token_id": jti, "expires_at": expires_at.isoformat()},
                    ),
                )
        return jti

    def authenticate_operator(self, token: str, *, now: datetime, client: str) -> OperatorClaims:
        """The operator token's claims if it verifies (pinned algorithm, audience, expiry) and
        is not on the deny-list. Every refusal is audited (`provisioning.token.refused`); a
        revoked token, whose signature did verify, under the operator it names."""
        actor = f"client:{client}"
        try:
            claims = self.token_key.verify_operator(
                token, now=now, leeway_s=self.limits.tokens.clock_leeway_s
            )
            revoked_at = self.registry.token_revoked_at(claims.token_id)
            if revoked_at is not None:
                actor = f"operator:{claims.operator}"
                raise TokenError(
                    f"operator token {claims.token_id} of {claims.operator} was revoked at "
                    f"{revoked_at:%Y-%m-%dT%H:%M:%SZ}",
                    code="token-revoked",
                )
        except TokenError as exc:
            record(
                self.audit,
                AuditEvent(
                    actor,
                    "provisioning.token.refused",
                    "-" if actor.startswith("client:") else actor,
                    Outcome.DENIED,
                    reason=exc.reason,
                    details={"code": exc.code, "client": client, "via": "operator-api"},
                ),
            )
            raise
        return claims
