"""A short, bounded coverage-guided fuzz run of each target in `tests.fuzz.harness` (atheris):
the MQTT 5 decoder on to the inspector, and the inspector with strict JSON. Each run starts
from the seeds in ``tests/fuzz/corpus/<target>`` (left untouched) and must end without a crash.
Longer runs: docs/relay.md, "Fuzzing"."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "tests" / "fuzz"
SECONDS_PER_TARGET = 8

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install '.[dev]'; it needs a CPython with wheels)",
)


@pytest.mark.parametrize("target", ["codec", "inspector"])
def test_hostile_bytes_never_crash_the_decoder_or_the_inspector(
    target: str, tmp_path: Path
) -> None:
    seeds = FUZZ / "corpus" / target
    before = sorted(p.name for p in seeds.iterdir())
    found = tmp_path / "found"
    found.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.harness", target,
         f"-max_total_time={SECONDS_PER_TARGET}", f"-artifact_prefix={tmp_path}/",
         f"-dict={FUZZ / 'json.dict'}", "-max_len=8192", str(found), str(seeds)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, (crashes, result.stderr[-4000:])
    assert "Done" in result.stderr and "runs in" in result.stderr
    assert sorted(p.name for p in seeds.iterdir()) == before  # the seeds stay as they are
