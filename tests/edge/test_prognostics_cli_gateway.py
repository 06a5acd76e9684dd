"""`idmz model train --run-to-failure` and `idmz model score` as a user runs them, and a gateway
publishing health, alarm level and RUL from a signed model (fed directly, no servers)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.config import GatewayConfig, VibrationChannel
from edge.errors import ConfigError
from edge.featurizer import Featurizer
from edge.gateway import Gateway
from edge.health import HealthSettings
from edge.outbox import Outbox, OutboxLimits
from edge.rul import OperatingCondition, RulModel
from edge.run_recording import RunRecording, run_features
from edge.sources import OpcUaSource
from edge.tagmap import Quality, Reading, TagSpec
from edge.training import fit_run_to_failure
from pki.identity import DeviceIdentity
from tests.edge.harness import signed_scorer
from tests.edge.rtf import FS, FZ, SNAPSHOT, TRAINING, Run
from tests.support.ca import GATEWAY_ID, ProductCA

FIELDS = {"t_s", "score", "health", "alarm", "rul_s", "rul_low_s", "rul_high_s"}


def idmz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idmz", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("rtf")
    files = [str(r.write(d / f"run{i}.npz")) for i, r in enumerate(TRAINING)]
    model = d / "model.onnx"
    out = idmz(
        "model", "train", "--run-to-failure", *files, "--out", str(model),
        "--baseline-s", "300", "--band-low", "500", "--band-high", "2000", "--version", "rtf-cli",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["prognostics"]["summary"]["runs"] == 3
    # each run's meta names its speed and load: the life prior can be rescaled (ADR 0138)
    assert report["prognostics"]["rul"]["conditions"] == [[1800.0, 4000.0]] * 3
    return model, Run(life_s=3500.0, base_g=2.0, seed=9).write(d / "unseen.npz")


def test_score_prints_one_json_object_per_snapshot_in_order(trained: tuple[Path, Path]) -> None:
    model, recording = trained
    out = idmz("model", "score", "--model", str(model), "--recording", str(recording), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    t = np.load(recording)["t_rel_s"]
    assert len(rows) == t.size and all(set(r) >= FIELDS for r in rows)
    assert [r["t_s"] for r in rows] == pytest.approx(list(t), abs=1e-3)  # t_rel_s, not the index
    baseline = [r for r in rows if r["t_s"] < 300.0]
    assert all(r["rul_s"] is None and r["health"] is None for r in baseline)
    later = [r for r in rows if r["t_s"] >= 310.0]
    assert all(r["rul_low_s"] <= r["rul_s"] <= r["rul_high_s"] for r in later)
    assert rows[-1]["alarm"] == "alarm" and rows[len(rows) // 2]["alarm"] == "none"


def test_score_learns_the_baseline_it_is_told(trained: tuple[Path, Path]) -> None:
    model, recording = trained
    out = idmz(
        "model", "score", "--model", str(model), "--recording", str(recording), "--json",
        "--baseline-s", "1000",
    )  # fmt: skip
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert next(r["t_s"] for r in rows if r["health"] is not None) >= 1000.0


def test_score_refuses_a_model_without_prognostics(tmp_path: Path) -> None:
    model = tmp_path / "plain.onnx"
    assert idmz("model", "train", "--from-simulator", "20", "--out", str(model)).returncode == 0
    rec = Run(life_s=200.0).write(tmp_path / "r.npz")
    out = idmz("model", "score", "--model", str(model), "--recording", str(rec), "--json")
    assert out.returncode == 2 and "--run-to-failure" in out.stderr


def test_train_refuses_to_mix_healthy_and_run_to_failure(tmp_path: Path) -> None:
    rec = str(Run(life_s=200.0).write(tmp_path / "r.npz"))
    out = idmz("model", "train", "--run-to-failure", rec, "--healthy", rec, "--out", "m.onnx")
    assert out.returncode == 2 and not (tmp_path / "m.onnx").exists()


# -- the gateway ---------------------------------------------------------------------------

WAVE = TagSpec("vib", "plc", "ns=2;s=v", "g", "bearing1", "acme/p/a/l/c/bearing1", kind="waveform")


def gateway_model(test_ca: ProductCA) -> Any:
    def feats(run: Run) -> Any:
        a = run.arrays()
        rec = RunRecording(
            (a["acc_horiz"].astype(np.float64), a["acc_vert"].astype(np.float64)),
            a["t_rel_s"], float(FS), 1800.0, "synthetic",
        )  # fmt: skip
        return run_features(rec, Featurizer(FZ), shaft_rpm=1800.0)

    model = fit_run_to_failure(
        [feats(r) for r in TRAINING], FZ, window_s=0.1, version="gw-rtf", sources=["a", "b", "c"],
        health=HealthSettings(baseline_s=300.0), conditions=[TRAINED_AT] * len(TRAINING),
    )  # fmt: skip
    return signed_scorer(test_ca, model.to_onnx().SerializeToString())


@pytest.fixture(scope="module")
def rtf_scorer(test_ca: ProductCA) -> Any:
    return gateway_model(test_ca)


TRAINED_AT = OperatingCondition(1800.0, 4000.0)


def gateway(
    tmp: Path,
    scorer: Any,
    alarms: list[Mapping[str, Any]],
    state: Path | None = None,
    load_n: float | None = None,
) -> Gateway:
    config = GatewayConfig(
        identity=DeviceIdentity.parse(GATEWAY_ID),
        tags=(WAVE,),
        outbox_path=tmp / "o.db",
        opcua=(OpcUaSource("plc", "opc.tcp://127.0.0.1:1/x"),),
        vibration=(VibrationChannel("vib", FZ, window_s=0.1, shaft_rpm=1800.0, load_n=load_n),),
        alarm_log=tmp / "alarms.jsonl",
        state_dir=state,
    )
    return Gateway(
        config,
        outbox=Outbox.open(config.outbox_path, OutboxLimits()),
        scorer=scorer,
        alarm_callback=alarms.append,
        clock=lambda: 1_700_000_000.0,
    )


def feed(gw: Gateway, a: dict[str, Any], rows: slice = slice(None)) -> list[dict[str, Any]]:
    """One snapshot per ~10 s (a gap between blocks each time); returns the features data."""
    t0 = 1_700_000_000.0
    after = gw.outbox.stats(now=t0).depth
    for t, block in zip(a["t_rel_s"][rows], a["acc_horiz"][rows], strict=True):
        gw.on_reading(Reading("vib", block.astype(np.float64), Quality.GOOD, t0 + float(t)))
    msgs = gw.outbox.next_batch(after_seq=0, limit=100_000)[after:]
    return [json.loads(m.payload)["data"] for m in msgs if m.topic.endswith("/features")]


def test_the_gateway_publishes_health_alarm_level_and_rul_and_raises_each_rise(
    rtf_scorer: Any, tmp_path: Path
) -> None:
    alarms: list[Mapping[str, Any]] = []
    gw = gateway(tmp_path, rtf_scorer, alarms)
    a = Run(life_s=3000.0, base_g=1.5, seed=41).arrays()
    feats = feed(gw, a)
    msgs = gw.outbox.next_batch(after_seq=0, limit=10_000)
    assert len(feats) == a["t_rel_s"].size == gw.windows
    assert feats[0]["rul_s"] is None and feats[0]["alarm"] == "none"  # learning the baseline
    assert feats[-1]["alarm"] == "alarm" and feats[-1]["rul_s"] is not None
    assert feats[-1]["rul_low_s"] <= feats[-1]["rul_s"] <= feats[-1]["rul_high_s"]
    assert 0.0 <= feats[len(feats) // 2]["health"] < 0.2 < feats[-1]["health"]
    rises = [e["alarm"] for e in alarms if "alarm_level" in e["reasons"]]
    assert rises == ["advisory", "alarm"] or rises == ["alarm"]  # each rise raised once
    events = [json.loads(m.payload)["data"] for m in msgs if m.topic.endswith("/events/anomaly")]
    assert len(events) == len(alarms) and all("rul_s" in e and "score" in e for e in events)
    assert a["acc_horiz"].shape[1] == SNAPSHOT


def test_a_channel_configured_with_a_heavier_load_than_the_training_runs_is_given_less_life(
    rtf_scorer: Any, tmp_path: Path
) -> None:
    a = Run(life_s=3000.0, base_g=1.5, seed=47).arrays()
    rows = slice(0, a["t_rel_s"].size // 2)  # healthy so far: the estimate rests on the prior
    as_trained = feed(gateway(tmp_path / "1", rtf_scorer, [], load_n=4000.0), a, rows)
    heavier = feed(gateway(tmp_path / "2", rtf_scorer, [], load_n=5000.0), a, rows)
    unknown = feed(gateway(tmp_path / "3", rtf_scorer, []), a, rows)
    assert heavier[-1]["rul_high_s"] < as_trained[-1]["rul_high_s"]
    assert heavier[-1]["rul_s"] <= as_trained[-1]["rul_s"] == unknown[-1]["rul_s"]


def test_a_load_without_a_nominal_speed_is_refused() -> None:
    with pytest.raises(ConfigError, match="load_n"):
        VibrationChannel("vib", FZ, shaft_speed_tag="speed", load_n=4000.0)
    with pytest.raises(ConfigError, match="load_n"):
        VibrationChannel("vib", FZ, shaft_rpm=1800.0, load_n=0.0)


def test_a_restart_on_a_worn_machine_does_not_relearn_its_wear_as_healthy(
    rtf_scorer: Any, tmp_path: Path
) -> None:
    a = Run(life_s=3000.0, base_g=1.5, seed=43).arrays()
    n = a["t_rel_s"].size
    state = tmp_path / "state"
    state.mkdir()
    first = feed(gateway(tmp_path / "1", rtf_scorer, [], state), a, slice(0, n * 9 // 10))
    record = state / "commissioning-vib.json"
    assert record.stat().st_mode & 0o777 == 0o600
    alarms: list[Mapping[str, Any]] = []
    again = feed(gateway(tmp_path / "2", rtf_scorer, alarms, state), a, slice(n * 9 // 10, n))
    assert again[0]["health"] is not None  # no new baseline to learn: it was kept
    assert again[0]["health"] >= first[-1]["health"]  # the wear seen before the restart stays
    assert again[-1]["alarm"] == "alarm" and any(e["alarm"] == "alarm" for e in alarms)
    assert again[-1]["rul_s"] < first[len(first) // 2]["rul_s"]  # age went on, not from zero
    fresh = feed(gateway(tmp_path / "3", rtf_scorer, []), a, slice(n * 9 // 10, n))
    assert fresh[-1]["alarm"] == "none"  # what a restart without the record would have said


def test_an_unreadable_commissioning_record_refuses_the_start(
    rtf_scorer: Any, tmp_path: Path
) -> None:
    (tmp_path / "commissioning-vib.json").write_text('{"format": "idmz-commissioning/v1"}')
    with pytest.raises(ConfigError, match="delete it"):
        gateway(tmp_path, rtf_scorer, [], tmp_path)
    (tmp_path / "commissioning-vib.json").write_bytes(b"x" * 10_000)
    with pytest.raises(ConfigError, match="larger"):
        gateway(tmp_path, rtf_scorer, [], tmp_path)


def test_score_refuses_a_recording_cut_into_other_windows_than_the_model(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = trained
    a = Run(life_s=400.0).arrays()
    short = tmp_path / "short.npz"
    cut = {**a, "acc_horiz": a["acc_horiz"][:, :256], "acc_vert": a["acc_vert"][:, :256]}
    np.savez(short, **cut)  # type: ignore[arg-type]
    out = idmz("model", "score", "--model", str(model), "--recording", str(short), "--json")
    assert out.returncode == 2 and "0.1 s windows" in out.stderr and not out.stdout


def test_a_failing_rul_estimate_does_not_suppress_the_windows_score_or_alarm(
    rtf_scorer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong in the prognosis (here an OverflowError, as a life factor of 1e300
    once raised), the window is still scored, published and alarmed; its RUL is null."""

    def overflow(*_: object, **__: object) -> None:
        raise OverflowError("(34, 'Numerical result out of range')")

    monkeypatch.setattr(RulModel, "estimate", overflow)
    alarms: list[Mapping[str, Any]] = []
    gw = gateway(tmp_path, rtf_scorer, alarms)
    a = Run(life_s=3000.0, base_g=1.5, seed=41).arrays()
    feats = feed(gw, a)
    assert len(feats) == a["t_rel_s"].size == gw.windows
    assert all(f["score"] is not None and f["rul_s"] is None for f in feats)
    assert alarms and all(e["rul_s"] is None for e in alarms)  # the anomaly still raised
    assert gw.monitors["vib"].prognosis_errors > 0
    errors = gw.metrics.registry.get_sample_value(
        "idmz_edge_prognosis_errors_total", {"asset": "bearing1"}
    )
    assert errors == gw.monitors["vib"].prognosis_errors


@pytest.mark.parametrize(
    ("rpm", "load", "key"),
    [
        (float("inf"), None, "shaft_rpm"),
        (0.0, None, "shaft_rpm"),
        (-1800.0, None, "shaft_rpm"),
        (1800.0, float("inf"), "load_n"),
        (1800.0, float("nan"), "load_n"),
        (1800.0, 1e300, "load_n"),
        (0.0, 4000.0, "shaft_rpm"),
    ],
)
def test_a_non_finite_or_non_positive_speed_or_load_is_refused_naming_the_key(
    rpm: float, load: float | None, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        VibrationChannel("vib", FZ, shaft_rpm=rpm, load_n=load)
