"""What one audit record says, and the narrow interface features use to write one.

Features (provisioning, relay, edge, idmz) depend on `AuditSink` only; `audit.log.AuditLog`
is the durable, tamper-evident implementation. The log itself stamps the sequence number,
UTC time, time source and host when it appends, so callers cannot forge them.

``pki.ca.created``             a new CA was created (resource = root serial; details: root
                               fingerprint, organization; never the passphrase)
``pki.cert.issued``            a certificate was issued (resource = serial)
``pki.cert.revoked``           a certificate was revoked (reason = RFC 5280 reason)
``pki.crl.published``          a CRL was generated (details: crl_number, entries, next_update)
``provisioning.enroll.*``      ``accepted`` / ``refused`` enrollment
``provisioning.renew.*``       ``accepted`` / ``refused`` renewal
``provisioning.token.*``       ``created`` / ``refused`` (replayed, expired, forged)
``provisioning.device.*``      ``added`` / ``revoked`` / ``expiring``
``provisioning.group.added``   an enrollment group was created
``provisioning.ca.expiring``   the issuing CA expires before a certificate issued today would
``policy.document.loaded``     a policy was loaded (after = content hash)
``relay.message.refused``      a message was refused (reason = the policy decision)
``relay.message.refused_by_it`` the IT broker refused an accepted message for good (details:
                               msg id, PUBACK reason code; kept as a dead letter)
``relay.batch.forwarded``      accepted traffic, per batch (details: count, hash)
``relay.device.cutoff``        a revoked device was disconnected
``relay.crl.stale``            the brokers' CRL passed nextUpdate (details: CRL number,
                               nextUpdate, each zone's on_stale_crl)
``relay.session.refused``      a broker refused a CONNECT (client id not the certificate's)
``relay.broker.overflow``      a broker dropped messages: a client queue was full
``config.*.changed``           configuration changed (before/after)
``operator.*``                 a manual action recorded by an operator with their reason
=============================  ==========================================================
=======
Action names are dotted, ``<area>.<object>.<verb>``. The catalogue of every action the product
records, with its IEC 62443 SR 2.8 category, is `audit.actions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# JSON-safe scalar values for details/before/after.
Scalar = str | int | float | bool | None


class Outcome(StrEnum):
    SUCCESS = "success"  # the action happened
    DENIED = "denied"  # a well-formed request was refused by policy
    FAILURE = "failure"  # malformed input or an error prevented the action


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One security decision, as the caller describes it.

    ``actor`` is an identity path (device, consumer) or an operator's name; ``resource`` is what
    was acted on (a serial, a topic, a device path). ``reason`` is required for refusals and
    manual actions. Never put secrets, tokens, keys, CSR bodies or message payloads here: use
    a hash in ``details`` instead.
    """

    actor: str
    action: str
    resource: str
    outcome: Outcome
    reason: str = ""
    before: Mapping[str, Scalar] | None = None
    after: Mapping[str, Scalar] | None = None
    zone: str = "idmz"
    details: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditReceipt:
    """Returned once the record is durable (written and fsynced)."""

    index: int  # 0-based position in the log (the Merkle leaf index)
    leaf_hash: bytes  # RFC 6962 leaf hash of the stored record


class AuditSink(Protocol):
    """Where features send audit events. ``record`` returns only when the event is durable,
    and raises `audit.errors.AuditUnavailableError` when it cannot be recorded."""

    def record(self, event: AuditEvent) -> AuditReceipt: ...

    def record_batch(self, events: Sequence[AuditEvent]) -> list[AuditReceipt]:
        """Consecutive entries, durable together; raises if any cannot be recorded (others
        may have been)."""
        ...
