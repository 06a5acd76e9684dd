"""The AppRole session `pki.vault.VaultCA` calls Vault through: login, renewal of the token's
lease before it runs out (``renew-self``), a new login when it cannot be renewed or Vault
answers 403, and the one translation of hvac/requests exceptions into `KeyStoreError` (Vault
failed or is unreachable) and `IssuanceRefusedError` (Vault refused the request).

Never echoes the AppRole credentials; the secret_id is read at each login, so a rotated one is
picked up by the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from pki.errors import IssuanceRefusedError, KeyStoreError
from pki.vault_answers import TokenLease
from pki.vault_config import VaultConfig

_T = TypeVar("_T")


class VaultSession:
    """One hvac client and its AppRole token. Thread-safe: logins and renewals under ``lock``."""

    def __init__(
        self, config: VaultConfig, client: Any, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self.client = client
        self._monotonic = monotonic
        self.lock = threading.Lock()
        self._token = TokenLease(obtained_at=monotonic(), lease_s=0.0, renewable=False)
        self.renewals = 0  # AppRole token renewals (renew-self), for operators and tests
        self.logins = 0

    @classmethod
    def open(cls, config: VaultConfig) -> VaultSession:
        """A client for ``config`` (not logged in yet: `login` under ``lock``)."""
        client = hvac.Client(
            url=config.url,
            namespace=config.namespace,
            verify=config.ca_bundle if config.ca_bundle else True,
            timeout=config.timeout_s,
        )
        return cls(config, client)

    def login(self) -> None:
        """AppRole login (under ``self.lock``). The secret_id is read now, so a rotated one is
        picked up by the next login."""
        try:
            secret_id = self._config.current_secret_id()
        except Exception as exc:
            raise KeyStoreError(f"cannot read the Vault AppRole secret_id: {exc}") from exc
        started = self._monotonic()
        try:
            response = self.client.auth.approle.login(
                role_id=self._config.role_id,
                secret_id=secret_id,
                mount_point=self._config.approle_mount,
            )
        except hvac.exceptions.VaultError as exc:
            # Vault answers 400 for a wrong or expired secret_id; either way the credentials,
            # not the request, are at fault. Never echo them.
            raise KeyStoreError(
                f"Vault AppRole login at {self._config.url} failed ({type(exc).__name__}: "
                f"{_errors(exc)}); check the role_id/secret_id and the secret_id's TTL"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise KeyStoreError(f"cannot reach Vault at {self._config.url} for login") from exc
        self._token = TokenLease.from_auth(response, obtained_at=started)
        self.logins += 1

    def _fresh_token(self) -> None:
        """Renew the AppRole token before it expires (``renew-self`` once less than
        ``renew_at_fraction`` of its lease remains); when it cannot be renewed (not renewable,
        its max TTL reached, or revoked) log in again. Without a lease (a root or periodic
        token) nothing is done."""
        with self.lock:
            lease = self._token
            if lease.lease_s <= 0:
                return
            now = self._monotonic()
            if lease.remaining_s(now) > lease.lease_s * self._config.renew_at_fraction:
                return
            if lease.renewable:
                try:
                    renewed = TokenLease.from_auth(
                        self.client.auth.token.renew_self(), obtained_at=now
                    )
                except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
                    renewed = None
                # A renewal capped by the token's max TTL buys too little: log in instead.
                if renewed is not None and renewed.lease_s > lease.lease_s * (
                    self._config.renew_at_fraction
                ):
                    self._token = renewed
                    self.renewals += 1
                    return
            self.login()

    def call(self, what: str, func: Callable[[], _T]) -> _T:
        """Run ``func`` with a fresh token; on 403 (token expired or revoked early) log in again
        once and retry."""
        self._fresh_token()
        try:
            return self._call_once(what, func, translate_forbidden=False)
        except hvac.exceptions.Forbidden:
            with self.lock:
                self.login()
            return self._call_once(what, func)

    def _call_once(
        self, what: str, func: Callable[[], _T], *, translate_forbidden: bool = True
    ) -> _T:
        try:
            return func()
        except hvac.exceptions.Forbidden as exc:
            if not translate_forbidden:
                raise
            raise KeyStoreError(f"Vault refused {what}: permission denied") from exc
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath) as exc:
            raise IssuanceRefusedError(f"Vault refused {what}: {_errors(exc)}") from exc
        except hvac.exceptions.VaultError as exc:
            raise KeyStoreError(
                f"Vault failed {what}: {type(exc).__name__}: {_errors(exc)}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise KeyStoreError(f"cannot reach Vault at {self._config.url} for {what}") from exc


def _errors(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(e)[:300] for e in errors)
    return "no detail"
