"""Accepted traffic crosses OT -> IT with provenance, and is audited."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.relay.conftest import HISTORIAN, PRESS_1, Relay, envelope
from tests.support.mqtt import WITH_PROPERTIES, Subscriber, publish
from tests.support.net import wait_for

pytestmark = pytest.mark.integration


_consumer_ids = itertools.count()


class ITConsumer(Subscriber):
    """`mosquitto_sub` on the IT-facing broker with an IT consumer certificate, printing
    topic, user properties and payload per line. ``persistent`` for a consumer that must see
    what the relay forwards while it reconnects (across an IT broker restart)."""

    def __init__(
        self, relay: Relay, out: Path, topic_filter: str = "acme/#", *, persistent: bool = False
    ) -> None:
        # On the bound-id listener, with a client id of its own: several consumers of the one
        # historian identity (and its publish attempts) never displace each other (ADR 0058).
        super().__init__(
            relay.bound("it"), relay.plant.cred(HISTORIAN), topic_filter, out,
            client_id=f"{HISTORIAN}:sub-{next(_consumer_ids)}", line_format=WITH_PROPERTIES,
            persistent=persistent, track=relay.subscribers,
        )  # fmt: skip


def make_live(relay: Relay, consumer: ITConsumer, device: str = PRESS_1) -> None:
    """Publish probes until one arrives: the consumer's subscription is certainly in place."""
    n = 0

    def probe() -> bool:
        nonlocal n
        n += 1
        publish(relay.ot, relay.plant.cred(device), f"{device}/status",
                envelope(device, f"probe-{id(consumer)}-{n}", "status", {}), v5=True)  # fmt: skip
        return any(f"probe-{id(consumer)}-" in line for line in consumer.lines())

    wait_for(probe, timeout_s=60, interval_s=0.5, what="IT consumer live")


def test_accepted_message_reaches_it_with_provenance_and_is_audited(
    relay: Relay, tmp_path: Path
) -> None:
    consumer = ITConsumer(relay, tmp_path / "it.txt")
    make_live(relay, consumer)
    result = publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry",
                     envelope(PRESS_1, "fwd-1"), v5=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: consumer.lines_with('"fwd-1"'), timeout_s=30, what="forwarded message")
    line = consumer.lines_with('"fwd-1"')[0]
    topic, props, _payload = line.split("\t", 2)
    assert topic == f"{PRESS_1}/telemetry"
    assert f"idmz-device:{PRESS_1}" in props
    assert "idmz-msg-id:fwd-1" in props
    assert f"idmz-policy-sha256:{relay.appliance.policy.content_hash}" in props
    fingerprint = relay.plant.pki.ca.certificates_for(PRESS_1)[-1].fingerprint
    assert f"idmz-cert-sha256:{fingerprint}" in props

    def audited() -> bool:
        return any(
            (e["action"] == "relay.batch.forwarded" and e["details"]["last_msg_id"] == "fwd-1")
            or (e["action"] == "relay.batch.forwarded" and e["details"]["first_msg_id"] == "fwd-1")
            for e in relay.audit_events()
        )

    wait_for(audited, timeout_s=30, what="batch audit record naming fwd-1")
    consumer.stop()
