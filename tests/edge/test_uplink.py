"""The uplink: outbound MQTT 5 over mutual TLS, at-least-once from the outbox, renewals live."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.credentials import load_credentials
from edge.errors import ConfigError
from edge.outbox import Outbox, OutboxLimits
from edge.sources import Backoff
from edge.uplink import Uplink, UplinkSettings
from pki.authority import RevocationReason
from tests.edge.conftest import mtls_broker_config
from tests.edge.harness import LoopThread, start_collector
from tests.support.ca import GATEWAY_ID, ProductCA
from tests.support.mosquitto import Broker, start_broker
from tests.support.net import free_port, wait_for

pytestmark = pytest.mark.integration
TOPIC = GATEWAY_ID + "/telemetry"


def settings(port: int, creds: Path) -> UplinkSettings:
    return UplinkSettings(
        host="127.0.0.1",
        port=port,
        credential_dir=creds,
        credential_check_interval_s=0.2,
        connect_timeout_s=5.0,
        backoff=Backoff(initial_s=0.2, max_s=1.0),
    )


def fill(box: Outbox, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        m = box.append(TOPIC, json.dumps({"n": i}).encode(), now=1000.0 + i)
        ids.append(m.id)
    return ids


def test_messages_arrive_with_their_id_and_leave_the_outbox_only_after_puback(
    test_ca: ProductCA, mtls_broker: Broker, tmp_path: Path
) -> None:
    creds = test_ca.write_credentials(tmp_path / "creds", test_ca.device())
    collector = start_collector(test_ca, mtls_broker.port, tmp_path / "sub")
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    uplink = Uplink(settings(mtls_broker.port, creds), box)
    runner = LoopThread(uplink.run)
    try:
        wait_for(lambda: uplink.stats.connected, timeout_s=30, what="uplink connected")
        ids = fill(box, 25)
        runner.call_soon(uplink.notify)
        wait_for(lambda: box.stats(now=0).depth == 0, timeout_s=30, what="outbox drained")
        wait_for(lambda: len(collector.records()) >= 25, timeout_s=30, what="25 messages")
        got = collector.records()
        assert [r[1]["idmz-msg-id"] for r in got] == ids  # in order, each with its id
        assert [r[2]["n"] for r in got] == list(range(25))
        assert {r[0] for r in got} == {TOPIC}
        assert uplink.stats.acked == 25
    finally:
        runner.stop()
        collector.stop()
        box.close()


def test_a_broker_certificate_from_another_root_is_refused_and_nothing_is_sent(
    test_ca: ProductCA, other_ca: ProductCA, tmp_path: Path
) -> None:
    port = free_port()
    impostor = start_broker(
        mtls_broker_config(other_ca, tmp_path / "b", port), port, tmp_path / "b"
    )
    creds = test_ca.write_credentials(tmp_path / "creds", test_ca.device())
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    fill(box, 3)
    uplink = Uplink(settings(port, creds), box)
    runner = LoopThread(uplink.run)
    try:
        wait_for(
            lambda: "certificate verify failed" in uplink.stats.last_error,
            timeout_s=30,
            what="TLS refusal",
        )
        assert uplink.stats.connections == 0 and uplink.stats.published == 0
        assert box.stats(now=0).depth == 3
    finally:
        runner.stop()
        impostor.stop()
        box.close()


def test_a_revoked_certificate_refusal_is_logged_with_its_tls_reason(
    test_ca: ProductCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # TLS 1.3: the broker checks the client certificate after the client's handshake is done,
    # so its "certificate revoked" alert arrives on the first read, not in connect().
    device = test_ca.device("acme/plant1/press/line1/cell2/gw-revoked")
    test_ca.ca.revoke(device.serial, RevocationReason.KEY_COMPROMISE, now=datetime.now(UTC))
    port = free_port()
    config = mtls_broker_config(test_ca, tmp_path / "b", port).replace(
        "tls_version tlsv1.2", f"tls_version tlsv1.3\ncrlfile {test_ca.crl_path}"
    )
    broker = start_broker(config, port, tmp_path / "b")
    creds = test_ca.write_credentials(
        tmp_path / "creds", device, path="acme/plant1/press/line1/cell2/gw-revoked"
    )
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    uplink = Uplink(settings(port, creds), box)
    runner = LoopThread(uplink.run)
    try:
        with caplog.at_level(logging.WARNING, logger="idmz.edge.uplink"):
            wait_for(
                lambda: "certificate revoked" in uplink.stats.last_error,
                timeout_s=30,
                what="certificate revoked in the uplink's last error",
            )
            wait_for(lambda: "certificate revoked" in caplog.text, timeout_s=5, what="the log line")
        assert uplink.stats.connections == 0
    finally:
        runner.stop()
        broker.stop()
        box.close()


def test_renewed_credentials_are_picked_up_without_a_restart(
    test_ca: ProductCA, mtls_broker: Broker, tmp_path: Path
) -> None:
    creds = test_ca.write_credentials(tmp_path / "creds", test_ca.device())
    collector = start_collector(test_ca, mtls_broker.port, tmp_path / "sub")
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    uplink = Uplink(settings(mtls_broker.port, creds), box)
    runner = LoopThread(uplink.run)
    try:
        wait_for(lambda: uplink.stats.connected, timeout_s=30, what="first connection")
        before = load_credentials(creds)
        test_ca.write_credentials(creds, test_ca.device())  # what `idmz renew` does
        wait_for(
            lambda: (
                uplink.stats.credential_reloads == 1
                and uplink.stats.connected
                and uplink.stats.connections == 2
            ),
            timeout_s=30,
            what="reconnect with new files",
        )
        assert load_credentials(creds).fingerprint != before.fingerprint
        fill(box, 3)
        runner.call_soon(uplink.notify)
        wait_for(lambda: len(collector.records()) >= 3, timeout_s=30, what="delivery after renewal")
    finally:
        runner.stop()
        collector.stop()
        box.close()


def test_a_private_key_readable_by_others_is_refused(test_ca: ProductCA, tmp_path: Path) -> None:
    creds = test_ca.write_credentials(tmp_path / "creds", test_ca.device())
    os.chmod(creds / "key.pem", 0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_credentials(creds)


def test_a_certificate_for_another_device_is_refused(test_ca: ProductCA, tmp_path: Path) -> None:
    other = test_ca.device("acme/plant1/press/line1/cell2/gw-99")
    creds = test_ca.write_credentials(tmp_path / "creds", other)  # identity file says gw-01
    with pytest.raises(ConfigError, match="expected exactly"):
        load_credentials(creds)
