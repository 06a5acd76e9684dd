"""A hostile gateway's poison message and retained replays, end to end on real Mosquitto with
one relay worker (a plain subscription: the case where one stuck message stopped everything).

* Security review H2: one message with a lone surrogate escape in ``ts`` made the validator
  raise; the worker dropped its OT connection, the broker redelivered the message first on
  every reconnect, and nothing was forwarded for any device any more.
* Review S2: the SUBSCRIBE sent on every reconnect replayed retained device messages, forwarded
  again as fresh data once the dedup window had passed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.config import RelayLimits
from relay.mqtt_codec import RetainHandling, encode_subscribe
from tests.relay.conftest import (
    PRESS_1,
    PRESS_2,
    RELAY_ID,
    Plant,
    Relay,
    envelope,
    start_relay,
    stop_relay,
)
from tests.relay.test_bad_input import wait_refused
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.support.mqtt import publish
from tests.support.net import wait_for

pytestmark = pytest.mark.integration

DEDUP_WINDOW_S = 1.0  # so a replay after a reconnect is past the window, as days later


@pytest.fixture(scope="module")
def relay(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    home = tmp_path_factory.mktemp("poison-home")
    r = start_relay(plant, home, workers=1, limits=RelayLimits(dedup_window_s=DEDUP_WINDOW_S))
    try:
        yield r
    finally:
        stop_relay(r)


@pytest.fixture(scope="module")
def consumer(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> ITConsumer:
    c = ITConsumer(relay, tmp_path_factory.mktemp("it") / "it.txt")
    make_live(relay, c)
    return c


def relay_sessions(relay: Relay) -> int:
    """How many times the relay's certificate connected to the OT broker (its log)."""
    text = (relay.config.broker_dir / "ot.log").read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if "New client connected" in line and f"u'{RELAY_ID}'" in line
    )


def events(relay: Relay, action: str) -> list[dict[str, Any]]:
    return [e for e in relay.audit_events() if e["action"] == action]


def test_poison_message_with_a_lone_surrogate_is_refused_and_other_devices_keep_flowing(
    relay: Relay, consumer: ITConsumer
) -> None:
    sessions, restarts = relay_sessions(relay), relay.appliance.worker_restarts
    assert sessions >= 1
    poison = (
        '{"v":1,"id":"x","ts":"\\ud800","device":"' + PRESS_1 + '","kind":"telemetry","data":{}}'
    )
    assert "\\ud800" in poison and poison.isascii()  # the six characters, as a device sends them
    result = publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry", poison, v5=True)
    assert result.returncode == 0, result.stderr
    for i in range(5):
        publish(relay.ot, relay.plant.cred(PRESS_2), f"{PRESS_2}/telemetry",
                envelope(PRESS_2, f"after-poison-{i}"), v5=True)  # fmt: skip
    wait_for(
        lambda: all(consumer.lines_with(f'"after-poison-{i}"') for i in range(5)),
        timeout_s=60,
        what="the other device's messages after the poison on IT",
    )
    refused = wait_refused(
        relay, "payload_lone_surrogate", match=lambda e: e["details"]["msg_id"] == "x"
    )
    [record] = [e for e in refused if e["details"]["msg_id"] == "x"]
    assert record["actor"] == PRESS_1  # the true sender, from the broker-verified topic
    assert record["resource"] == f"{PRESS_1}/telemetry"
    assert record["details"]["payload_bytes"] == len(poison)
    assert "\\ud800" not in record["reason"] and "/ts" in record["reason"]
    assert not consumer.lines_with('"id":"x"')  # nothing of it forwarded
    # The worker kept its OT session: no reconnect, so no redelivery loop.
    assert relay_sessions(relay) == sessions
    assert relay.appliance.worker_restarts == restarts

    def counted() -> bool:
        snap = next(iter(relay.appliance.snapshots().values()))
        return bool(snap["ot_connected"]) and snap["refused"].get("payload_lone_surrogate") == 1

    wait_for(counted, timeout_s=30, what="the refusal counted by a connected worker")


def test_every_hostile_payload_class_is_refused_with_its_own_code(
    relay: Relay, consumer: ITConsumer, tmp_path: Path
) -> None:
    cases = {
        "payload_number_out_of_range": envelope(PRESS_1, "inf-1", data={"t": 1}).replace(
            '"t":1', '"t":1e400'
        ),
        "payload_too_deep": envelope(PRESS_1, "deep-1", data={"x": 1}).replace(
            '"x":1', '"x":' + "[" * 100 + "]" * 100
        ),
        "payload_not_json": envelope(PRESS_1, "nan-1", data={"t": 1}).replace('"t":1', '"t":NaN'),
    }
    for code, payload in cases.items():
        body = tmp_path / code
        body.write_text(payload)
        sent = publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry", None,
                       v5=True, file=body)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    for code, marker in [("payload_number_out_of_range", "inf-1"),
                         ("payload_too_deep", "deep-1"), ("payload_not_json", "nan-1")]:  # fmt: skip
        [record] = wait_refused(relay, code, match=lambda e, m=marker: e["details"]["msg_id"] == m)
        assert record["actor"] == PRESS_1
    publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry",
            envelope(PRESS_1, "after-hostile"), v5=True)  # fmt: skip
    wait_for(lambda: consumer.lines_with('"after-hostile"'), timeout_s=60, what="sentinel")
    assert not any(consumer.lines_with(f'"{m}"') for m in ("inf-1", "deep-1", "nan-1"))


def test_retained_device_message_is_not_replayed_after_the_relay_reconnects(
    relay: Relay, consumer: ITConsumer
) -> None:
    topic = f"{PRESS_2}/status"
    retained = envelope(PRESS_2, "retained-1", "status", {})
    sent = publish(relay.ot, relay.plant.cred(PRESS_2), topic, retained, v5=True, retain=True)
    assert sent.returncode == 0, sent.stderr
    try:
        wait_for(lambda: consumer.lines_with('"retained-1"'), timeout_s=60, what="retained")
        batches_before = len(events(relay, "relay.batch.forwarded"))
        sessions = relay_sessions(relay)
        pid = relay.appliance.worker_pids()[0]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the relay reconnects: a new worker resumes the session
        wait_for(lambda: relay.appliance.worker_pids()[0] not in (None, pid), timeout_s=60,
                 what="worker restarted")  # fmt: skip
        wait_for(lambda: relay_sessions(relay) > sessions, timeout_s=60, what="reconnected")
        # A message published after the new SUBSCRIBE: a replayed retained message would have
        # been sent right after the SUBACK, before it, and so be on IT before it.
        publish(relay.ot, relay.plant.cred(PRESS_2), topic,
                envelope(PRESS_2, "after-reconnect", "status", {}), v5=True)  # fmt: skip
        wait_for(lambda: consumer.lines_with('"after-reconnect"'), timeout_s=60,
                 what="a message after the reconnect")  # fmt: skip
        assert len(consumer.lines_with('"retained-1"')) == 1  # forwarded once, not twice
        later = events(relay, "relay.batch.forwarded")[batches_before:]
        assert later and not any(e["details"]["duplicates"] for e in later)  # not even redelivered
    finally:  # clear the retained message
        publish(relay.ot, relay.plant.cred(PRESS_2), topic, None, v5=True, retain=True)


def test_subscribe_options_ask_for_no_retained_messages() -> None:
    # MQTT 5 §3.8.3.1: options byte = QoS (bits 0-1) | Retain Handling (bits 4-5).
    packet = encode_subscribe(1, "acme/#", retain_handling=RetainHandling.DO_NOT_SEND)
    assert packet[-1] == 0x21
    assert encode_subscribe(1, "acme/#")[-1] == 0x01  # the codec's default is MQTT's default
