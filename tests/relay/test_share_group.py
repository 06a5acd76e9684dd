"""ADR 0034 wired: with several workers the relay subscribes on OT with a share group derived
from its secret, so a device that joins the policy's public group name takes nothing from the
relay (tests/policies/test_broker_integration.py shows that it would, on Mosquitto 2.0.11)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from idmz.home import Home
from idmz.relay_config import load_relay_config
from policies.broker_config import relay_subscription
from relay.errors import RelayConfigError
from relay.share_secret import ensure_share_secret, load_share_secret
from tests.relay.conftest import PRESS_1, PRESS_2, Relay, envelope
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.support.mqtt import Subscriber, publish
from tests.support.net import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "relay.toml"


@pytest.mark.integration
def test_a_device_joining_the_public_group_name_takes_nothing_from_the_relay(
    relay: Relay, tmp_path: Path
) -> None:
    assert relay.config.workers > 1  # the shared subscription is in use
    policy = relay.appliance.policy
    thief = Subscriber(relay.ot, relay.plant.cred(PRESS_2),
                       f"$share/{policy.relay.share_group}/{policy.enterprise}/#",
                       tmp_path / "thief.txt", debug=True)  # fmt: skip
    consumer = ITConsumer(relay, tmp_path / "it.txt")
    try:
        thief.wait_subscribed()
        make_live(relay, consumer)
        ids = [f"share-{i}" for i in range(12)]
        for msg_id in ids:
            result = publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry",
                             envelope(PRESS_1, msg_id), v5=True)  # fmt: skip
            assert result.returncode == 0, result.stderr
        wait_for(lambda: all(consumer.lines_with(f'"{i}"') for i in ids), timeout_s=60,
                 what="every message on IT")  # fmt: skip
        assert not [line for line in thief.lines() if "share-" in line]
    finally:
        thief.stop()
        consumer.stop()
    secret_file = relay.config.worker.state_dir / "share-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    derived = relay_subscription(policy, load_share_secret(secret_file))
    # No broker log names the group (review S5): the brokers no longer log at debug level.
    logs = list((relay.home / "brokers").rglob("*.log"))
    assert logs and not any(derived in p.read_text(errors="replace") for p in logs)
    tag = derived.split("/")[1].rsplit("-", 1)[1]
    assert not any(tag in p.read_text(errors="replace") for p in logs)


def test_the_secret_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "share-secret"
    first = ensure_share_secret(path)
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_share_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["share-secret"]


def test_a_short_or_readable_secret_file_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"too-short\n")
    short.chmod(0o600)
    with pytest.raises(RelayConfigError, match="at least 16"):
        load_share_secret(short)
    loose = tmp_path / "loose"
    loose.write_bytes(os.urandom(16).hex().encode())
    loose.chmod(0o644)
    with pytest.raises(RelayConfigError, match="readable by others"):
        load_share_secret(loose)


def test_relay_toml_names_the_secret_file_relative_to_the_home(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    text = DEPLOY.read_text()
    config = load_relay_config(text, home=home, source=DEPLOY, environ={})
    assert config.worker.share_secret_file is None  # default: <state_dir>/share-secret
    config = load_relay_config('share_secret = "secrets/relay-share"\n' + text, home=home,
                               source=DEPLOY, environ={})  # fmt: skip
    assert config.worker.share_secret_file == home.root / "secrets" / "relay-share"


def test_relay_toml_ships_one_worker_so_an_ot_restart_loses_no_backlog(tmp_path: Path) -> None:
    """ADR 0052: a shared subscription on Mosquitto 2.0.11 loses what gateways publish while
    the OT broker restarts; the example configuration must not turn it on."""
    home = Home(tmp_path / "home").ensure()
    config = load_relay_config(DEPLOY.read_text(), home=home, source=DEPLOY, environ={})
    assert config.workers == 1
