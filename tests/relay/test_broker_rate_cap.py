"""One enrolled gateway in an attacker's hands floods the OT broker with valid-looking messages
(ADR 0141). Mosquitto itself has no per-client publish rate, so before the cap every message
reached the relay and each one over the policy's rate became its own audit record: the audit log
and the relay's worker were the attacker's to fill. The idmz broker plugin now caps each
identity's publishes per topic class at the policy's ``max_messages_per_s`` and ``burst``, and
reports what it refuses aggregated (at most two records a second per flooder). Real Mosquitto
2.0.11 with the plugin, the appliance and `mosquitto_pub -l` as the attacker."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.relay.conftest import PRESS_1, PRESS_2, Relay, envelope
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.support.mqtt import publish, publish_lines
from tests.support.net import wait_for

pytestmark = pytest.mark.integration
FLOOD = 20_000  # messages, as fast as the broker acknowledges them
NORMAL = 15  # the other device's messages, one connection each, during the flood
RATE, BURST = 20, 100  # deploy/policy/plant.toml [limits.telemetry]
_RULES_LOADED = re.compile(r"idmz_revoke: \d+ rules from ")


@contextmanager
def broker_caps_off(relay: Relay) -> Iterator[None]:
    """The OT broker's rules without their rate caps (what the acl_file mode, without the
    plugin, is): the relay's own limiter is then the only one. Restored afterwards."""
    rules = relay.home / "brokers" / "ot.rules"
    original = rules.read_text()
    uncapped = _uncapped(original)
    assert uncapped != original, "the rendered rules carry no cap"
    # The appliance renders the rules again every 2 s and writes back any that differ, so a
    # changed rules file is undone within seconds; for this window it must not be.
    with mock.patch.object(relay.appliance, "_render", return_value=(False, False)):
        _replace_rules(relay, rules, uncapped)
        try:
            yield
        finally:
            _replace_rules(relay, rules, original)


def _uncapped(rules: str) -> str:
    """The rules without the rate fields of their write lines."""
    return "".join(
        " ".join(line.split(" ")[:3]) + "\n" if line.startswith("write ") else line + "\n"
        for line in rules.splitlines()
    )


def _replace_rules(relay: Relay, rules: Path, text: str) -> None:
    """Atomically, as the appliance writes it; the plugin notices on its next tick."""
    log = relay.home / "brokers" / "ot.log"
    before = len(_RULES_LOADED.findall(log.read_text(errors="replace")))
    tmp = rules.with_name(".ot.rules.test")
    tmp.write_text(text)
    tmp.replace(rules)
    wait_for(lambda: len(_RULES_LOADED.findall(log.read_text(errors="replace"))) > before,
             timeout_s=30, what="the plugin reloading its rules")  # fmt: skip


def refused(relay: Relay, who: str) -> list[dict[str, Any]]:
    return [
        e
        for e in relay.audit_events()
        if e["action"] == "relay.message.refused" and e["actor"] == who
    ]


def broker_capped(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in records if e["details"].get("code") == "broker_rate_limited"]


@pytest.fixture(scope="module")
def consumer(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> ITConsumer:
    c = ITConsumer(relay, tmp_path_factory.mktemp("it") / "it.txt")
    make_live(relay, c)
    return c


def test_a_flooding_gateway_is_capped_at_the_broker_and_other_devices_data_flows(
    relay: Relay, consumer: ITConsumer
) -> None:
    topic = f"{PRESS_2}/telemetry"
    rules = (relay.home / "brokers" / "ot.rules").read_text().splitlines()
    assert f"write {PRESS_2} {topic} {RATE} {BURST}" in rules  # the policy's own numbers
    lines = "".join(envelope(PRESS_2, f"cap-flood-{i}") + "\n" for i in range(FLOOD))
    done: dict[str, float] = {}

    def flood() -> None:
        publish_lines(relay.ot, relay.plant.cred(PRESS_2), topic, lines)
        done["at"] = time.monotonic()

    started = time.monotonic()
    attacker = threading.Thread(target=flood)
    attacker.start()
    for i in range(NORMAL):  # press-01's ordinary telemetry, well within its own cap
        sent = publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry",
                       envelope(PRESS_1, f"cap-normal-{i}"), v5=True)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    normal_done = time.monotonic() - started
    attacker.join(timeout=180)
    elapsed = done["at"] - started
    assert normal_done < elapsed  # press-01 published while the flood was on

    # Every message of the other device reaches IT.
    wait_for(lambda: len(consumer.lines_with('"cap-normal-')) == NORMAL, timeout_s=60,
             what="all of press-01's messages on IT")  # fmt: skip

    # Each flood message was either refused by the broker (counted in the aggregated records)
    # or reached the relay (forwarded, or refused there).
    def accounted() -> tuple[int, int, int]:
        records = refused(relay, PRESS_2)
        capped = sum(e["details"]["count"] for e in broker_capped(records))
        at_relay = len([e for e in records if str(e["resource"]) == topic]) - len(
            broker_capped(records)
        )
        return capped, len(consumer.lines_with('"cap-flood-')), at_relay

    wait_for(lambda: sum(accounted()) >= FLOOD, timeout_s=60, what="every flood message counted")
    capped, forwarded, relay_refused = accounted()
    records = refused(relay, PRESS_2)
    print(  # -s shows the figures (ADR 0141)
        f"{FLOOD} flood messages in {elapsed:.2f}s: broker capped {capped}, forwarded "
        f"{forwarded}, relay refused {relay_refused}; {len(records)} refusal records; "
        f"press-01's {NORMAL} sent in {normal_done:.2f}s, all delivered"
    )
    assert capped + forwarded + relay_refused == FLOOD
    # The broker let through no more than the policy allows over the flood's duration.
    assert forwarded + relay_refused <= BURST + RATE * elapsed + 5, (forwarded, elapsed)
    assert forwarded >= BURST  # and never less than the burst the relay would accept
    # The audit log grows with the seconds of the flood, not with the attacker's rate.
    assert len(broker_capped(records)) <= 2 * (int(elapsed) + 3)
    assert len(records) <= 2 * (int(elapsed) + 3) + relay_refused
    assert relay_refused <= FLOOD // 100
    metric = f'idmz_relay_broker_refused_total{{broker="ot",device="{PRESS_2}"}} {float(capped)}'
    wait_for(lambda: metric in relay.metrics(), timeout_s=30, what="the broker_refused metric")
    reason = broker_capped(records)[0]["reason"]
    assert reason.startswith("broker_rate_limited: the OT-facing broker refused publishes over")


def test_a_rules_file_changed_on_disk_is_rendered_back_within_seconds(relay: Relay) -> None:
    """Caps stripped from the OT broker's rules on disk (a mistaken edit, or a local attacker)
    last until the appliance's next render, every 2 s; the plugin then reloads the policy's."""
    rules = relay.home / "brokers" / "ot.rules"
    original = rules.read_text()
    stripped = _uncapped(original)
    tmp = rules.with_name(".ot.rules.tampered")
    tmp.write_text(stripped)
    tmp.replace(rules)
    wait_for(lambda: rules.read_text() == original, timeout_s=10,
             what="the appliance rendering the rules back")  # fmt: skip
