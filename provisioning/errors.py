"""The provisioning exception tree. Names say what the caller does next.

* ProvisioningError
  x ConfigError               fix the service configuration or data directory
  x UsageError                the operator's command is wrong (unknown device, bad TTL)
  x RefusedError              an untrusted request was refused: reject, audit, do not retry
    + TokenError              the bearer token is missing, forged, expired, replayed or misbound
    + RequestError            the request body (CSR, JSON) is malformed or too large
    + DeviceStateError        the device is unknown, revoked, or its certificate may not renew
  x AccessDeniedError         an authenticated operator lacks the role for this action
  x RateLimitedError          too many requests; ``retry_after_s`` says when to come back
  x UpstreamError             the CA, the registry database or the audit log failed: retry later

Each refusal carries two texts: ``str(exc)`` is the precise reason for the audit record and the
operator's logs; ``public`` is what an untrusted client is told (generic, non-revealing). Neither
ever contains a token, a key or a CSR body.
"""

from __future__ import annotations

import bedrock.errors as category


class ProvisioningError(category.IdmzError):
    """Root of every error the provisioning package raises on purpose."""


class ConfigError(ProvisioningError, category.ConfigError):
    """The service's configuration or data directory is missing or unusable."""


class UsageError(ProvisioningError, category.UsageError):
    """An operator command names something that does not exist or asks for something invalid."""


class RefusedError(ProvisioningError, category.VerificationError):
    """An untrusted request was refused. ``public`` is safe to send to the client."""

    public = "the request was refused"

    def __init__(self, reason: str, *, code: str = "refused") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # a short machine-readable reason for audit details


class TokenError(RefusedError):
    public = "the token is not valid for this request"


class RequestError(RefusedError):
    public = "the request is malformed or was refused"


class DeviceStateError(RefusedError):
    public = "this device may not be issued a certificate"


class AccessDeniedError(ProvisioningError, category.AccessDeniedError):
    """An authenticated operator lacks the role for this action."""


class RateLimitedError(ProvisioningError, category.CapacityError):
    def __init__(self, reason: str, *, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class UpstreamError(ProvisioningError, category.UpstreamError):
    """The CA, the registry database or the audit log failed."""
