"""Review M6: the CA host republishes the CRL by itself, so a device still connects to the rendered
OT broker (real Mosquitto, crlfile = the CA's CRL) after the old CRL's nextUpdate has passed.

Time is an input: the "old" CRL is published as of 24 h minus a few seconds ago, so its nextUpdate
is seconds away instead of a day.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from pki.identity import DeviceIdentity
from policies import load_policy
from policies.broker_config import BrokerSettings, Registry, TlsFiles, render_brokers
from tests.support.ca import PASSPHRASE, make_test_pki
from tests.support.mosquitto import start_broker
from tests.support.mqtt import Endpoint, publish
from tests.support.net import free_port, port_open, wait_for

pytestmark = pytest.mark.integration
PRESS = "acme/plant1/stamping/line1/cell1/press-01"
PLANT = Path(__file__).resolve().parents[2] / "deploy" / "policy" / "plant.toml"
LEFT_S = 20  # the old CRL's nextUpdate is this far away when the test starts


def crl_number(path: Path) -> int:
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_crl_near_next_update_is_republished_by_the_service_and_devices_keep_connecting(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    pki = make_test_pki(home)
    server, press = pki.server(), pki.device(PRESS)
    old = pki.ca.publish_crl(now=datetime.now(UTC) - timedelta(days=1, seconds=-LEFT_S))
    old_number = crl_number(pki.crlfile)
    policy = load_policy(PLANT.read_text(), source="plant.toml")
    tls = TlsFiles(str(pki.cafile), str(server.cert), str(server.key), str(pki.crlfile))
    ot_port, it_port = free_port(), free_port()
    rendered = render_brokers(
        policy,
        Registry(devices=(DeviceIdentity.parse(PRESS),)),
        ot=BrokerSettings(
            ot_port, tls, str(tmp_path / "ot.acl"), bind_address="127.0.0.1", run_as_user="root"
        ),
        it=BrokerSettings(
            it_port, tls, str(tmp_path / "it.acl"), bind_address="127.0.0.1", run_as_user="root"
        ),
    )
    (tmp_path / "ot.acl").write_text(rendered.ot.acl)
    broker = start_broker(rendered.ot.config, ot_port, tmp_path, name="ot")
    service_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDMZ_")}
    env["IDMZ_CA_PASSPHRASE"] = PASSPHRASE.decode()
    service = subprocess.Popen(
        [sys.executable, "-m", "idmz", "--home", str(home), "provisioning", "serve",
         "--port", str(service_port), "--expiry-interval", "1s"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(service_port), timeout_s=90, what="idmz provisioning serve")
        # Nobody runs a command: the service's background loop republishes.
        wait_for(
            lambda: crl_number(pki.crlfile) > old_number, timeout_s=60, what="a republished CRL"
        )
        broker.reload()  # the relay appliance sends this SIGHUP when the CRL file changes
        wait_for(
            lambda: datetime.now(UTC) > old.next_update + timedelta(seconds=1),
            timeout_s=LEFT_S + 60,
            what="the old CRL's nextUpdate to pass",
        )
        wait_for(
            lambda: (
                publish(Endpoint(ot_port, pki.cafile), press, f"{PRESS}/status", "x").returncode
                == 0
            ),
            timeout_s=30,
            what="the press to connect and publish after the old nextUpdate",
        )
    finally:
        service.terminate()
        service.wait(timeout=30)
        broker.stop()
        pki.ca.close()
    entries = (home / "audit" / "entries.jsonl").read_text().splitlines()
    published = [
        e
        for e in map(json.loads, entries)
        if e["action"] == "pki.crl.published" and e["actor"] == "service:provisioning"
    ]
    assert published, "the republication was not audited"
    details = published[0]["details"]
    assert details["crl_number"] > old_number
    assert datetime.fromisoformat(details["next_update"]) > old.next_update + timedelta(hours=23)


def test_the_shipped_systemd_unit_runs_the_crl_watch_command() -> None:
    import shlex

    from idmz.cli import build_parser

    unit = (PLANT.parents[1] / "systemd" / "idmz-crl.service").read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert Path(argv[0]).name == "idmz"
    args = build_parser().parse_args(argv[1:])
    assert (args.ca_command, args.watch) == ("crl", True)
    assert args.interval <= 3600  # well under half the default 1-day CRL lifetime
    assert "Restart=always" in unit
