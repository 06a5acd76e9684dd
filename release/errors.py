"""Errors of the release repository. Names say what the caller does next.

* `ReleaseConfigError`: fix the repository, a key file or a command argument (exit code 2).
* `ReleaseRefusedError`: a well-formed request the repository refuses (nothing to promote, no
  earlier release to roll back to, a signer that is not a targets key): nothing changed.
* `ReleaseStateError`: the repository on disk is damaged or was changed by hand; restore it.
"""

from __future__ import annotations

import bedrock.errors as category


class ReleaseError(category.IdmzError):
    """Root of every error the release package raises on purpose."""


class ReleaseConfigError(ReleaseError, category.ConfigError):
    """The repository, a key or an argument is invalid."""


class ReleaseRefusedError(ReleaseError, category.AccessDeniedError):
    """A request the repository refuses; nothing was changed."""


class ReleaseStateError(ReleaseError, category.VerificationError):
    """The repository's files do not verify or do not agree with each other."""
