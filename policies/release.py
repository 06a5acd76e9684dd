"""The release contract between the IDMZ release repository and the gateways (ADR 0100).

The repository (`release`, IDMZ side) writes TUF targets; the gateway (`edge.updates`, OT side)
reads them. Neither imports the other: both use this module, the contract's one owner, for
what a target is called, what its signed custom metadata says, and the one decision that
matters: *is this target for this identity?*

Target paths: ``<kind>/<prefix>/release.<stage>``, with ``kind`` ``model`` or ``config``,
``prefix`` an identity prefix (1..6 ISA-95 levels) and ``stage`` ``all`` or ``canary``. An
identity label never contains ``.``, so ``release.all`` can never be read as a level. A gateway
looks its kind up from its own path down to its enterprise; the most specific prefix that offers
it something wins (a line override beats a site-wide release).

Custom metadata (signed with the targets role), under ``custom["idmz"]``::

    {"kind": "model", "prefix": "acme/plant1/press/line1", "stage": "canary",
     "canary": ["acme/plant1/press/line1/cell1/gw-01"], "release": 7,
     "signature": "<the model's ADR 0061 bundle, JSON text>", "reason": "retrained on week 49"}

>>> t = parse_custom({"idmz": {"kind": "model", "prefix": "acme/p1", "stage": "all",
...     "canary": [], "release": 3, "signature": "", "reason": "r"}})
>>> offered_to("acme/p1/a/l1/c/gw", t).allowed
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from policies.decision import Decision, ReasonCode
from policies.errors import PolicyConfigError

CUSTOM_KEY = "idmz"
# The gateway's status message reports its releases under this key (docs/contracts.md):
# {"running": {"model": 7, "config": 3}, "checks": 12,
#  "last": [{"at": 1765000000.0, "kind": "model", "result": "activated|refused|failed",
#            "release": 7, "reason": "..."}]}
STATUS_SECTION = "release"
UPDATE_RESULTS = ("current", "activated", "refused", "failed")
MAX_RELEASE = 2**53  # exact in every JSON parser (the model bundle uses the same bound)
MAX_CANARY = 1000
MAX_REASON_CHARS = 500
MAX_SIGNATURE_CHARS = 256 * 1024


class ReleaseKind(StrEnum):
    MODEL = "model"
    CONFIG = "config"


class ReleaseStage(StrEnum):
    CANARY = "canary"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class StageRequest:
    """``canary:N`` (the first N gateways under the prefix) or ``all``."""

    stage: ReleaseStage
    count: int = 0

    @classmethod
    def parse(cls, text: str) -> StageRequest:
        if text == "all":
            return cls(ReleaseStage.ALL)
        name, _, n = text.partition(":")
        if name == "canary" and n.isdigit() and 0 < int(n) <= MAX_CANARY:
            return cls(ReleaseStage.CANARY, int(n))
        raise PolicyConfigError(
            f"stage must be 'all' or 'canary:N' with 1 <= N <= {MAX_CANARY}; found {text!r}"
        )


@dataclass(frozen=True, slots=True)
class ReleaseTarget:
    """What a target's signed custom metadata says (only `parse_custom` makes one)."""

    kind: ReleaseKind
    prefix: str
    stage: ReleaseStage
    canary: tuple[str, ...]
    release: int
    signature: str  # the model's signature bundle (ADR 0061), "" for a config
    reason: str

    def custom(self) -> dict[str, Any]:
        return {
            CUSTOM_KEY: {
                "kind": self.kind.value,
                "prefix": self.prefix,
                "stage": self.stage.value,
                "canary": list(self.canary),
                "release": self.release,
                "signature": self.signature,
                "reason": self.reason,
            }
        }


def _label_ok(label: str) -> bool:
    # pki.identity's label rule, restated as a check (policies work on paths as strings here
    # because a prefix is not a device; pki.identity.IdentityPrefix is the parser).
    return (
        0 < len(label) <= 63
        and label[0] in "abcdefghijklmnopqrstuvwxyz0123456789"
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_-" for c in label)
    )


def check_prefix(prefix: str, *, levels: int = 6) -> str:
    parts = prefix.split("/") if isinstance(prefix, str) else []
    if not 1 <= len(parts) <= levels or not all(_label_ok(p) for p in parts):
        raise PolicyConfigError(f"not an identity prefix (1..{levels} levels): {prefix!r}")
    return prefix


def target_path(kind: ReleaseKind, prefix: str, stage: ReleaseStage) -> str:
    return f"{kind.value}/{check_prefix(prefix)}/release.{stage.value}"


def parse_custom(custom: Mapping[str, Any] | None) -> ReleaseTarget:
    """The release fields of a target, checked; `PolicyConfigError` names what is wrong."""
    doc = (custom or {}).get(CUSTOM_KEY)
    if not isinstance(doc, Mapping):
        raise PolicyConfigError(f"target has no {CUSTOM_KEY!r} custom metadata")
    try:
        kind, stage = ReleaseKind(doc["kind"]), ReleaseStage(doc["stage"])
        prefix, canary, release = doc["prefix"], doc["canary"], doc["release"]
        signature, reason = doc["signature"], doc["reason"]
    except (KeyError, ValueError) as exc:
        raise PolicyConfigError(f"target custom metadata: {exc!r}") from exc
    if type(release) is not int or not 0 < release <= MAX_RELEASE:
        raise PolicyConfigError(f"release must be an integer 1..{MAX_RELEASE}: {release!r}")
    if not isinstance(canary, list) or len(canary) > MAX_CANARY:
        raise PolicyConfigError("canary must be a list of identities")
    if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS:
        raise PolicyConfigError("signature must be the bundle's JSON text")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise PolicyConfigError(f"reason must be text of at most {MAX_REASON_CHARS} characters")
    for ident in canary:
        check_prefix(ident)
    if stage is ReleaseStage.CANARY and not canary:
        raise PolicyConfigError("a canary target names its gateways")
    return ReleaseTarget(
        kind, check_prefix(prefix), stage, tuple(canary), release, signature, reason
    )


def _under(identity: str, prefix: str) -> bool:
    return identity == prefix or identity.startswith(prefix + "/")


def offered_to(identity: str, target: ReleaseTarget) -> Decision:
    """Whether ``target`` is for the gateway ``identity``: under its prefix, and at stage
    ``all`` or named in its canary."""
    if not _under(identity, target.prefix):
        return Decision.deny(
            ReasonCode.RELEASE_OTHER_PREFIX,
            f"release {target.release} is for {target.prefix}, not {identity}",
        )
    if target.stage is ReleaseStage.CANARY and identity not in target.canary:
        return Decision.deny(
            ReasonCode.RELEASE_NOT_IN_CANARY,
            f"release {target.release} is a canary on {target.prefix} without {identity}",
        )
    return Decision.allow(f"release {target.release} of {target.prefix} ({target.stage})")


def prefixes_of(identity: str) -> list[str]:
    """The identity's prefixes, most specific first (the device itself, then its cell, ...)."""
    parts = identity.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def select_release(
    identity: str, kind: ReleaseKind, lookup: Callable[[str], ReleaseTarget | None]
) -> ReleaseTarget | None:
    """The release of ``kind`` this gateway should run: for its most specific prefix that
    offers one, the canary if it names the gateway, else the stage ``all``. ``lookup(path)``
    returns the verified target at a path (the TUF client), None when there is none."""
    for prefix in prefixes_of(identity):
        for stage in (ReleaseStage.CANARY, ReleaseStage.ALL):
            target = lookup(target_path(kind, prefix, stage))
            if target is None:
                continue
            if target.kind is not kind or target.prefix != prefix or target.stage is not stage:
                continue  # signed, but filed under a path that does not match what it says
            if offered_to(identity, target).allowed:
                return target
    return None


def pick_canary(candidates: Sequence[str], prefix: str, count: int) -> tuple[str, ...]:
    """The first ``count`` gateways under ``prefix`` in name order: deterministic, so the
    operator sees before publishing who gets the canary (``idmz release publish`` prints it)."""
    under = sorted({c for c in candidates if _under(c, prefix)})
    return tuple(under[:count])
