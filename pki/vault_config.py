"""How idmz reaches Vault: `VaultConfig` (validated settings) and Vault's serial form.

Kept apart from `pki.vault` so settings can be built and checked without importing ``hvac``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pki.errors import ConfigError
from pki.keys import KeyPolicy
from pki.profiles import ProfileName

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


# The PKI role that signs device certificates unless VAULT_PKI_ROLE names another (docs/pki.md).
DEFAULT_DEVICE_ROLE = "idmz-device"


@dataclass(frozen=True, slots=True)
class VaultConfig:
    """Where Vault is and how idmz logs in (AppRole). ``roles`` maps a profile to a Vault role
    when profiles need different EKUs; ``role`` is used for any profile not listed."""

    url: str
    role_id: str = field(repr=False)
    secret_id: str = field(repr=False)
    mount: str = "pki"
    role: str = DEFAULT_DEVICE_ROLE
    roles: Mapping[ProfileName, str] = field(default_factory=dict)
    approle_mount: str = "approle"
    namespace: str | None = None
    ca_bundle: str | None = None  # PEM bundle that signs Vault's TLS certificate
    timeout_s: float = 10.0
    key_policy: KeyPolicy = field(default_factory=KeyPolicy)
    # Reads the current secret_id at every login (a 0600 file the operator rotates); when set,
    # ``secret_id`` is only the value read at start. Built by `idmz`, which owns file reading.
    secret_id_reader: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    # Renew the AppRole token once less than this fraction of its lease remains.
    renew_at_fraction: float = 1 / 3
    # Ask Vault to rebuild its CRL (crl/rotate) once less than this remains before nextUpdate.
    crl_refresh_margin: timedelta = timedelta(hours=12)

    def current_secret_id(self) -> str:
        return self.secret_id_reader() if self.secret_id_reader is not None else self.secret_id

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"Vault URL must be https://host[:port]; found {self.url!r}")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            # The AppRole secret_id and the token would cross the network in clear text.
            raise ConfigError(
                f"Vault URL {self.url!r} is plain http to a remote host; use https "
                "(plain http is accepted on loopback only)"
            )
        for name in ("role_id", "secret_id", "mount", "role"):
            if not getattr(self, name):
                raise ConfigError(f"Vault setting {name} is empty")

    def role_for(self, profile: ProfileName) -> str:
        return self.roles.get(profile, self.role)

    @classmethod
    def from_mapping(
        cls, settings: Mapping[str, Any], *, secret_id_reader: Callable[[], str] | None = None
    ) -> VaultConfig:
        """Build from a TOML table / environment mapping (keys as in docs/pki.md)."""
        missing = [k for k in ("url", "role_id", "secret_id") if not settings.get(k)]
        if missing:
            raise ConfigError(
                f"Vault backend needs {', '.join(missing)} "
                "(VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID[_FILE] or <home>/ca/vault.toml)"
            )
        unknown = set(settings) - {
            "url", "role_id", "secret_id", "mount", "role", "roles", "approle_mount",
            "namespace", "ca_bundle", "timeout_s",
        }  # fmt: skip
        if unknown:
            raise ConfigError(f"unknown Vault settings {sorted(unknown)}")
        roles = {ProfileName(k): str(v) for k, v in dict(settings.get("roles", {})).items()}
        return cls(
            url=str(settings["url"]),
            role_id=str(settings["role_id"]),
            secret_id=str(settings["secret_id"]),
            mount=str(settings.get("mount", "pki")),
            role=str(settings.get("role", DEFAULT_DEVICE_ROLE)),
            roles=roles,
            approle_mount=str(settings.get("approle_mount", "approle")),
            namespace=settings.get("namespace"),
            ca_bundle=settings.get("ca_bundle"),
            timeout_s=float(settings.get("timeout_s", 10.0)),
            secret_id_reader=secret_id_reader,
        )


def vault_serial(serial: int) -> str:
    """Vault's serial form: the serial's bytes as colon-separated lower-case hex pairs."""
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    return ":".join(f"{b:02x}" for b in raw)
