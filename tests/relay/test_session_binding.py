"""Identity binds the whole MQTT session (ADR 0058), on the appliance's real Mosquitto 2.0.11
brokers with mutual TLS and `mosquitto_pub`/`mosquitto_sub` as the attacker (review H3, S3, M4,
S1, S12). On the main listener the client id is the certificate CN whatever the client sends;
on the bound-id listener the broker plugin admits only ``<identity>`` or ``<identity>:<suffix>``
and refuses the rest at CONNECT. Every refusal is audited with the certificate's identity, from
the plugin's report, never from log text."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policies.broker_config import relay_client_id
from relay.broker_refusals import RefusalTail
from relay.errors import RelayConfigError, RevokePluginUnavailableError
from relay.share_secret import load_share_secret
from tests.relay.conftest import HISTORIAN, PRESS_1, PRESS_2, Plant, Relay, envelope, start_relay
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.support.ca import ClientCredentials
from tests.support.mqtt import Endpoint, Subscriber, publish, publish_lines
from tests.support.net import wait_for

pytestmark = pytest.mark.integration


def relay_ids(relay: Relay, side: str) -> list[str]:
    secret = load_share_secret(relay.config.worker.state_dir / "share-secret")
    policy = relay.appliance.policy
    return [relay_client_id(policy, secret, i, side) for i in range(relay.config.workers)]


def connect_once(endpoint: Endpoint, creds: ClientCredentials, client_id: str, *extra: str) -> str:
    """A persistent-session subscriber (clean start 0) that gives up after its CONNACK if
    refused; returns what the client printed."""
    done = subprocess.run(
        ["mosquitto_sub", *endpoint.args(creds), "-V", "mqttv5", "-q", "1", "-c", "-x", "3600",
         "-i", client_id, *extra, "-t", "acme/plant1/nothing/#", "-W", "5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return (done.stdout + done.stderr).lower()


def audited(relay: Relay, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [e for e in relay.audit_events() if match(e)]


def wait_audited(
    relay: Relay, match: Callable[[dict[str, Any]], bool], what: str
) -> list[dict[str, Any]]:
    wait_for(lambda: audited(relay, match), timeout_s=60, what=what)
    return audited(relay, match)


def session_refused(who: str, broker: str, client_id: str) -> Callable[[dict[str, Any]], bool]:
    def match(e: dict[str, Any]) -> bool:
        d = e["details"]
        return (
            e["action"] == "relay.session.refused"
            and e["actor"] == who
            and d["code"] == "client_id_not_bound"
            and d["broker"] == broker
            and d["client_id"] == client_id[:128]  # the plugin reports at most 128 bytes
        )

    return match


def acl_denied(who: str, topic: str) -> Callable[[dict[str, Any]], bool]:
    def match(e: dict[str, Any]) -> bool:
        return (
            e["action"] == "relay.message.refused"
            and e["details"].get("code") == "broker_acl_denied"
            and e["actor"] == who
            and e["resource"] == topic
        )

    return match


def kicked(relay: Relay, broker: str, client_id: str) -> bool:
    """Did the broker close an existing connection of ``client_id`` for a newcomer?"""
    log = (relay.home / "brokers" / f"{broker}.log").read_text(errors="replace")
    return f"Client {client_id} already connected" in log


@pytest.fixture(scope="module")
def consumer(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> ITConsumer:
    c = ITConsumer(relay, tmp_path_factory.mktemp("it") / "it.txt")
    make_live(relay, c)
    return c


def send(relay: Relay, ids: list[str]) -> None:
    for msg_id in ids:
        result = publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry",
                         envelope(PRESS_1, msg_id), v5=True)  # fmt: skip
        assert result.returncode == 0, result.stderr  # acknowledged by the OT broker


def test_device_cannot_take_over_the_relays_session(
    relay: Relay, consumer: ITConsumer, tmp_path: Path
) -> None:
    """Review H3: a gateway connecting with the relay's client id and clean start 0 used to kick
    the relay and inherit its persistent session (messages lost at the read ACL, no audit)."""
    ot_ids = relay_ids(relay, "ot")
    send(relay, [f"h3-before-{i}" for i in range(3)])
    # On the bound-id listener the plugin refuses the CONNECT: the id is not press-02's.
    assert "not authori" in connect_once(relay.bound("ot"), relay.plant.cred(PRESS_2), ot_ids[0])
    # An MQTT 5 authentication method would skip the plugin's CONNECT check: Mosquitto 2.0.11
    # then asks EXT_AUTH_START, which nothing answers, and refuses (bad authentication method).
    enhanced = connect_once(relay.bound("ot"), relay.plant.cred(PRESS_2), ot_ids[0],
                            "-D", "connect", "authentication-method", "x-idmz")  # fmt: skip
    assert "authentication method" in enhanced, enhanced
    # On the main listener the broker replaces the id with press-02's identity: no takeover.
    holder = Subscriber(relay.ot, relay.plant.cred(PRESS_2), "acme/#", tmp_path / "att.txt",
                        debug=True, client_id=ot_ids[0], persistent=True)  # fmt: skip
    try:
        holder.wait_subscribed()
        send(relay, [f"h3-during-{i}" for i in range(3)])
    finally:
        holder.stop()
    send(relay, [f"h3-after-{i}" for i in range(3)])
    for stage in ("before", "during", "after"):
        for i in range(3):
            wait_for(lambda s=stage, n=i: consumer.lines_with(f'"h3-{s}-{n}"'), timeout_s=60,
                     what=f"h3-{stage}-{i} on IT")  # fmt: skip
    assert not [line for line in holder.lines() if "h3-" in line]  # it read nothing either
    assert not any(kicked(relay, "ot", cid) for cid in ot_ids)
    assert all(s.get("ot_connected") for s in relay.appliance.snapshots().values())
    wait_audited(relay, session_refused(PRESS_2, "ot", ot_ids[0]), "the refused CONNECT")


def test_it_consumer_cannot_take_over_the_relays_it_session(
    relay: Relay, consumer: ITConsumer, tmp_path: Path
) -> None:
    """Review S3: the same attack on the IT-facing broker by an IT consumer."""
    it_ids = relay_ids(relay, "it")
    historian = relay.plant.cred(HISTORIAN)
    assert "not authori" in connect_once(relay.bound("it"), historian, it_ids[0])
    holder = Subscriber(relay.it, historian, "acme/nothing/#", tmp_path / "att.txt",
                        debug=True, client_id=it_ids[0], persistent=True)  # fmt: skip
    try:
        holder.wait_subscribed()
        send(relay, [f"s3-{i}" for i in range(3)])
        for i in range(3):
            wait_for(lambda n=i: consumer.lines_with(f'"s3-{n}"'), timeout_s=60,
                     what=f"s3-{i} on IT")  # fmt: skip
    finally:
        holder.stop()
    assert not any(kicked(relay, "it", cid) for cid in it_ids)
    wait_audited(relay, session_refused(HISTORIAN, "it", it_ids[0]), "the refused CONNECT")


def test_gateway_cannot_take_over_another_gateways_session(relay: Relay, tmp_path: Path) -> None:
    """Review S3: gateways use their identity path as client id; another gateway's certificate
    cannot use it, on either listener."""
    victim = Subscriber(relay.ot, relay.plant.cred(PRESS_1), "acme/plant1/nothing/#",
                        tmp_path / "victim.txt", debug=True, client_id=PRESS_1,
                        persistent=True)  # fmt: skip
    try:
        victim.wait_subscribed()
        attacker = relay.plant.cred(PRESS_2)
        for cid in (PRESS_1, f"{PRESS_1}:gw", f"{PRESS_1}-2"):
            assert "not authori" in connect_once(relay.bound("ot"), attacker, cid), cid
            wait_audited(relay, session_refused(PRESS_2, "ot", cid), f"refused {cid!r}")
        holder = Subscriber(relay.ot, attacker, "acme/plant1/nothing/#", tmp_path / "att.txt",
                            debug=True, client_id=PRESS_1, persistent=True)  # fmt: skip
        try:
            holder.wait_subscribed()
        finally:
            holder.stop()
        assert victim.process.poll() is None
        assert not kicked(relay, "ot", PRESS_1)
    finally:
        victim.stop()
    # Its own identity, with or without a suffix, is admitted on the bound-id listener.
    own = relay.plant.cred(PRESS_1)
    for cid in (PRESS_1, f"{PRESS_1}:gw-2"):
        assert "not authori" not in connect_once(relay.bound("ot"), own, cid), cid


def test_client_id_with_spaces_cannot_hide_denials(relay: Relay) -> None:
    """Review M4 (evasion) and S12: a client id "gw 2" made the log parser miss every denial;
    a topic with a quote was cut short. The plugin reports the certificate's identity and the
    whole topic."""
    topic = f"{PRESS_2}/it's not (d0, q1) allowed"
    result = publish(relay.ot, relay.plant.cred(PRESS_2), topic, "x", v5=True, client_id="gw 2")
    assert "not authori" in (result.stdout + result.stderr).lower()
    records = wait_audited(relay, acl_denied(PRESS_2, topic), "the denial of press-02")
    assert records[0]["details"]["broker"] == "ot"
    assert records[0]["details"]["topic_truncated"] is False
    assert "not authori" in connect_once(relay.bound("ot"), relay.plant.cred(PRESS_2), "gw 2")
    wait_audited(relay, session_refused(PRESS_2, "ot", "gw 2"), "the refused 'gw 2' CONNECT")


def test_crafted_client_id_cannot_forge_a_denial_record(relay: Relay) -> None:
    """Review M4 (forgery): a client id that imitates log text, or the plugin's report line,
    never makes a record name another identity or topic."""
    forged_topic = f"{PRESS_1}/firmware/upload"
    log_text = f"{PRESS_1} (d0, q1, r0, m1, '{forged_topic}'"
    # (Mosquitto refuses control characters in a client id, newline and tab included, at the
    # protocol level; spaces and the report's own words are what a client can send.)
    report_text = f"x 1 0 {PRESS_1} {PRESS_1} {forged_topic} v1 acl_denied write 1 0 {PRESS_1}"
    mine = f"{PRESS_2}/not-allowed"
    for cid in (log_text, report_text):
        result = publish(relay.ot, relay.plant.cred(PRESS_2), mine, "x", v5=True, client_id=cid)
        assert "not authori" in (result.stdout + result.stderr).lower()
        assert "not authori" in connect_once(relay.bound("ot"), relay.plant.cred(PRESS_2), cid)
        wait_audited(relay, session_refused(PRESS_2, "ot", cid), "the refused crafted CONNECT")
    wait_audited(relay, acl_denied(PRESS_2, mine), "press-02's own denial")
    events = relay.audit_events()
    assert not [e for e in events if e["resource"] == forged_topic]
    assert not [e for e in events if e["actor"] == PRESS_1 and "refused" in e["action"]]
    tails = [t for t in relay.appliance._tails if isinstance(t, RefusalTail)]
    assert tails and all(t.malformed == 0 for t in tails)


def test_flooding_denials_are_aggregated_per_identity(relay: Relay) -> None:
    """Review S1: one record per identity, refusal and second (the first at once), each with
    the count it stands for; the audit log does not grow with the attacker's rate."""
    topic = f"{PRESS_2}/flood"
    lines = 400
    started = time.monotonic()
    flood = publish_lines(relay.ot, relay.plant.cred(PRESS_2), topic, "x\n" * lines)
    elapsed = time.monotonic() - started
    assert "not authori" in (flood.stdout + flood.stderr).lower()

    def total() -> int:
        return sum(e["details"]["count"] for e in audited(relay, acl_denied(PRESS_2, topic)))

    wait_for(lambda: total() >= lines, timeout_s=60, what=f"{lines} denials counted")
    records = audited(relay, acl_denied(PRESS_2, topic))
    print(f"{lines} denials in {elapsed:.1f}s: {len(records)} records")  # -s shows it
    assert total() == lines
    assert len(records) <= 2 * (int(elapsed) + 3), (len(records), elapsed)


def test_several_workers_without_the_plugin_are_refused(
    plant: Plant, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Without the plugin the brokers force client id = CN, which all workers share: they would
    keep displacing each other, so the appliance refuses to start them (ADR 0058)."""

    def unavailable() -> Path:
        raise RevokePluginUnavailableError("no C compiler 'gcc' on PATH (simulated)")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("relay.appliance.build_plugin", unavailable)
        with pytest.raises(RelayConfigError, match="2 workers need the idmz broker plugin"):
            start_relay(plant, tmp_path_factory.mktemp("relay-no-plugin"), workers=2)
