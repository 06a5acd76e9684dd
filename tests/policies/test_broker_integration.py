"""A rendered configuration starts real Mosquitto brokers, and real clients with real
certificates can do exactly what the policy allows: nothing more.

Denied QoS 1 publishes are acknowledged and dropped by Mosquitto 2.0 under MQTT 3.1.1, so each
test publishes the denied messages first and an allowed "sentinel" last on the same broker, and
waits for the sentinel: the broker handles messages in order, so a denied message that had been
forwarded would have arrived before it. Under MQTT 5 the refusal is observable directly
(PUBACK reason code 0x87, reported by mosquitto_pub as "Not authorized").
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies import Policy
from policies.broker_config import BrokerSettings, Registry, TlsFiles, render_brokers
from tests.support.ca import ClientCredentials, PKIFixture, make_test_pki
from tests.support.mosquitto import Broker, start_broker
from tests.support.mqtt import Endpoint, Subscriber, publish, wait_until
from tests.support.net import free_port

pytestmark = pytest.mark.integration

PRESS_1 = "acme/plant1/stamping/line1/cell1/press-01"
PRESS_2 = "acme/plant1/stamping/line1/cell1/press-02"
VIB_1 = "acme/plant1/stamping/line1/cell3/vib-01"  # class sensor-gateway
LINE2_PRESS = "acme/plant1/stamping/line2/cell1/press-01"  # outside the MES consumer's prefix
UNREGISTERED = "acme/plant1/stamping/line1/cell1/press-99"
REVOKED = "acme/plant1/stamping/line1/cell2/press-07"  # registered, then revoked


@dataclass
class Plant:
    pki: PKIFixture
    ot: Endpoint
    it: Endpoint
    creds: dict[str, ClientCredentials]
    tmp: Path
    ot_broker: Broker
    it_broker: Broker


@pytest.fixture(scope="module")
def plant(policy: Policy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    tmp = tmp_path_factory.mktemp("brokers")
    pki = make_test_pki(tmp / "pki")
    server = pki.server()
    creds = {
        p: pki.device(p) for p in (PRESS_1, PRESS_2, VIB_1, LINE2_PRESS, UNREGISTERED, REVOKED)
    }
    for c in ("acme/it/idmz-relay", "acme/it/historian", "acme/it/mes", "acme/it/intruder"):
        creds[c] = pki.consumer(c)
    tls = TlsFiles(str(pki.cafile), str(server.cert), str(server.key), str(pki.crlfile))
    ot_port, it_port = free_port(), free_port()
    registry = Registry(
        devices=tuple(
            DeviceIdentity.parse(p) for p in (PRESS_1, PRESS_2, VIB_1, LINE2_PRESS, REVOKED)
        ),
        consumers=(ConsumerIdentity.parse("acme/it/historian"),),
    )

    def settings(port: int, name: str) -> BrokerSettings:
        return BrokerSettings(
            port, tls, str(tmp / f"{name}.acl"), bind_address="127.0.0.1", run_as_user="root"
        )

    rendered = render_brokers(
        policy, registry, ot=settings(ot_port, "ot"), it=settings(it_port, "it")
    )
    (tmp / "ot.acl").write_text(rendered.ot.acl)
    (tmp / "it.acl").write_text(rendered.it.acl)
    ot_broker = start_broker(rendered.ot.config, ot_port, tmp, name="ot")
    try:
        it_broker = start_broker(rendered.it.config, it_port, tmp, name="it")
    except BaseException:
        ot_broker.stop()
        raise
    try:
        yield Plant(
            pki,
            Endpoint(ot_port, pki.cafile),
            Endpoint(it_port, pki.cafile),
            creds,
            tmp,
            ot_broker,
            it_broker,
        )
    finally:
        ot_broker.stop()
        it_broker.stop()
        pki.ca.close()


@pytest.fixture
def relay_on_ot(plant: Plant, tmp_path: Path) -> Iterator[Subscriber]:
    """The relay's identity, subscribed on OT the way the relay does: a shared subscription."""
    sub = Subscriber(
        plant.ot,
        plant.creds["acme/it/idmz-relay"],
        "$share/idmz-relay/acme/#",
        tmp_path / "relay.txt",
    )
    try:
        sub.wait_until_live(
            lambda m: publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/status", m)
        )
        yield sub
    finally:
        sub.stop()


def _sentinel(plant: Plant, sub: Subscriber, name: str) -> None:
    publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/status", name)
    assert wait_until(lambda: any(line.endswith(name) for line in sub.lines()), 60), sub.lines()


def test_device_publishes_its_class_topics_and_the_relay_reads_them_via_share(
    plant, relay_on_ot
) -> None:
    for sub in ("telemetry", "features", "events/anomaly"):
        assert (
            publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/{sub}", f"ok-{sub}").returncode == 0
        )
    _sentinel(plant, relay_on_ot, "sentinel-allowed")
    lines = relay_on_ot.lines()
    for sub in ("telemetry", "features", "events/anomaly"):
        assert f"{PRESS_1}/{sub} ok-{sub}" in lines


def test_device_cannot_publish_under_another_devices_path(plant, relay_on_ot) -> None:
    publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_2}/telemetry", "spoofed-311")
    refused = publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_2}/telemetry", "spoofed-5", v5=True)
    assert "Not authorized" in refused.stderr
    _sentinel(plant, relay_on_ot, "sentinel-spoof")
    assert not any("spoofed" in line for line in relay_on_ot.lines())


@pytest.mark.parametrize(
    ("who", "topic"),
    [
        (PRESS_1, f"{PRESS_1}/video"),  # not in the class
        (VIB_1, f"{VIB_1}/events/anomaly"),  # sensor-gateway does not list it
        (PRESS_1, f"{PRESS_1}/Telemetry"),
        (PRESS_1, f"{PRESS_1}/telemetry/extra"),
        (PRESS_1, "acme/plant1/stamping/line1/cell1"),
        (UNREGISTERED, f"{UNREGISTERED}/telemetry"),  # valid certificate, not in the registry
    ],
)
def test_publish_outside_the_policy_is_dropped_by_the_broker(
    plant, relay_on_ot, who, topic
) -> None:
    refused = publish(plant.ot, plant.creds[who], topic, "denied", v5=True)
    assert "Not authorized" in refused.stderr, refused
    _sentinel(plant, relay_on_ot, f"sentinel-{who}-{topic}")
    assert not any(line.endswith(" denied") for line in relay_on_ot.lines())


def test_connections_without_tls_or_without_a_client_certificate_are_refused(plant) -> None:
    plaintext = publish(Endpoint(plant.ot.port, plant.pki.cafile), None, f"{PRESS_1}/status", "x")
    assert plaintext.returncode != 0
    for endpoint in (plant.ot, plant.it):
        no_cert = publish(endpoint, None, f"{PRESS_1}/status", "x")
        assert no_cert.returncode != 0


def test_it_consumers_read_their_prefix_and_can_never_publish(plant, tmp_path) -> None:
    relay = plant.creds["acme/it/idmz-relay"]
    historian = Subscriber(
        plant.it, plant.creds["acme/it/historian"], "acme/plant1/#", tmp_path / "h.txt"
    )
    try:
        historian.wait_until_live(lambda m: publish(plant.it, relay, f"{PRESS_1}/status", m))
        refused = publish(
            plant.it, plant.creds["acme/it/mes"], f"{PRESS_1}/telemetry", "from-it", v5=True
        )
        assert "Not authorized" in refused.stderr
        refused = publish(plant.it, plant.creds["acme/it/historian"], f"{PRESS_1}/telemetry",
                          "from-it", v5=True)  # fmt: skip
        assert "Not authorized" in refused.stderr
        # One session per identity on this listener (client id = CN, ADR 0058): that publish
        # took the historian subscriber's session; it reconnects, wait until it is back.
        historian.wait_until_live(lambda m: publish(plant.it, relay, f"{PRESS_1}/status", m))
        publish(plant.it, relay, "acme/plant1/anything", "relay-off-grid")  # not a device topic
        publish(plant.it, relay, f"{PRESS_1}/telemetry", "relayed")
        assert wait_until(lambda: f"{PRESS_1}/telemetry relayed" in historian.lines(), 60)
        assert not any("from-it" in line or "relay-off-grid" in line for line in historian.lines())
    finally:
        historian.stop()


def test_consumer_outside_its_prefix_and_unknown_consumers_receive_nothing(plant, tmp_path) -> None:
    relay = plant.creds["acme/it/idmz-relay"]
    # MES may read line 1 only; it subscribes wider, and Mosquitto filters each message by ACL.
    mes = Subscriber(plant.it, plant.creds["acme/it/mes"], "acme/plant1/#", tmp_path / "mes.txt")
    intruder = Subscriber(plant.it, plant.creds["acme/it/intruder"], "acme/#", tmp_path / "i.txt")
    try:
        mes.wait_until_live(lambda m: publish(plant.it, relay, f"{PRESS_2}/status", m))
        publish(plant.it, relay, f"{LINE2_PRESS}/telemetry", "line2-data")
        publish(plant.it, relay, f"{PRESS_1}/telemetry", "line1-data")
        assert wait_until(lambda: f"{PRESS_1}/telemetry line1-data" in mes.lines(), 60)
        assert not any("line2-data" in line for line in mes.lines())
        assert not any("data" in line or "probe" in line for line in intruder.lines())
    finally:
        for s in (mes, intruder):
            s.stop()


def test_tls_below_1_2_is_refused_by_the_rendered_listener(plant) -> None:
    # Force an old client: OpenSSL 3 refuses TLS 1.1 itself above security level 0.
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{plant.ot.port}", "-tls1_1",
         "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", str(plant.pki.cafile)],
        input="", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Cipher is (NONE)" in result.stdout  # no session was negotiated
    modern = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{plant.ot.port}", "-tls1_2",
         "-CAfile", str(plant.pki.cafile)],
        input="", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Cipher is (NONE)" not in modern.stdout
    assert "TLSv1.2" in modern.stdout


def test_revoked_device_is_refused_after_the_crl_is_reloaded(plant, relay_on_ot) -> None:
    creds = plant.creds[REVOKED]
    assert publish(plant.ot, creds, f"{REVOKED}/status", "before", v5=True).returncode == 0
    plant.pki.revoke(creds)
    plant.ot_broker.reload()  # SIGHUP: Mosquitto re-reads crlfile for new handshakes

    def refused() -> bool:
        return publish(plant.ot, creds, f"{REVOKED}/status", "after-revocation").returncode != 0

    assert wait_until(refused, 60), plant.ot_broker.log()[-2000:]
    _sentinel(plant, relay_on_ot, "sentinel-revoked")
    assert not any(line.endswith(" after-revocation") for line in relay_on_ot.lines())


def _publish_and_flush(plant: Plant, relay: Subscriber, messages: list[str]) -> None:
    """Publish ``messages`` in order, then probes until one reaches ``relay``: the broker
    handles messages in order, so anything of ``messages`` bound for the relay is there now."""
    for m in messages:
        publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/status", m)
    relay.wait_until_live(lambda m: publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/status", m))


def _payload_lines(sub: Subscriber, marker: str) -> list[str]:
    return [line for line in sub.lines() if marker in line and "PUBLISH" not in line]


def test_a_device_joining_a_public_share_group_swallows_the_relays_messages(
    plant, tmp_path
) -> None:
    """The attack `relay_subscription` defends against, on Mosquitto 2.0.11: acl_file does not
    check SUBSCRIBE, so a gateway's certificate may join the relay's share group, and the
    broker drops that member's share of the messages at the read check."""
    thief = Subscriber(
        plant.ot, plant.creds[PRESS_2], "$share/public/acme/#", tmp_path / "t.txt", debug=True
    )
    relay = Subscriber(
        plant.ot, plant.creds["acme/it/idmz-relay"], "$share/public/acme/#", tmp_path / "r.txt"
    )
    try:
        thief.wait_subscribed()
        relay.wait_until_live(
            lambda m: publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/status", m)
        )
        _publish_and_flush(plant, relay, [f"msg-{i}" for i in range(6)])
        received = _payload_lines(relay, " msg-")
        assert len(received) < 6, received  # some went to the thief and were dropped: silent loss
        assert not _payload_lines(thief, " msg-")  # ...and nothing leaked to it
    finally:
        relay.stop()
        thief.stop()


def test_secret_share_group_keeps_every_message_for_the_relay(plant, policy, tmp_path) -> None:
    from policies.broker_config import relay_subscription

    public_group = f"$share/{policy.relay.share_group}/acme/#"
    thieves = [
        Subscriber(plant.ot, plant.creds[PRESS_2], public_group, tmp_path / "t1.txt", debug=True),
        Subscriber(
            plant.ot, plant.creds["acme/it/historian"], "acme/#", tmp_path / "t2.txt", debug=True
        ),
    ]
    secret_filter = relay_subscription(policy, b"0123456789abcdef-relay-secret")
    relay = Subscriber(
        plant.ot, plant.creds["acme/it/idmz-relay"], secret_filter, tmp_path / "r.txt"
    )
    try:
        for t in thieves:
            t.wait_subscribed()
        relay.wait_until_live(
            lambda m: publish(plant.ot, plant.creds[PRESS_1], f"{PRESS_1}/status", m)
        )
        _publish_and_flush(plant, relay, [f"msg-{i}" for i in range(6)])
        got = [line.rsplit(" ", 1)[1] for line in _payload_lines(relay, " msg-")]
        assert got == [f"msg-{i}" for i in range(6)]
        assert not any(_payload_lines(t, " msg-") for t in thieves)
    finally:
        relay.stop()
        for t in thieves:
            t.stop()


def test_other_identities_on_the_ot_broker_read_nothing(plant, relay_on_ot, tmp_path) -> None:
    # Read rights are checked per message on delivery: an IT consumer's or a device's
    # certificate on the OT-facing broker receives nothing, shared subscription or not.
    snoops = [
        Subscriber(
            plant.ot,
            plant.creds["acme/it/historian"],
            "$share/other/acme/#",
            tmp_path / "s.txt",
            debug=True,
        ),
        Subscriber(
            plant.ot, plant.creds["acme/it/historian"], "acme/#", tmp_path / "d.txt", debug=True
        ),
        Subscriber(plant.ot, plant.creds[PRESS_2], "acme/#", tmp_path / "p.txt", debug=True),
    ]
    try:
        for s in snoops:
            s.wait_subscribed()
        _sentinel(plant, relay_on_ot, "sentinel-snoop")
        assert not any(_payload_lines(s, "sentinel") for s in snoops)
    finally:
        for s in snoops:
            s.stop()
