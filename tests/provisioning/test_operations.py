"""Rate limits, air-gapped enrollment, expiry alerts (audit, webhook, MQTT over TLS)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from provisioning.config import RateLimits, ServiceLimits
from provisioning.expiry import alert_expiring, scan_expiry
from provisioning.notify import MqttTarget, Notifier
from tests.provisioning.conftest import DEVICE, Env, make_ca, start_service
from tests.support.mosquitto import start_broker
from tests.support.net import free_port, wait_for

IDMZ = [sys.executable, "-m", "idmz"]


def idmz(
    home: Path,
    *args: str | Path,
    check: bool = True,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "IDMZ_HOME": str(home), **(env or {})}
    environ.pop("IDMZ_CA_PASSPHRASE", None)
    result = subprocess.run(
        [*IDMZ, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        input=stdin,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


# -- rate limits ------------------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Env]:
    make_ca(tmp_path)
    limits = ServiceLimits(
        rates=RateLimits(
            per_client_per_s=0.001, per_client_burst=4, per_token_per_s=0.001, per_token_burst=2
        )
    )
    e, running = start_service(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite'}", limits=limits)
    try:
        yield e
    finally:
        running.stop()
        e.audit.close()
        e.registry.close()
        e.ca.close()


JSON = {"Content-Type": "application/json"}


def test_retries_with_one_token_are_paced_with_429_and_retry_after(limited: Env) -> None:
    limited.add_device()
    token = limited.token()
    with limited.client() as http:
        statuses = [
            http.post("/v1/enroll", json={"csr": "x"}, headers={"Authorization": f"Bearer {token}"})
            for _ in range(3)
        ]
    assert [r.status_code for r in statuses[:2]] == [400, 400]
    assert statuses[2].status_code == 429
    assert int(statuses[2].headers["retry-after"]) >= 1
    assert limited.registry.counts()["certificates"] == 0


def test_a_flooding_client_is_paced_with_429(limited: Env) -> None:
    with limited.client() as http:
        statuses = [http.post("/v1/renew", json={"csr": "x"}).status_code for _ in range(6)]
    assert statuses[:4] == [401] * 4 and statuses[4:] == [429, 429]


def test_a_client_flooding_malformed_enrollments_is_paced_before_the_audit_log(
    limited: Env,
) -> None:
    """A body that fails the schema is an audited refusal (ADR 0044), so it takes the client's
    rate limit first: an unauthenticated flood cannot grow the audit log past the limit."""
    before = len(limited.audit_records())
    with limited.client() as http:
        statuses = [
            http.post(path, content=b'{"not": "an enrollment"}', headers=JSON).status_code
            for path in ("/v1/enroll", "/v1/renew", "/v1/enroll", "/v1/renew", "/v1/enroll")
        ]
        paced = http.post("/v1/renew", content=b"[]", headers=JSON)
    assert statuses == [422, 422, 422, 422, 429]  # burst 4, then paced
    assert paced.status_code == 429 and int(paced.headers["Retry-After"]) >= 1
    records = limited.audit_records()[before:]
    assert [r["action"] for r in records] == [
        "provisioning.enroll.refused",
        "provisioning.renew.refused",
        "provisioning.enroll.refused",
        "provisioning.renew.refused",
    ]


# -- air-gapped enrollment --------------------------------------------------------------------


def test_air_gapped_enrollment_request_sign_import(tmp_path: Path) -> None:
    home, gw = tmp_path / "home", tmp_path / "gw"
    fingerprint = idmz(home, "provisioning", "init").stdout.split("ca-fingerprint: ")[1].strip()
    idmz(home, "provisioning", "device", "add", DEVICE, "--asset", "press 7, hall B")
    token = (
        idmz(home, "provisioning", "token", "create", "--device", DEVICE, "--ttl", "7d")
        .stdout.strip()
        .splitlines()[-1]
    )

    idmz(
        home,
        "enroll",
        "--offline-request",
        tmp_path / "request.json",
        "--identity",
        DEVICE,
        "--out",
        gw,
    )
    assert (gw / "pending.key.pem").stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in (tmp_path / "request.json").read_text()
    # The token on the command line is refused (the process list would show it), before
    # anything is read or issued; then it is read from a file.
    on_command_line = idmz(
        home,
        "provisioning",
        "sign-request",
        tmp_path / "request.json",
        "--token",
        token,
        "--out",
        tmp_path / "response.json",
        check=False,
    )
    assert on_command_line.returncode == 2 and "--token-file" in on_command_line.stderr
    assert token not in on_command_line.stderr and not (tmp_path / "response.json").exists()
    token_file = tmp_path / "token.txt"
    token_file.write_text(token + "\n")
    idmz(
        home,
        "provisioning",
        "sign-request",
        tmp_path / "request.json",
        "--token-file",
        token_file,
        "--out",
        tmp_path / "response.json",
    )

    wrong_pin = idmz(
        home,
        "enroll",
        "--import",
        tmp_path / "response.json",
        "--ca-fingerprint",
        "cd" * 32,
        "--out",
        gw,
        check=False,
    )
    assert wrong_pin.returncode == 1 and not (gw / "cert.pem").exists()
    other_gw = tmp_path / "other"
    idmz(
        home,
        "enroll",
        "--offline-request",
        tmp_path / "other.json",
        "--identity",
        DEVICE,
        "--out",
        other_gw,
    )
    mismatch = idmz(
        home,
        "enroll",
        "--import",
        tmp_path / "response.json",
        "--ca-fingerprint",
        fingerprint,
        "--out",
        other_gw,
        check=False,
    )
    assert mismatch.returncode == 1 and "different key" in mismatch.stderr

    idmz(
        home,
        "enroll",
        "--import",
        tmp_path / "response.json",
        "--ca-fingerprint",
        fingerprint,
        "--out",
        gw,
    )
    assert (gw / "identity").read_text().strip() == DEVICE
    subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            gw / "ca.pem",
            "-untrusted",
            gw / "chain.pem",
            gw / "cert.pem",
        ],
        check=True,
        capture_output=True,
    )
    replay = idmz(
        home,
        "provisioning",
        "sign-request",
        tmp_path / "request.json",
        "--token-file",
        "-",
        "--out",
        tmp_path / "again.json",
        check=False,
        stdin=token,
    )
    assert replay.returncode == 1
    listed = json.loads(idmz(home, "provisioning", "device", "list", "--json").stdout)
    assert listed[0]["status"] == "enrolled"
    report = json.loads(idmz(home, "provisioning", "expiry", "--json", "--days", "400,100").stdout)
    assert report["count"] == 1 and list(report["lines"]) == ["acme/plant1/press/line1"]


# -- expiry alerts ----------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers["X-Idmz-Topic"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_expiring_certificates_are_alerted_once_per_threshold_by_line(env: Env) -> None:
    env.services.operators.add_group(
        "acme/plant1/press/line1", operator="t", now=env.now(), validity_days=5
    )
    env.add_device()
    assert env.enroll().status_code == 201
    env.add_device("acme/plant1/paint/line9/cell1/robot-1")  # not enrolled: nothing to alert

    httpd = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Hook.received.clear()
    notify = Notifier(webhook_url=f"http://127.0.0.1:{httpd.server_address[1]}/hook")
    try:
        report = scan_expiry(
            env.registry,
            now=env.now(),
            alert_days=(30, 14, 7, 1),
            issuing_not_after=env.services.enrollment.issuing.not_valid_after_utc,
            device_validity=timedelta(days=90),
        )
        assert [(c.device, c.threshold_days) for c in report.items] == [(DEVICE, 7)]
        assert list(report.by_line) == ["acme/plant1/press/line1"]
        assert report.ca_warning is None
        fresh = alert_expiring(
            report, registry=env.registry, audit=env.audit, actor="service:test", notifiers=[notify]
        )
        again = alert_expiring(
            report, registry=env.registry, audit=env.audit, actor="service:test", notifiers=[notify]
        )
    finally:
        httpd.shutdown()
    assert len(fresh) == 1 and again == []
    expiring = [r for r in env.audit_records() if r["action"] == "provisioning.device.expiring"]
    assert len(expiring) == 1 and expiring[0]["details"]["threshold_days"] == 7
    assert [topic for topic, _ in _Hook.received] == ["expiry/acme/plant1/press/line1"]


def test_expiry_warns_when_the_issuing_ca_expires_before_a_new_certificate_would(env: Env) -> None:
    report = scan_expiry(
        env.registry,
        now=env.now(),
        alert_days=(30,),
        issuing_not_after=env.now() + timedelta(days=20),
        device_validity=timedelta(days=90),
    )
    assert report.ca_warning is not None and "renew the issuing CA" in report.ca_warning


def test_revocation_is_published_over_mqtt_with_tls(env: Env, tmp_path: Path) -> None:
    from pki.profiles import ServerName
    from provisioning.server import ensure_server_certificate

    broker_dir = tmp_path / "broker"
    cert, key = ensure_server_certificate(
        env.ca, broker_dir, names=ServerName.parse("localhost,127.0.0.1"), now=env.now()
    )
    cafile = broker_dir / "ca.pem"
    cafile.write_bytes(env.ca.paths.chain.read_bytes())
    port = free_port()
    # Run as this user: mosquitto would otherwise drop to its own and lose access to tmp_path.
    config = (
        f"user {getpass.getuser()}\nlog_type all\nlistener {port} 127.0.0.1\ncafile {cafile}\ncertfile {cert}\nkeyfile {key}\n"
        "allow_anonymous true\n"
    )
    broker = start_broker(config, port, broker_dir)
    out = tmp_path / "sub.txt"
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--cafile",
            str(env.root_file),
            "-t",
            "idmz/provisioning/#",
            "-v",
            "-C",
            "1",
            "-W",
            "60",
        ],
        stdout=out.open("wb"),
    )
    try:
        wait_for(
            lambda: "SUBSCRIBE" in broker.log(), timeout_s=30, what="mosquitto_sub to subscribe"
        )
        env.services.operators.listeners = (
            Notifier(mqtt=MqttTarget("127.0.0.1", port, ca_file=env.root_file)).revoked,
        )
        env.add_device()
        assert env.enroll().status_code == 201
        env.services.operators.revoke_device(DEVICE, operator="t", now=env.now())
        sub.wait(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        broker.stop()
    topic, _, payload = out.read_text().partition(" ")
    assert topic == "idmz/provisioning/revocations"
    message = json.loads(payload)
    assert (
        message["device"] == DEVICE
        and message["kind"] == "device-revoked"
        and len(message["serials"]) == 1
    )


def test_certificate_policy_comes_from_the_policy_document_when_there_is_one(
    tmp_path: Path,
) -> None:
    from cryptography import x509

    home, gw = tmp_path / "home", tmp_path / "gw"
    plant = (Path(__file__).resolve().parents[2] / "deploy" / "policy" / "plant.toml").read_text()
    (home / "policy").mkdir(parents=True)
    (home / "policy" / "policy.toml").write_text(
        plant.replace("\ndevice = 90\n", "\ndevice = 30\n")
    )
    fingerprint = idmz(home, "provisioning", "init").stdout.split("ca-fingerprint: ")[1].strip()
    idmz(home, "provisioning", "device", "add", DEVICE)
    token = (
        idmz(home, "provisioning", "token", "create", "--device", DEVICE)
        .stdout.strip()
        .splitlines()[-1]
    )
    idmz(
        home,
        "enroll",
        "--offline-request",
        tmp_path / "req.json",
        "--identity",
        DEVICE,
        "--out",
        gw,
    )
    idmz(
        home,
        "provisioning",
        "sign-request",
        tmp_path / "req.json",
        "--out",
        tmp_path / "resp.json",
        env={"IDMZ_ENROLL_TOKEN": token},
    )
    idmz(
        home,
        "enroll",
        "--import",
        tmp_path / "resp.json",
        "--ca-fingerprint",
        fingerprint,
        "--out",
        gw,
    )
    cert = x509.load_pem_x509_certificate((gw / "cert.pem").read_bytes())
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 30
