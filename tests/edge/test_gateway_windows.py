"""How the gateway cuts waveform blocks into windows, scores them and raises alarms, fed
directly (no servers): contiguity, gaps, local alarms and what goes to the outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import GatewayConfig, VibrationChannel
from edge.featurizer import FeaturizerSettings
from edge.gateway import Gateway
from edge.outbox import Outbox, OutboxLimits
from edge.plant import Fault, StampingLine
from edge.sources import OpcUaSource
from edge.tagmap import Quality, Reading, TagSpec
from pki.identity import DeviceIdentity
from tests.edge.harness import signed_scorer, train_simulator_model
from tests.support.ca import GATEWAY_ID, ProductCA

FS = 12000.0
BLOCK = 1200
WAVE = TagSpec("vib", "plc", "ns=2;s=v", "g", "press01", "acme/p/a/l/c/press01", kind="waveform")


def gateway(tmp: Path, scorer: Any = None, alarms: list[dict[str, Any]] | None = None) -> Gateway:
    config = GatewayConfig(
        identity=DeviceIdentity.parse(GATEWAY_ID),
        tags=(WAVE,),
        outbox_path=tmp / "o.db",
        opcua=(OpcUaSource("plc", "opc.tcp://127.0.0.1:1/x"),),
        vibration=(
            VibrationChannel(
                "vib",
                FeaturizerSettings(sample_rate_hz=FS),
                shaft_rpm=1797.0,
                realarm_interval_s=60.0,
            ),
        ),
        alarm_log=tmp / "alarms.jsonl",
    )
    sink = alarms.append if alarms is not None else None
    return Gateway(
        config,
        outbox=Outbox.open(config.outbox_path, OutboxLimits()),
        scorer=scorer,
        alarm_callback=sink,
        clock=lambda: 1_700_000_100.0,
    )


def feed(
    gw: Gateway, line: StampingLine, blocks: int, t0: float, skip: frozenset[int] = frozenset()
) -> float:
    for i in range(blocks):
        block = line.vibration_block(BLOCK)
        if i in skip:
            continue  # lost on the way
        gw.on_reading(Reading("vib", block, Quality.GOOD, t0 + i * BLOCK / FS))
    return t0 + blocks * BLOCK / FS


def topics(gw: Gateway) -> list[str]:
    return [m.topic.rsplit("/", 2)[-1] for m in gw.outbox.next_batch(after_seq=0, limit=1000)]


def test_contiguous_blocks_make_one_window_per_second(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    feed(gw, StampingLine(seed=1), 35, 1_700_000_000.0)
    assert gw.windows == 3
    msgs = gw.outbox.next_batch(after_seq=0, limit=10)
    data = json.loads(msgs[1].payload)["data"]
    assert data["window_start"] == "2023-11-14T22:13:21.000Z"
    assert data["iso_zone"] == "A" and "score" not in data  # no model configured


def test_a_lost_block_restarts_the_window_instead_of_splicing_signal(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    feed(gw, StampingLine(seed=1), 25, 1_700_000_000.0, skip=frozenset({4}))
    # Blocks 0-3 are dropped with the gap; 5-14 and 15-24 make two whole windows.
    assert gw.windows == 2
    assert gw.status()["vibration_gaps"] == 1


def test_a_bad_block_is_a_gap_too(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    t = feed(gw, StampingLine(seed=1), 5, 1_700_000_000.0)
    gw.on_reading(Reading("vib", None, Quality.BAD, t, "server restart"))
    feed(gw, StampingLine(seed=1), 10, t + 5.0)
    assert gw.windows == 1


def test_a_fault_raises_one_local_alarm_and_queues_one_anomaly_event(
    test_ca: ProductCA, tmp_path: Path
) -> None:
    alarms: list[dict[str, Any]] = []
    gw = gateway(tmp_path, signed_scorer(test_ca, train_simulator_model("w-1")), alarms)
    line = StampingLine(seed=2)
    t = feed(gw, line, 20, 1_700_000_000.0)
    assert not alarms
    line.inject(Fault.BEARING_OUTER_RACE, now_s=0.0)
    feed(gw, line, 40, t)
    assert len(alarms) == 1  # persisting: re-raised only after realarm_interval_s
    assert alarms[0]["score"] > alarms[0]["threshold"] and alarms[0]["model_version"] == "w-1"
    assert topics(gw).count("anomaly") == 1
    local = [json.loads(x) for x in (tmp_path / "alarms.jsonl").read_text().splitlines()]
    assert local == [json.loads(json.dumps(alarms[0]))]
    event = json.loads(
        gw.outbox.next_batch(after_seq=0, limit=1000)[topics(gw).index("anomaly")].payload
    )
    assert event["kind"] == "anomaly" and event["device"] == GATEWAY_ID
    assert set(event["data"]) >= {"asset", "score", "threshold", "model_version", "features"}
    assert np.isfinite(event["data"]["score"])
