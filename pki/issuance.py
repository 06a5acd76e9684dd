"""One issuance path: the CA plans a certificate once, and a backend only signs the plan.

Every rule about what a leaf certificate says lives here, for the embedded CA (`pki.local`) and
Vault (`pki.vault`) alike: the names (written by the CA from the subject the registry gives,
never from the CSR), the profile's extensions, the validity and its limits, and the issuing CA's
own validity. A backend receives an `IssuancePlan` and returns the signed certificate; Vault's
answer is then checked against the same plan (ADR 0018).

>>> from datetime import UTC, datetime
>>> from pki.identity import DeviceIdentity
>>> plan = plan_issuance(verified, DeviceIdentity.parse("acme/p1/a/l/c/d"),
...     profile=ProfileName.DEVICE, now=datetime.now(UTC), validity=None,
...     issuing=issuing_cert, limits=IssuanceLimits())                      # doctest: +SKIP
>>> issued = ca.sign(plan)                                                  # doctest: +SKIP

Order of the checks (each refuses; nothing is signed before all pass):

1. ``now`` is timezone-aware; the subject is of the profile's kind.
2. Names: a SAN in the CSR, if any, names exactly the subject (`VerifiedCSR.require_names`).
3. Key: the CA's own key policy accepts the CSR's key (the caller may have applied a stricter
   one when it verified the CSR).
4. Validity: positive and at most the CA's limit for the profile.
5. The issuing CA is valid now (a clock far behind would mint certificates from the future)
   and outlives the certificate (refused rather than silently truncated).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from pki.authority import IssuedCertificate
from pki.builder import CLOCK_SKEW, subject_alt_names, subject_name
from pki.csr import VerifiedCSR
from pki.errors import IssuanceRefusedError
from pki.files import require_aware
from pki.keys import KeyPolicy, PublicKey, check_public_key
from pki.profiles import PROFILES, ProfileName, Subject, check_subject_matches


def _profile_limits() -> dict[ProfileName, timedelta]:
    return {name: p.max_validity for name, p in PROFILES.items()}


@dataclass(frozen=True, slots=True)
class IssuanceLimits:
    """What a CA will sign at most: the keys it accepts and the longest validity per profile."""

    key_policy: KeyPolicy = field(default_factory=KeyPolicy)
    max_validity: Mapping[ProfileName, timedelta] = field(default_factory=_profile_limits)


@dataclass(frozen=True, slots=True)
class IssuancePlan:
    """Everything a leaf certificate will say, decided by the CA; a backend only signs it."""

    csr: VerifiedCSR
    subject: Subject
    profile: ProfileName
    issued_at: datetime  # the ``now`` the plan was made for
    not_before: datetime  # back-dated by CLOCK_SKEW
    not_after: datetime
    lifetime: timedelta

    @property
    def public_key(self) -> PublicKey:
        return self.csr.public_key

    @property
    def name(self) -> x509.Name:
        """The subject DN: CN=<path> (mirrors the SAN for Mosquitto, ADR 0011)."""
        return subject_name(self.subject)

    @property
    def alt_names(self) -> list[x509.GeneralName]:
        return subject_alt_names(self.subject)

    @property
    def extended_key_usage(self) -> ObjectIdentifier:
        return PROFILES[self.profile].extended_key_usage


def plan_issuance(
    csr: VerifiedCSR,
    subject: Subject,
    *,
    profile: ProfileName,
    now: datetime,
    validity: timedelta | None,
    issuing: x509.Certificate,
    limits: IssuanceLimits,
) -> IssuancePlan:
    """Decide the certificate for ``subject`` under ``profile``, steps (1)-(5) above."""
    require_aware(now)  # (1)
    check_subject_matches(profile, subject)
    csr.require_names(subject)  # (2)
    check_public_key(csr.public_key, limits.key_policy)  # (3)
    lifetime = validity if validity is not None else PROFILES[profile].default_validity
    limit = limits.max_validity[profile]
    if lifetime <= timedelta(0) or lifetime > limit:  # (4)
        raise IssuanceRefusedError(
            f"{profile} certificates for {subject} may be valid for up to {limit.days} days; "
            f"{lifetime.days} days were requested"
        )
    if now < issuing.not_valid_before_utc - CLOCK_SKEW:  # (5)
        raise IssuanceRefusedError(
            f"the issuing CA is not valid until {issuing.not_valid_before_utc:%Y-%m-%d %H:%M}Z "
            f"but the time given is {now:%Y-%m-%d %H:%M}Z; check this host's clock"
        )
    not_after = now + lifetime
    if not_after > issuing.not_valid_after_utc:
        raise IssuanceRefusedError(
            f"a certificate for {subject} valid until {not_after:%Y-%m-%d} would outlive the "
            f"issuing CA (valid until {issuing.not_valid_after_utc:%Y-%m-%d}); renew the issuing "
            "CA or request a shorter validity"
        )
    return IssuancePlan(
        csr=csr,
        subject=subject,
        profile=profile,
        issued_at=now,
        not_before=now - CLOCK_SKEW,
        not_after=not_after,
        lifetime=lifetime,
    )


class PlannedIssuer(ABC):
    """The `CertificateAuthority.issue` every backend shares: plan here, then `sign`.

    A backend provides its issuing certificate, its limits and the signing step; it never
    decides what a certificate says.
    """

    @abstractmethod
    def ca_chain(self) -> tuple[x509.Certificate, ...]:
        """Issuing CA first, root last."""

    @property
    @abstractmethod
    def issuance_limits(self) -> IssuanceLimits: ...

    @abstractmethod
    def sign(self, plan: IssuancePlan) -> IssuedCertificate:
        """Sign exactly ``plan`` (and record it); raise `KeyStoreError` if the backend fails."""

    def issue(
        self,
        csr: VerifiedCSR,
        subject: Subject,
        *,
        profile: ProfileName,
        now: datetime,
        validity: timedelta | None = None,
    ) -> IssuedCertificate:
        plan = plan_issuance(
            csr,
            subject,
            profile=profile,
            now=now,
            validity=validity,
            issuing=self.ca_chain()[0],
            limits=self.issuance_limits,
        )
        return self.sign(plan)
