"""Wiring for the provisioning commands: the CA, the registry, the audit log and the token key
under one ``--home``. The CLI is the operator's console on the CA host: operator commands work
directly on these files (and are audited as ``operator:<name>``, see `idmz.operator`); the same
actions are on the HTTP API for remote operators with a role token.

Files under ``<home>/provisioning/``: ``registry.sqlite`` (default registry), ``token-key.pem``
(Ed25519, 0600, signs enrollment and operator tokens), ``server.pem``/``server.key.pem`` (the
service's TLS certificate, issued by the local CA). The CA passphrase is read from
``IDMZ_CA_PASSPHRASE_FILE``/``IDMZ_CA_PASSPHRASE``, else ``<home>/ca/passphrase`` (0600), which is
generated when the CA is first created here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from audit.log import AuditLog
from bedrock.clock import utc_now
from idmz.audit_log import open_audit_log
from idmz.events import ca_created_event, record
from idmz.home import Home
from idmz.secrets import ca_passphrase
from pki.ceremony import init_local_ca
from pki.local import LocalCA
from pki.publication import CAPublication
from policies.document import CertificatePolicy
from provisioning.config import ServiceLimits
from provisioning.operations import RevocationListener
from provisioning.registry import Registry
from provisioning.services import Services
from provisioning.tokens import TokenKey

if TYPE_CHECKING:
    from pki.vault import VaultCA

_log = logging.getLogger("idmz.provisioning")


def default_database_url(home: Home) -> str:
    return f"sqlite:///{home.provisioning_dir / 'registry.sqlite'}"


def ensure_ca(home: Home, *, organization: str) -> None:
    """Create a root and an issuing CA under ``<home>/ca`` if there is none yet."""
    if CAPublication(home.ca_dir).issuing_cert.exists():
        return
    home.ensure()
    passphrase = ca_passphrase(home, create=True, announce=_log.warning)
    paths = init_local_ca(
        home.ca_dir, passphrase=passphrase, organization=organization, now=utc_now()
    )
    record(home, [ca_created_event(paths.root_cert, organization=organization, via="provisioning")])
    _log.warning("created a new local CA in %s", home.ca_dir)


POLICY_NAMES = ("policy.toml", "policy.yaml", "policy.yml")


def certificate_policy(home: Home) -> CertificatePolicy:
    """The certificate policy (validity, renewal window and grace, key rules, expiry alert
    thresholds) from the policy document under ``<home>/policy/`` when there is one, else the
    defaults. A policy document that does not load stops the service (fail closed)."""
    for name in POLICY_NAMES:
        path = home.policy_dir / name
        if path.exists():
            from policies import load_policy

            return load_policy(path.read_text(encoding="utf-8"), source=str(path)).certificates
    return CertificatePolicy()


@dataclass
class Runtime:
    home: Home
    ca: LocalCA | VaultCA
    registry: Registry
    audit: AuditLog
    token_key: TokenKey
    services: Services

    def close(self) -> None:
        self.services.enrollment.close()
        self.audit.close()
        self.registry.close()
        self.ca.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_runtime(
    home: Home,
    *,
    database_url: str | None = None,
    organization: str = "idmz",
    create_ca: bool = True,
    listeners: tuple[RevocationListener, ...] = (),
    limits: ServiceLimits | None = None,
    ca_backend: str = "local",
) -> Runtime:
    """``ca_backend`` ``"vault"``: issue, renew and revoke through Vault's PKI engine, reached as
    `idmz.vault_settings` reads it from the environment; the registry, audit log and token key
    stay here (docs/pki.md section 8)."""
    home.provisioning_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca: LocalCA | VaultCA
    if ca_backend == "vault":
        from idmz.vault_settings import connect_vault

        ca = connect_vault(home)
    else:
        if create_ca:
            ensure_ca(home, organization=organization)
        ca = LocalCA.open(home.ca_dir, passphrase=ca_passphrase(home, create=False))
    registry = Registry.open(database_url or default_database_url(home))
    audit = open_audit_log(home)
    token_key = TokenKey.load_or_create(home.provisioning_dir / "token-key.pem")
    services = Services.compose(
        ca=ca,
        registry=registry,
        audit=audit,
        token_key=token_key,
        policy=certificate_policy(home),
        crl_file=ca.paths.crl_der,
        listeners=listeners,
        limits=limits,
    )
    return Runtime(home, ca, registry, audit, token_key, services)


def client_ca_file(home: Home) -> Path:
    return CAPublication(home.ca_dir).chain
