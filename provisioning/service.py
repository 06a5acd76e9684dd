"""The provisioning decisions: who may get which certificate, and the record of it.

Every path ends in exactly one of two ways: a certificate issued through pki, registered and
audited (``provisioning.enroll.accepted`` / ``provisioning.renew.accepted``), or a `RefusedError`
after an audit record with the precise reason (``*.refused``) and with nothing issued and the
registry unchanged. The HTTP layer only translates; it decides nothing.

Order of an enrollment (each step refuses on failure):

0. (HTTP layer, `pki.csr.check_csr`) parse and verify the CSR once: size, hash, the
   certificate policy's key rules, proof of possession, extensions -> a `VerifiedCSR`, or a
   `RefusedCSR` that holds the refusal until step 3 (ADR 0018);
1. verify the token (signature with the pinned algorithm, audience, expiry) -> claims;
2. resolve the device the token is bound to; it must be registered and not revoked;
3. the CSR must have passed step 0 (else refused here, after authentication, as before);
4. in one registry transaction: consume the token (conditional UPDATE), lock the device row
   and check again that it is not revoked, issue (the CA plans the certificate, checking the
   CSR's names against the identity, and signs the plan; a refusal rolls the consumption back,
   so the token survives a bad CSR) and record the certificate as ``pending``; commit;
5. append the audit record (durable; concurrent requests share fsyncs), then, under the device
   lock again, mark the certificate ``active`` and the device ``enrolled`` unless the device was
   revoked meanwhile (then the certificate is revoked and the request refused). If the audit
   append fails, the certificate is revoked and the request fails.

Renewal authenticates the client certificate with `provisioning.peers.PeerVerifier`, requires
it to be the device's current (``active``) certificate (checked again under the device lock),
then follows steps 3-5; the certificate it replaces is revoked after the switch-over grace.
A revocation locks the same row first, so it and an issuance never interleave (ADR 0049).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from audit.events import AuditEvent, AuditSink, Outcome
from pki.authority import (
    CertificateAuthority,
    IssuedCertificate,
    RevocationReason,
)
from pki.csr import CheckedCSR, VerifiedCSR
from pki.errors import (
    CSRError,
    IssuanceRefusedError,
    PKIError,
)
from pki.identity import DeviceIdentity
from pki.profiles import ProfileName
from policies.document import CertificatePolicy
from provisioning.admission import (
    device_validity,
    enrollment_claims,
    identity_for,
    key_policy_for,
    max_device_validity,
    require_enrollable,
    require_issuable,
    require_renewable,
    require_verified,
    why_token_unusable,
)
from provisioning.committer import IssuanceCommitter, IssuanceJob
from provisioning.config import ServiceLimits
from provisioning.errors import (
    ProvisioningError,
    RefusedError,
    RequestError,
    TokenError,
    UpstreamError,
)
from provisioning.peers import PeerVerifier
from provisioning.recording import record_refusal, record_upstream_failure
from provisioning.records import CertificateStatus, DeviceStatus
from provisioning.registry import Registry, Unit
from provisioning.retirement import revoke_superseded
from provisioning.tokens import TokenKey

_log = logging.getLogger("provisioning")
ENROLL_REFUSED = "provisioning.enroll.refused"
RENEW_REFUSED = "provisioning.renew.refused"


@dataclass(frozen=True, slots=True)
class Enrolled:
    identity: DeviceIdentity
    issued: IssuedCertificate


class ProvisioningService:
    """Enrollment and renewal (one of the composed services, ADR 0090; operator actions are
    `provisioning.operations.OperatorActions`, operator tokens `OperatorTokens`)."""

    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        registry: Registry,
        audit: AuditSink,
        token_key: TokenKey,
        policy: CertificatePolicy | None = None,
        limits: ServiceLimits | None = None,
        crl_file: Path | None = None,
    ) -> None:
        self.ca = ca
        self.registry = registry
        self.audit = audit
        self.token_key = token_key
        self.policy = policy or CertificatePolicy()
        self.limits = limits or ServiceLimits()
        self.key_policy = key_policy_for(self.policy)
        chain = ca.ca_chain()
        self.issuing, self.root = chain[0], chain[-1]
        self.peers = PeerVerifier(ca=ca, registry=registry, policy=self.policy, crl_file=crl_file)
        self.committer = IssuanceCommitter(
            registry=registry,
            audit=audit,
            withdraw=self._withdraw,
            after_supersession=self._sweep_superseded,
        )

    def close(self) -> None:
        """Finish the queued issuances and stop the committer thread."""
        self.committer.close()

    @property
    def max_device_validity(self) -> timedelta:
        return max_device_validity(self.policy)

    def _refuse(
        self, action: str, actor: str, resource: str, exc: RefusedError, *, client: str, via: str
    ) -> RefusedError:
        return record_refusal(self.audit, action, actor, resource, exc, client=client, via=via)

    def record_refusal(self, action: str, exc: RefusedError, *, client: str, via: str) -> None:
        """Audit a refusal the HTTP layer detected before reaching the service."""
        self._refuse(action, f"client:{client}", "-", exc, client=client, via=via)

    def revoke_superseded(self, *, now: datetime, actor: str = "service:provisioning") -> list[str]:
        """Revoke the superseded certificates whose grace is over (`provisioning.retirement`)."""
        return revoke_superseded(
            self.ca, self.registry, self.audit, self.limits.renewal, now=now, actor=actor
        )

    # -- enrollment -------------------------------------------------------------------------

    def enroll(
        self,
        token: str,
        csr: CheckedCSR,
        *,
        now: datetime,
        client: str,
        via: str = "enroll",
        requested_identity: str | None = None,
    ) -> Enrolled:
        actor = f"client:{client}"
        resource = requested_identity or "-"
        try:
            claims = enrollment_claims(
                self.token_key,
                self.registry,
                token,
                now=now,
                leeway_s=self.limits.tokens.clock_leeway_s,
            )
            identity = identity_for(claims, requested_identity)
            actor = resource = identity.path
            validity, group = require_enrollable(self.registry, identity, claims, self.policy)
            verified = require_verified(csr)

            def step(unit: Unit) -> IssuedCertificate:
                if not unit.consume_token(
                    claims.token_id, subject=claims.subject, used_by=identity.path, now=now
                ):
                    raise _TokenUnusableError
                if claims.group_prefix is not None:  # a new device (checked above; unique key)
                    unit.insert_device(
                        identity.path,
                        device_class=group.device_class if group else "gateway",
                        asset="",
                        status=DeviceStatus.REGISTERED,
                        now=now,
                    )
                else:  # checked again under the device lock: a revocation may have committed
                    require_issuable(unit.lock_device(identity.path), identity)
                issued = self._issue(verified, identity, validity, now)
                self._record_pending(unit, issued, identity, via=via, now=now)
                return issued

            def event(issued: IssuedCertificate) -> AuditEvent:
                return AuditEvent(
                    actor=identity.path,
                    action="provisioning.enroll.accepted",
                    resource=issued.serial_hex,
                    outcome=Outcome.SUCCESS,
                    details={
                        "via": via,
                        "client": client,
                        "token_id": claims.token_id,
                        "identity": identity.path,
                        "profile": issued.profile.value,
                        "fingerprint": issued.fingerprint,
                        "not_after": issued.not_after.isoformat(),
                    },
                )

            issued = self.committer.run(IssuanceJob(identity.path, now, step, event))
        except _TokenUnusableError:
            # Asked after the transaction ended: SQLite has one writer, and the reason is
            # only for the audit record (the client hears the same generic refusal).
            exc = why_token_unusable(self.registry, claims, now)
            raise self._refuse(
                ENROLL_REFUSED, actor, resource, exc, client=client, via=via
            ) from None
        except RefusedError as exc:
            raise self._refuse(
                ENROLL_REFUSED, actor, resource, exc, client=client, via=via
            ) from None
        except UpstreamError as exc:
            record_upstream_failure(
                self.audit, ENROLL_REFUSED, actor, resource, exc, client=client, via=via
            )
            raise
        return Enrolled(identity, issued)

    # Why two registry transactions around the audit append: the registry transaction holds
    # SQLite's single write lock, and waiting for the audit fsync inside it would serialize
    # every enrollment behind one fsync each. The certificate is recorded `pending` (never handed
    # out, never renewable); it becomes `active` only after its audit record is durable. If the
    # record cannot be written, the certificate is revoked at once and the request fails: no
    # usable certificate exists without its audit record (ADR 0024, ADR 0045). Concurrent
    # requests share both transactions and the fsync (`provisioning.committer`, ADR 0136).

    @staticmethod
    def _record_pending(
        unit: Unit, issued: IssuedCertificate, identity: DeviceIdentity, *, via: str, now: datetime
    ) -> None:
        unit.record_certificate(
            serial=issued.serial_hex,
            device_path=identity.path,
            fingerprint=issued.fingerprint,
            not_before=issued.certificate.not_valid_before_utc,
            not_after=issued.not_after,
            via=via,
            now=now,
            status=CertificateStatus.PENDING,
        )

    def _sweep_superseded(self, now: datetime) -> None:
        """Revoke superseded certificates whose grace is over (this renewal's own one at once
        when the grace is 0). The periodic scan does the same; a failure here must not fail a
        renewal that succeeded, so it is logged and left to the next sweep."""
        try:
            self.revoke_superseded(now=now)
        except ProvisioningError:
            _log.exception("revoking superseded certificates failed; the next sweep retries")

    def _withdraw(self, issued: IssuedCertificate, now: datetime) -> None:
        """Revoke a certificate that must never be used (no audit record, or its device was
        revoked while it was issued). Idempotent: a serial revoked already keeps its reason."""
        try:
            self.ca.revoke(issued.serial, RevocationReason.CESSATION_OF_OPERATION, now=now)
        except PKIError as exc:
            raise UpstreamError(f"the CA could not revoke {issued.serial_hex}: {exc}") from exc
        finally:
            with self.registry.unit() as unit:
                unit.set_certificate_status(issued.serial_hex, CertificateStatus.REVOKED)

    def _issue(
        self, csr: VerifiedCSR, identity: DeviceIdentity, validity: timedelta, now: datetime
    ) -> IssuedCertificate:
        try:
            return self.ca.issue(
                csr, identity, profile=ProfileName.DEVICE, now=now, validity=validity
            )
        except CSRError as exc:
            raise RequestError(f"CSR refused: {exc}", code="bad-csr") from exc
        except IssuanceRefusedError as exc:
            raise RequestError(f"issuance refused: {exc}", code="issuance-refused") from exc
        except PKIError as exc:
            raise UpstreamError(f"the CA failed: {exc}") from exc

    # -- renewal ----------------------------------------------------------------------------

    def renew(
        self,
        peer_der: bytes | None,
        csr: CheckedCSR,
        *,
        now: datetime,
        client: str,
        via: str = "renew",
    ) -> Enrolled:
        actor, resource = f"client:{client}", "-"
        try:
            peer = self.peers.authenticate(peer_der, now=now)
            actor, resource = peer.identity.path, peer.serial_hex
            # Checked without the write lock first (a flood of refused renewals must not queue
            # on it), then again under the device lock, where the decision is made.
            require_renewable(
                self.registry.device(peer.identity.path),
                self.registry.certificate(peer.serial_hex),
                peer.identity,
                peer.serial_hex,
            )
            verified = require_verified(csr)
            validity = device_validity(self.registry.group_for(peer.identity.path), self.policy)

            def step(unit: Unit) -> IssuedCertificate:
                require_renewable(
                    unit.lock_device(peer.identity.path),
                    unit.certificate(peer.serial_hex),
                    peer.identity,
                    peer.serial_hex,
                )
                issued = self._issue(verified, peer.identity, validity, now)
                self._record_pending(unit, issued, peer.identity, via=via, now=now)
                return issued

            def event(issued: IssuedCertificate) -> AuditEvent:
                return AuditEvent(
                    actor=peer.identity.path,
                    action="provisioning.renew.accepted",
                    resource=issued.serial_hex,
                    outcome=Outcome.SUCCESS,
                    before={"serial": peer.serial_hex},
                    after={"serial": issued.serial_hex, "not_after": issued.not_after.isoformat()},
                    details={
                        "via": via,
                        "client": client,
                        "expired_within_grace": now > peer.not_after,
                        "identity": peer.identity.path,
                        "profile": issued.profile.value,
                        "fingerprint": issued.fingerprint,
                        "not_after": issued.not_after.isoformat(),
                    },
                )

            issued = self.committer.run(IssuanceJob(peer.identity.path, now, step, event))
        except RefusedError as exc:
            raise self._refuse(
                RENEW_REFUSED, actor, resource, exc, client=client, via=via
            ) from None
        except UpstreamError as exc:
            record_upstream_failure(
                self.audit, RENEW_REFUSED, actor, resource, exc, client=client, via=via
            )
            raise
        return Enrolled(peer.identity, issued)


class _TokenUnusableError(TokenError):
    """The conditional UPDATE matched nothing; the reason is looked up afterwards."""

    def __init__(self) -> None:
        super().__init__("the token could not be consumed", code="token-unusable")


__all__ = ["Enrolled", "ProvisioningService"]
