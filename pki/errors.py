"""The pki exception tree. Names say what the caller does next.

* PKIError
  x ConfigError              fix the CA configuration or data directory (raised at startup)
  x MalformedIdentityError   a name is not a valid ISA-95 / SPIFFE identity: reject the input
  x VerificationError        untrusted input failed a check: reject, audit, never retry
    + CSRError               the CSR is malformed, fails proof of possession, or asks for too much
    + CertificateError       a certificate or chain does not verify (unknown CA, expired, profile)
    + RevokedCertificateError  the certificate is on the current CRL
  x IssuanceRefusedError     a well-formed request that the CA will not honour (validity, policy)
  x UpstreamError            something outside idmz failed (Vault, the filesystem): maybe retry
    + KeyStoreError

Messages say what was expected and what was found and name the serial or identity; they never
contain key material, passphrases, tokens or CSR bodies.
"""

from __future__ import annotations

import bedrock.errors as category


class PKIError(category.IdmzError):
    """Root of every error the pki package raises on purpose."""


class ConfigError(PKIError, category.ConfigError):
    """The CA's configuration or data directory is missing or unusable."""


class MalformedIdentityError(PKIError, category.VerificationError, ValueError):
    """A string is not a valid identity name."""


class VerificationError(PKIError, category.VerificationError):
    """Untrusted input failed a check."""


class CSRError(VerificationError):
    """A certificate signing request was refused."""


class CertificateError(VerificationError):
    """A certificate or chain failed verification."""


class RevokedCertificateError(CertificateError):
    """The certificate's serial is on the current CRL."""


class IssuanceRefusedError(PKIError, category.AccessDeniedError):
    """A well-formed request that the CA refuses to honour."""


class UpstreamError(PKIError, category.UpstreamError):
    """A dependency outside idmz failed."""


class KeyStoreError(UpstreamError):
    """The key store or CA backend (local files or Vault) failed."""
