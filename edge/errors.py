"""Errors of the edge gateway. Names say what the caller does next.

* `ConfigError`: fix the gateway configuration or the tag map, then start again (exit code 2).
* `UpstreamError` / `PeerUnavailableError`: a PLC, OPC UA server or broker failed; the gateway
  retries by itself, a one-shot command exits with code 3.
* `ModelVerificationError`: a model was refused (signature, certificate, format); nothing was
  loaded and the gateway keeps the model it already runs, or runs without one.
* `OutboxFullError`: the outbox is at its byte cap and its policy is ``refuse-new``.
"""

from __future__ import annotations

import bedrock.errors as category


class EdgeError(category.IdmzError):
    """Base of every error the edge package raises."""


class ConfigError(EdgeError, category.ConfigError):
    """The gateway configuration, tag map or a command argument is invalid."""


class UpstreamError(EdgeError, category.UpstreamError):
    """A peer (PLC, OPC UA server, Modbus device, MQTT broker) failed or answered wrongly."""


class PeerUnavailableError(UpstreamError):
    """A peer could not be reached (refused, timed out, went away)."""


class ModelVerificationError(EdgeError, category.VerificationError):
    """A model or its signature bundle did not verify; the model must not be run."""


class ModelRollbackError(ModelVerificationError):
    """A validly signed model is older than the release this gateway already accepted, and is
    not a rollback signed by a rollback signer; the model must not be run."""


class ReleaseRefusedError(EdgeError, category.VerificationError):
    """A release pulled from the repository was refused (not newer, not applicable live);
    the running version stays in service."""


class OutboxStorageError(EdgeError, category.UpstreamError):
    """The outbox's disk failed (full, read-only, I/O error); the message was not stored."""


class OutboxFullError(EdgeError, category.CapacityError):
    """The outbox is full and its overflow policy refuses new messages."""


class InferenceError(EdgeError, category.OperationError):
    """A verified model failed while scoring (wrong input shape, runtime failure)."""
