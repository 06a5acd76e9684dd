"""The provisioning services, composed (ADR 0090): enrollment and renewal, operator actions and
operator tokens are three classes, none inheriting from another, each receiving what it acts
with. `Services.compose` wires them over one CA, registry, audit log and token key; the
composition roots (`idmz.provisioning_runtime`, the tests, the benchmark) and the HTTP layer
(`provisioning.http.deps`) take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audit.events import AuditSink
from pki.authority import CertificateAuthority
from policies.document import CertificatePolicy
from provisioning.config import ServiceLimits
from provisioning.operations import OperatorActions, RevocationListener
from provisioning.operator_tokens import OperatorTokens
from provisioning.registry import Registry
from provisioning.service import ProvisioningService
from provisioning.tokens import TokenKey


@dataclass(frozen=True, slots=True)
class Services:
    enrollment: ProvisioningService
    operators: OperatorActions
    operator_tokens: OperatorTokens

    @classmethod
    def compose(
        cls,
        *,
        ca: CertificateAuthority,
        registry: Registry,
        audit: AuditSink,
        token_key: TokenKey,
        policy: CertificatePolicy | None = None,
        limits: ServiceLimits | None = None,
        crl_file: Path | None = None,
        listeners: tuple[RevocationListener, ...] = (),
    ) -> Services:
        policy = policy or CertificatePolicy()
        limits = limits or ServiceLimits()
        return cls(
            ProvisioningService(
                ca=ca,
                registry=registry,
                audit=audit,
                token_key=token_key,
                policy=policy,
                limits=limits,
                crl_file=crl_file,
            ),
            OperatorActions(
                ca=ca,
                registry=registry,
                audit=audit,
                token_key=token_key,
                policy=policy,
                limits=limits,
                listeners=listeners,
            ),
            OperatorTokens(registry=registry, audit=audit, token_key=token_key, limits=limits),
        )
