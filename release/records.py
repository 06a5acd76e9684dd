"""What the repository remembers about each release (`history.json`, the change-control
record) and how long each role's metadata stays valid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from policies.release import ReleaseKind, ReleaseStage, ReleaseTarget, target_path
from release.errors import ReleaseRefusedError, ReleaseStateError


@dataclass(frozen=True, slots=True)
class Expiry:
    """How long each role's metadata stays valid; the timestamp is short so a frozen or
    blocked repository is noticed within hours, not weeks."""

    root_days: int = 365
    targets_days: int = 90
    snapshot_days: int = 7
    timestamp_s: int = 86400


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """One change of a channel, as `history.json` keeps it (the change-control record)."""

    change: str  # published | promoted | rolled_back
    release: int
    kind: str
    prefix: str
    stage: str
    sha256: str
    length: int
    reason: str
    actor: str
    at: str
    canary: tuple[str, ...] = ()
    rollback_of: int = 0  # the release a rollback replaced
    version: str = ""  # the model's own version string, when known
    signature: str = field(default="", repr=False)

    @property
    def path(self) -> str:
        return target_path(ReleaseKind(self.kind), self.prefix, ReleaseStage(self.stage))

    def target(self) -> ReleaseTarget:
        return ReleaseTarget(
            ReleaseKind(self.kind),
            self.prefix,
            ReleaseStage(self.stage),
            self.canary,
            self.release,
            self.signature,
            self.reason,
        )


def record_of(history: Sequence[ReleaseRecord], target: ReleaseTarget) -> ReleaseRecord:
    """The latest record of the release ``target`` offers."""
    for rec in reversed(history):
        if rec.release == target.release and rec.prefix == target.prefix:
            return rec
    raise ReleaseStateError(f"release {target.release} is offered but not in the history")


def record_before(
    history: Sequence[ReleaseRecord], kind: ReleaseKind, prefix: str, current: ReleaseTarget
) -> ReleaseRecord:
    """The last artifact every gateway under ``prefix`` ran before ``current`` (a different
    artifact: a rollback that offers the same bytes again would change nothing)."""
    sha_now = record_of(history, current).sha256
    earlier = [
        r
        for r in history
        if r.kind == kind.value and r.prefix == prefix and r.stage == ReleaseStage.ALL.value
        and r.release < current.release and r.sha256 != sha_now
    ]  # fmt: skip
    if not earlier:
        raise ReleaseRefusedError(f"no earlier {kind} on {prefix} to roll back to")
    return earlier[-1]
