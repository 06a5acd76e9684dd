"""Putting a pulled release into service without a restart (ADR 0100).

A model (`ModelActivator`): the TUF client verified the download against the signed targets;
here the model's own signature bundle (carried in the target's signed custom metadata) is
verified as at start (`edge.model_signing.verify_model`, ADR 0061), its signed release must be
the target's, and `edge.model_release.admit_release` must accept it (ADR 0066: never lower).
Then it is staged (written next to the state, atomically), self-tested (loaded by onnxruntime,
checked against the vibration channels, scored on the gateway's latest features) and only
then recorded and swapped in; the gateway swaps scorers on its event loop, so between two
windows. Any failure before the swap leaves the running model, and its files, as they were.

A configuration (`ConfigActivator`): a JSON object of the settings a running gateway can
change (`LIVE_KEYS`); any other key is refused with its reason (it needs a restart).

>>> models = ModelActivator(state_dir, trust, release_state, gateway.use_scorer,
...                          channels, features=gateway.last_features.values)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bedrock.files import write_atomic
from edge.config import VibrationChannel
from edge.errors import ConfigError, ModelVerificationError, ReleaseRefusedError
from edge.featurizer import FEATURE_NAMES
from edge.inference import Scorer
from edge.model_release import admit_release, read_accepted, record_accepted
from edge.model_signing import ModelTrust, verify_model
from edge.monitor import check_model
from edge.updates import Download

# What a running gateway can change without a restart, and the bounds it accepts.
LIVE_KEYS: Mapping[str, tuple[float, float]] = {
    "telemetry_interval_s": (0.1, 3600.0),
    "status_interval_s": (1.0, 3600.0),
    "stale_after_s": (0.5, 86400.0),
}
MAX_CONFIG_BYTES = 64 * 1024
MODEL_POINTER = "model.current"  # names the staging directory of the model in service
_STAGED = re.compile(r"model-[0-9]{1,16}")


def released_model_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where the model in service from the repository lives (model, signature bundle): the
    staging directory ``active/model.current`` names (neither file exists when none does)."""
    active = state_dir / "active"
    try:
        name = (active / MODEL_POINTER).read_text().strip()
    except FileNotFoundError:
        name = ""
    if not _STAGED.fullmatch(name):
        return active / "model.onnx", active / "model.onnx.sig"  # the first layout, or none
    return active / name / "model.onnx", active / name / "model.onnx.sig"


def _stage_model(state_dir: Path, release: int, model: bytes, signature: bytes) -> None:
    """Write the model and its bundle into a directory of their own, then switch the pointer
    to it (one atomic rename): a crash or a full disk at any point leaves a pair that
    verifies, the old one or the new one, never a new model beside the old signature. The
    previous pair is kept; older ones are removed."""
    active = state_dir / "active"
    previous = released_model_paths(state_dir)[0].parent.name  # "active": none staged yet
    staged = active / f"model-{release}"
    staged.mkdir(parents=True, exist_ok=True)
    write_atomic(staged / "model.onnx", model)
    write_atomic(staged / "model.onnx.sig", signature)
    write_atomic(active / MODEL_POINTER, staged.name.encode())
    for old in active.glob("model-*"):
        if old.name not in (staged.name, previous) and _STAGED.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)


def released_config_path(state_dir: Path) -> Path:
    return state_dir / "active" / "config.json"


class ModelActivator:
    def __init__(
        self,
        state_dir: Path,
        trust: ModelTrust,
        release_state: Path,
        use_scorer: Callable[[Scorer], None],
        channels: Sequence[VibrationChannel],
        *,
        features: Callable[[], Iterable[Mapping[str, object]]] = tuple,
    ) -> None:
        self.state_dir = state_dir
        self.trust = trust
        self.release_state = release_state
        self.use_scorer = use_scorer
        self.channels = tuple(channels)
        self.features = features

    def running(self) -> int:
        accepted = read_accepted(self.release_state)
        return accepted.release if accepted is not None else 0

    def activate(self, download: Download) -> str:
        target = download.target
        verified = verify_model(
            download.data, target.signature.encode(), self.trust, now=datetime.now(UTC)
        )
        if verified.release != target.release:
            raise ModelVerificationError(
                f"the model's signature is for release {verified.release}; the repository "
                f"offers it as release {target.release}"
            )
        accepted = admit_release(verified, read_accepted(self.release_state), self.trust)
        scorer = Scorer.from_verified(verified)
        self._self_test(scorer)
        # Stage the files first, then remember the release: a crash in between restarts on the
        # new model (its release is higher), never on a model the state file would refuse.
        _stage_model(self.state_dir, target.release, download.data, target.signature.encode())
        record_accepted(self.release_state, accepted)
        self.use_scorer(scorer)
        return f"model {verified.version} (sha256 {verified.sha256[:16]}...) by {verified.signer}"

    def _self_test(self, scorer: Scorer) -> None:
        """Loads, fits the channels, and scores real recent features to a finite number."""
        check_model(scorer, self.channels)
        rows = [dict(f.get("features", {})) for f in self.features()]  # type: ignore[call-overload]
        if not rows:
            rows = [dict.fromkeys(FEATURE_NAMES, 0.0)]
        for row in rows:
            vec = [float(row.get(n, 0.0)) for n in scorer.feature_names]
            score = float(scorer.score(vec)[0])
            if not math.isfinite(score):
                raise ModelVerificationError(
                    f"model {scorer.version} failed its self-test (score {score})"
                )


@dataclass(frozen=True, slots=True)
class ConfigState:
    release: int
    sha256: str


class ConfigActivator:
    def __init__(self, state_dir: Path, apply: Callable[[Mapping[str, float]], None]) -> None:
        self.state_dir = state_dir
        self.apply = apply
        self.state_path = state_dir / "active" / "config.release"

    def running(self) -> int:
        try:
            return int(json.loads(self.state_path.read_bytes())["release"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the config release state {self.state_path} is damaged") from exc

    def activate(self, download: Download) -> str:
        if download.target.release <= self.running():
            raise ReleaseRefusedError(
                f"config release {download.target.release} is not newer than the running one"
            )
        changes = parse_live_config(download.data)
        path = released_config_path(self.state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, download.data)
        state = ConfigState(download.target.release, download.sha256)
        write_atomic(self.state_path, json.dumps(asdict(state)).encode())
        self.apply(changes)
        return "config " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))


def released_config(state_dir: Path) -> dict[str, float] | None:
    """The configuration release in service (applied again at a start), None if none."""
    try:
        return parse_live_config(released_config_path(state_dir).read_bytes())
    except FileNotFoundError:
        return None


def parse_live_config(data: bytes) -> dict[str, float]:
    """The settings of a config release, or `ConfigError` naming what cannot be applied live."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config release is {len(data)} bytes; at most {MAX_CONFIG_BYTES}")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"config release is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not doc:
        raise ConfigError("config release must be a non-empty JSON object")
    unknown = sorted(set(doc) - set(LIVE_KEYS))
    if unknown:
        raise ConfigError(
            f"config keys {unknown} cannot be applied live (a restart with a new gateway.toml "
            f"is needed); live keys: {sorted(LIVE_KEYS)}"
        )
    changes: dict[str, float] = {}
    for key, value in doc.items():
        low, high = LIVE_KEYS[key]
        if type(value) not in (int, float) or not low <= float(value) <= high:
            raise ConfigError(f"config {key} must be a number in [{low}, {high}]; found {value!r}")
        changes[key] = float(value)
    return changes
