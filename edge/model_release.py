"""Model rollback protection: a gateway never goes back to an older signed model by itself.

Every signed model carries a release number (`edge.model_signing`, bundle v2). The gateway
remembers the highest release it accepted, and the SHA-256 of the model it accepted last, in
``<model>.release`` next to the model (written atomically and fsynced before the model is
used). A validly signed model is then accepted only if

* its release is higher than the remembered one, or it is the very same model (a restart);
* or it is a signed **rollback**: its statement names the release it replaces
  (``rollback_of``), that is exactly the release this gateway stands at (so a rollback cannot
  be replayed once the fleet has moved on), and its signer is one of the trust's
  ``rollback_signers`` (empty: no rollback is accepted). The remembered release stays the
  replaced one: its model, or anything older, is still refused afterwards.

    >>> accepted = admit_release(verified, read_accepted(path), trust)
    >>> record_accepted(path, accepted)

`admit_release` decides without I/O; `read_accepted`/`record_accepted` are the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bedrock.files import write_atomic
from edge.errors import ModelRollbackError, ModelVerificationError
from edge.model_signing import MAX_RELEASE, ModelTrust, VerifiedModel

MAX_STATE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class AcceptedRelease:
    """What a gateway stands at: the highest release accepted, and the model it runs."""

    release: int
    sha256: str
    version: str
    rollback: bool = False  # the model is an operator-signed rollback below ``release``


def release_state_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".release")


def admit_release(
    model: VerifiedModel, accepted: AcceptedRelease | None, trust: ModelTrust
) -> AcceptedRelease:
    """The release state after running ``model``, or `ModelRollbackError` saying why not."""
    here = "release 0 (no release)" if model.release == 0 else f"release {model.release}"
    if model.rollback_of:
        if model.signer not in trust.rollback_signers:
            raise ModelRollbackError(
                f"model {model.version} is a rollback to {here} signed by {model.signer}, "
                "who is not in rollback_signers"
            )
        # A gateway with no state yet joins a fleet that was rolled back: it stands where the
        # fleet stood.
        standing = accepted.release if accepted is not None else model.rollback_of
        if model.rollback_of != standing:
            raise ModelRollbackError(
                f"model {model.version} rolls back release {model.rollback_of}, but this "
                f"gateway stands at release {standing}"
            )
        return AcceptedRelease(standing, model.sha256, model.version, rollback=True)
    fresh = AcceptedRelease(model.release, model.sha256, model.version)
    if accepted is None or model.release > accepted.release:
        return fresh
    if model.release == accepted.release and model.sha256 == accepted.sha256:
        return accepted
    raise ModelRollbackError(
        f"model {model.version} ({here}, sha256 {model.sha256[:16]}...) would replace release "
        f"{accepted.release} (model {accepted.version}, sha256 {accepted.sha256[:16]}...); "
        f"only a higher release, or a rollback signed with rollback_of {accepted.release} by "
        "one of rollback_signers, may"
    )


def read_accepted(path: Path) -> AcceptedRelease | None:
    """The remembered release, None before the first model. A state file that cannot be read
    refuses every model (fail closed) rather than starting over."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelVerificationError(f"cannot read the model release state {path}: {exc}") from exc
    try:
        if len(data) > MAX_STATE_BYTES:
            raise ValueError("too large")
        doc = json.loads(data)
        state = AcceptedRelease(
            doc["release"], str(doc["sha256"]), str(doc["version"]), doc["rollback"]
        )
        if type(state.release) is not int or not 0 <= state.release <= MAX_RELEASE:
            raise ValueError(f"release {state.release!r}")
        if type(state.rollback) is not bool or len(state.sha256) != 64:
            raise ValueError("rollback or sha256")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelVerificationError(
            f"the model release state {path} is damaged ({exc}); restore it or remove it "
            "deliberately to accept any validly signed model again"
        ) from exc
    return state


def record_accepted(path: Path, accepted: AcceptedRelease) -> None:
    """Remember ``accepted`` durably (atomic replace, fsynced) before the model runs."""
    try:
        write_atomic(path, (json.dumps(asdict(accepted), sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise ModelVerificationError(f"cannot record the model release in {path}: {exc}") from exc
