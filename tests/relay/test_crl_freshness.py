"""Review M6 from the relay's side: the appliance alarms when its brokers' CRL nears or passes
nextUpdate (health degraded, gauge, audit), and each zone's ``on_stale_crl`` decides what its
broker does with a stale CRL: ``keep-last`` keeps the plant connected and still refuses revoked
devices, ``fail-closed`` refuses every new handshake (real Mosquitto, real appliance).

Time is an input: CRLs are published "as of" a moment in the past, so their nextUpdate is hours
or seconds away; nobody waits for a day.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pki.authority import RevocationReason
from tests.relay.conftest import (
    HISTORIAN,
    POLICY_PATH,
    PRESS_1,
    Plant,
    Relay,
    envelope,
    start_relay,
    stop_relay,
    utcnow,
)
from tests.support.ca import PASSPHRASE
from tests.support.mqtt import publish
from tests.support.net import free_port, port_open, wait_for

pytestmark = pytest.mark.integration
REVOKED = "acme/plant1/stamping/line1/cell2/press-11"
STALE_IN_S = 8  # a CRL "published a day minus this ago" goes stale this many seconds from now


def crl_seconds_left(relay: Relay) -> float:
    match = re.search(r"^idmz_relay_crl_seconds_to_next_update (\S+)$", relay.metrics(), re.M)
    assert match, "no CRL gauge in /metrics"
    return float(match.group(1))


def events(relay: Relay, action: str) -> list[dict[str, object]]:
    return [e for e in relay.audit_events() if e["action"] == action]


def health_problems(relay: Relay) -> list[str]:
    code, report = relay.health()
    problems = report["problems"]
    assert isinstance(problems, list)
    return [str(p) for p in problems] if code == 503 else []


def crl_problem(relay: Relay) -> bool:
    return any("CRL" in p for p in health_problems(relay))


def publish_status(relay: Relay, device: str, msg: str) -> str:
    """A new TLS handshake and one QoS 1 publish on the OT broker: "ok", or what failed."""
    result = publish(relay.ot, relay.plant.cred(device), f"{device}/status",
                     envelope(device, msg, "status", {}), v5=True)  # fmt: skip
    text = (result.stdout + result.stderr).strip()
    return text or "ok" if result.returncode == 0 else f"rc={result.returncode} {text}"


def make_stale_soon(plant: Plant) -> None:
    """REVOKED revoked and a CRL going stale in STALE_IN_S."""
    as_of = utcnow() - timedelta(days=1, seconds=-STALE_IN_S)
    revoke(plant, as_of=as_of)
    plant.pki.ca.publish_crl(now=as_of)


def revoke(plant: Plant, *, as_of: datetime) -> None:
    """Revoke REVOKED (once per module: revoking again keeps the first time)."""
    plant.pki.ca.revoke(plant.cred(REVOKED).serial, RevocationReason.KEY_COMPROMISE, now=as_of)


@contextlib.contextmanager
def running_relay(
    plant: Plant, home: Path, *, crl_as_of: datetime | None = None, policy_text: str | None = None
) -> Iterator[Relay]:
    """An appliance started on a CRL published as of ``crl_as_of`` (default: now); a fresh CRL
    is published again when it stops, for the next test of the module."""
    plant.cred(HISTORIAN)
    plant.pki.ca.publish_crl(now=crl_as_of or utcnow())
    relay = start_relay(plant, home, workers=1, policy_text=policy_text)
    try:
        yield relay
    finally:
        stop_relay(relay)
        plant.pki.ca.publish_crl(now=utcnow())


def policy_with(zone: str, mode: str) -> str:
    return POLICY_PATH.read_text().replace(
        f"[zones.{zone}]\n", f'[zones.{zone}]\non_stale_crl = "{mode}"\n', 1
    )


@pytest.fixture
def relay(plant: Plant, revoke_plugin: Path, tmp_path: Path) -> Iterator[Relay]:
    with running_relay(plant, tmp_path) as r:
        yield r


def test_relay_health_degrades_before_and_after_the_crl_goes_stale(relay: Relay) -> None:
    wait_for(lambda: relay.health()[0] == 200, timeout_s=60, what="a healthy relay")
    assert crl_seconds_left(relay) > 23 * 3600
    # 1 h before nextUpdate: the CA host missed its republishing; alarm while nothing broke yet.
    relay.plant.pki.ca.publish_crl(now=utcnow() - timedelta(hours=23))
    wait_for(lambda: crl_problem(relay), timeout_s=30, what="health degraded by an expiring CRL")
    assert 0 < crl_seconds_left(relay) < 3600
    assert not events(relay, "relay.crl.stale")
    # Stale: the alarm stays, the gauge goes negative, one audit record.
    make_stale_soon(relay.plant)
    wait_for(lambda: events(relay, "relay.crl.stale"), timeout_s=60, what="relay.crl.stale")
    assert crl_seconds_left(relay) < 0 and crl_problem(relay)
    (stale,) = events(relay, "relay.crl.stale")
    details = stale["details"]
    assert isinstance(details, dict)
    assert details["on_stale_crl_ot"] == "keep-last"
    assert details["on_stale_crl_it"] == "fail-closed"
    assert stale["resource"] == f"crl/{details['crl_number']}"
    # A fresh CRL clears the alarm.
    relay.plant.pki.ca.publish_crl(now=utcnow())
    wait_for(lambda: relay.health()[0] == 200, timeout_s=60, what="healthy after republishing")
    assert crl_seconds_left(relay) > 23 * 3600


def test_keep_last_zone_keeps_the_plant_connected_and_fail_closed_zone_refuses(
    relay: Relay,
) -> None:
    """Default policy: OT keep-last, IT fail-closed (ADR 0036)."""
    assert publish_status(relay, PRESS_1, "before") == "ok"
    make_stale_soon(relay.plant)
    wait_for(lambda: events(relay, "config.broker.changed"), timeout_s=60, what="keep-last")
    (change,) = events(relay, "config.broker.changed")
    assert change["resource"] == "broker/ot" and "keep-last" in str(change["after"])
    ot_conf = (relay.home / "brokers" / "ot.conf").read_text()
    assert "\ncrlfile " not in ot_conf and "# idmz-keep-last-crl:" in ot_conf
    assert "\ncrlfile " in (relay.home / "brokers" / "it.conf").read_text()
    # OT, keep-last: a gateway's new handshake succeeds after nextUpdate ...
    wait_for(
        lambda: publish_status(relay, PRESS_1, "after") == "ok",
        timeout_s=60,
        what="a gateway connecting to the keep-last OT broker",
    )
    # ... and the device revoked before the CRL went stale is still refused.
    assert "not authori" in publish_status(relay, REVOKED, "revoked").lower()
    # IT, fail-closed: a consumer's new handshake is refused.
    wait_for(
        lambda: publish(relay.it, relay.plant.cred(HISTORIAN), "acme/x", "x").returncode != 0,
        timeout_s=60,
        what="the fail-closed IT broker refusing a consumer",
    )
    it_log = (relay.home / "brokers" / "it.log").read_text(errors="replace")
    assert "certificate verify failed" in it_log
    # A fresh CRL restores crlfile on OT (audited) and lets IT consumers in again.
    relay.plant.pki.ca.publish_crl(now=utcnow())
    wait_for(
        lambda: len(events(relay, "config.broker.changed")) == 2,
        timeout_s=60,
        what="crlfile restored",
    )
    assert "\ncrlfile " in (relay.home / "brokers" / "ot.conf").read_text()
    wait_for(
        lambda: publish(relay.it, relay.plant.cred(HISTORIAN), "acme/x", "x").returncode == 0,
        timeout_s=60,
        what="an IT consumer connecting with a fresh CRL",
    )


def test_fail_closed_ot_zone_refuses_gateways_with_a_stale_crl(
    plant: Plant, revoke_plugin: Path, tmp_path: Path
) -> None:
    with running_relay(plant, tmp_path, policy_text=policy_with("ot", "fail-closed")) as relay:
        make_stale_soon(relay.plant)
        wait_for(lambda: events(relay, "relay.crl.stale"), timeout_s=60, what="relay.crl.stale")
        (stale,) = events(relay, "relay.crl.stale")
        assert isinstance(stale["details"], dict)
        assert stale["details"]["on_stale_crl_ot"] == "fail-closed"
        wait_for(
            lambda: publish_status(relay, PRESS_1, "stale").startswith("rc="),
            timeout_s=60,
            what="the fail-closed OT broker refusing a gateway",
        )
        assert not events(relay, "config.broker.changed")
        assert "\ncrlfile " in (relay.home / "brokers" / "ot.conf").read_text()


def test_a_relay_started_with_a_stale_crl_under_keep_last_comes_up_and_audits_it(
    plant: Plant, revoke_plugin: Path, tmp_path: Path
) -> None:
    """After a long CA outage the relay restarts: with keep-last in both zones the brokers come
    up without crlfile (the relay itself could not connect otherwise), audited at once."""
    days_ago = utcnow() - timedelta(days=2)
    revoke(plant, as_of=days_ago)
    with running_relay(
        plant, tmp_path, crl_as_of=days_ago, policy_text=policy_with("it", "keep-last")
    ) as relay:
        changes = events(relay, "config.broker.changed")
        assert sorted(str(e["resource"]) for e in changes) == ["broker/it", "broker/ot"]
        assert len(events(relay, "relay.crl.stale")) == 1
        assert crl_seconds_left(relay) < -23 * 3600 and crl_problem(relay)
        assert publish_status(relay, PRESS_1, "restarted") == "ok"
        assert "not authori" in publish_status(relay, REVOKED, "revoked").lower()


def test_the_provisioning_service_republishes_and_the_relay_never_sees_a_stale_crl(
    plant: Plant, revoke_plugin: Path, tmp_path: Path
) -> None:
    """End to end, nobody running a command: the CRL is STALE_IN_S from nextUpdate, the
    provisioning service (sharing the CA directory) republishes it, the appliance reloads its
    brokers, and a gateway's new handshake after the old nextUpdate succeeds with crlfile
    still configured."""
    as_of = utcnow() - timedelta(days=1, seconds=-STALE_IN_S * 3)
    with running_relay(plant, tmp_path / "relay", crl_as_of=as_of) as relay:
        old_next_update = as_of + timedelta(days=1)
        with provisioning_service(plant):
            wait_for(lambda: crl_seconds_left(relay) > 23 * 3600, timeout_s=60, what="republished")
            wait_for(lambda: utcnow() > old_next_update, timeout_s=STALE_IN_S * 3 + 60,
                     what="the old CRL's nextUpdate to pass")  # fmt: skip
            assert publish_status(relay, PRESS_1, "after-old-next-update") == "ok"
            assert "\ncrlfile " in (relay.home / "brokers" / "ot.conf").read_text()
            assert not events(relay, "relay.crl.stale")
            assert not events(relay, "config.broker.changed")


@contextlib.contextmanager
def provisioning_service(plant: Plant) -> Iterator[None]:
    """`idmz provisioning serve` on the plant's CA directory, checking every second."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDMZ_")}
    env["IDMZ_CA_PASSPHRASE"] = PASSPHRASE.decode()
    service = subprocess.Popen(
        [sys.executable, "-m", "idmz", "--home", str(plant.pki.dir), "provisioning", "serve",
         "--port", str(port), "--expiry-interval", "1s"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port), timeout_s=90, what="idmz provisioning serve")
        yield
    finally:
        service.terminate()
        service.wait(timeout=30)
