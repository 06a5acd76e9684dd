"""How idmz reaches Vault: ``<home>/ca/vault.toml`` overridden by the environment the README
names (``VAULT_ADDR``, ``VAULT_ROLE_ID``, ``VAULT_SECRET_ID_FILE`` or ``VAULT_SECRET_ID``,
``VAULT_PKI_MOUNT``, ``VAULT_PKI_ROLE``, ``VAULT_PKI_SERVER_ROLE``, ``VAULT_PKI_SIGNER_ROLE``,
``VAULT_NAMESPACE``,
``VAULT_CACERT``); never the command line. A secret_id in a file must be 0600, and the file is
read again at every AppRole login, so the operator can rotate it without a restart (ADR 0019).
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedrock.files import write_atomic
from idmz.home import Home, SettingsError, load_secret, read_secret_file

if TYPE_CHECKING:
    from pki.vault import VaultCA
    from pki.vault_config import VaultConfig

_log = logging.getLogger("idmz.vault")
VAULT_TOML = "vault.toml"
_ENV = (
    ("url", "VAULT_ADDR"),
    ("mount", "VAULT_PKI_MOUNT"),
    ("role", "VAULT_PKI_ROLE"),
    ("role_id", "VAULT_ROLE_ID"),
    ("namespace", "VAULT_NAMESPACE"),
    ("ca_bundle", "VAULT_CACERT"),
)
# Per-profile roles (profiles not listed use VAULT_PKI_ROLE).
_ROLE_ENV = (("server", "VAULT_PKI_SERVER_ROLE"), ("model-signer", "VAULT_PKI_SIGNER_ROLE"))


def vault_settings(
    home: Home, environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, Any], Callable[[], str] | None]:
    """The settings mapping for `VaultConfig.from_mapping`, and the secret_id reader when the
    secret_id comes from a file (``VAULT_SECRET_ID_FILE`` or ``secret_id_file`` in vault.toml)."""
    settings: dict[str, Any] = {}
    toml_path = home.ca_dir / VAULT_TOML
    if toml_path.exists():
        with toml_path.open("rb") as fh:
            settings.update(tomllib.load(fh))
    for key, var in _ENV:
        if environ.get(var):
            settings[key] = environ[var]
    for profile, var in _ROLE_ENV:
        if environ.get(var):
            settings["roles"] = {**dict(settings.get("roles", {})), profile: environ[var]}
    secret_file = environ.get("VAULT_SECRET_ID_FILE") or settings.pop("secret_id_file", None)
    reader: Callable[[], str] | None = None
    if secret_file:
        path = Path(secret_file)

        def reader() -> str:
            return read_secret_file(path).decode()

        settings["secret_id"] = reader()
    else:
        secret = load_secret("VAULT_SECRET_ID", environ=environ)
        if secret is not None:
            settings["secret_id"] = secret.decode()
    return settings, reader


BACKEND_FILE = "backend"  # in <home>/ca: which CA backend this home uses (one per home)
BACKENDS = ("local", "vault")


def resolve_ca_backend(home: Home, requested: str | None) -> str:
    """The CA backend for a command on ``home``: the one asked for, else the one the home
    records (``<home>/ca/backend``, written when Vault is first used), else ``local``. A home
    serves one backend (ADR 0019): asking for the other one is refused, not mixed."""
    marker = home.ca_dir / BACKEND_FILE
    recorded = marker.read_text(encoding="utf-8").strip() if marker.exists() else None
    if recorded is not None and recorded not in BACKENDS:
        raise SettingsError(f"{marker} names CA backend {recorded!r}; expected one of {BACKENDS}")
    if requested is not None and recorded is not None and requested != recorded:
        raise SettingsError(
            f"{home.root} uses the {recorded} CA backend ({marker}); it cannot also use {requested}"
        )
    local_key = home.ca_dir / "issuing.key.pem"
    if recorded is None and requested == "vault" and local_key.exists():
        raise SettingsError(f"{home.root} has a local CA ({local_key}); it cannot also use vault")
    return requested or recorded or "local"


def vault_config(home: Home) -> VaultConfig:
    from pki.vault_config import VaultConfig

    settings, reader = vault_settings(home)
    return VaultConfig.from_mapping(settings, secret_id_reader=reader)


def connect_vault(home: Home) -> VaultCA:
    """The Vault backend for ``home``: its ledger and CA files under ``<home>/ca``."""
    from pki.vault import VaultCA

    ca = VaultCA.connect(vault_config(home), ca_dir=home.ca_dir)
    marker = home.ca_dir / BACKEND_FILE
    if not marker.exists():
        write_atomic(marker, b"vault\n")
    return ca


# Vault's CRL is polled this often: a revocation made elsewhere (another service instance, an
# operator in Vault itself) reaches <home>/ca/crl.pem, and so the brokers and the relay, within
# the live cut-off budget of 5 s (ADR 0051).
CRL_POLL_S = 2.0


def republish_crl_until(
    ca: VaultCA, stop: threading.Event, *, clock: Callable[[], datetime]
) -> None:
    """Run in a thread beside the service: fetch, verify and republish Vault's CRL on change and
    before its nextUpdate (`VaultCA.current_crl`) until ``stop`` is set. Failures are logged and
    retried at the next poll; the published CRL stays until a verified newer one replaces it."""
    while not stop.wait(CRL_POLL_S):
        try:
            ca.current_crl(now=clock())
        except Exception:  # noqa: BLE001 - keep serving; the next poll retries
            _log.exception("republishing Vault's CRL failed")
