"""`idmz policy check` passes a rendered deployment and fails, with a readable and a JSON report,
on each deliberately broken one: one test per rule."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from idmz.cli import main
from tests.policies.conftest import PLANT_POLICY
from tests.support.ca import PKIFixture, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKIFixture]:
    fixture = make_test_pki(tmp_path_factory.mktemp("pki"))
    yield fixture
    fixture.ca.close()


@pytest.fixture(scope="module")
def server(pki: PKIFixture):
    return pki.server()


@pytest.fixture
def deploy(pki: PKIFixture, server, tmp_path: Path, capsys) -> Path:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        'devices = ["acme/plant1/stamping/line1/cell1/press-01", "acme/plant1/stamping/line1/cell3/vib-01"]\n'
        'consumers = ["acme/it/historian"]\n'
    )
    out = tmp_path / "deploy"
    args = [
        "policy",
        "render",
        "--policy",
        str(PLANT_POLICY),
        "--devices",
        str(devices),
        "--out",
        str(out),
    ]
    args += ["--cafile", str(pki.cafile), "--crlfile", str(pki.crlfile), "--bind", "127.0.0.1"]
    for zone in ("ot", "it"):
        args += [f"--{zone}-cert", str(server.cert), f"--{zone}-key", str(server.key)]
    assert main(args) == 0
    capsys.readouterr()
    return out


def check(deploy: Path, capsys, *extra: str) -> tuple[int, dict]:
    code = main(["policy", "check", "--deployment", str(deploy), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def rules(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["severity"] == "error"}


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text()
    after = change(before)
    assert after != before
    path.write_text(after)


def test_rendered_deployment_passes(deploy, capsys) -> None:
    code, report = check(deploy, capsys)
    assert report["findings"] == [] and report["passed"] and code == 0
    assert len(report["policy_sha256"]) == 64
    assert main(["policy", "check", "--deployment", str(deploy)]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_ot_listener_without_tls_fails(deploy, capsys) -> None:
    edit(deploy / "ot-broker.conf", lambda t: t + "\nlistener 1883\n")
    code, report = check(deploy, capsys)
    assert code == 1 and "listener.plaintext" in rules(report)
    finding = next(f for f in report["findings"] if f["rule"] == "listener.plaintext")
    assert finding["file"] == "ot-broker.conf" and finding["line"] is not None and finding["fix"]


def test_ot_listener_without_required_client_certificate_fails(deploy, capsys) -> None:
    edit(
        deploy / "ot-broker.conf",
        lambda t: t.replace("require_certificate true", "require_certificate false"),
    )
    assert "listener.client_cert_optional" in rules(check(deploy, capsys)[1])


def test_listener_not_binding_identity_to_username_fails(deploy, capsys) -> None:
    edit(deploy / "ot-broker.conf", lambda t: t.replace("use_identity_as_username true\n", ""))
    assert "listener.identity_not_username" in rules(check(deploy, capsys)[1])


@pytest.mark.parametrize("broker", ["ot-broker.conf", "it-broker.conf"])
def test_anonymous_access_anywhere_fails(deploy, capsys, broker) -> None:
    edit(deploy / broker, lambda t: t.replace("allow_anonymous false", "allow_anonymous true"))
    assert "auth.anonymous" in rules(check(deploy, capsys)[1])


def test_missing_acl_file_fails(deploy, capsys) -> None:
    edit(
        deploy / "it-broker.conf",
        lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("acl_file")),
    )
    assert "acl.missing" in rules(check(deploy, capsys)[1])


def test_bridge_from_it_into_the_ot_broker_fails(deploy, capsys) -> None:
    ot_port = next(
        ln.split()[1]
        for ln in (deploy / "ot-broker.conf").read_text().splitlines()
        if ln.startswith("listener")
    )
    edit(
        deploy / "it-broker.conf",
        lambda t: t + f"\nconnection to-ot\naddress 127.0.0.1:{ot_port}\ntopic acme/# out 1\n",
    )
    assert "flow.bridge_toward_ot" in rules(check(deploy, capsys)[1])


def test_bridge_pulling_messages_into_the_ot_broker_fails(deploy, capsys) -> None:
    edit(
        deploy / "ot-broker.conf",
        lambda t: t + "\nconnection from-it\naddress it.acme.example:8883\ntopic cmd/# in 1\n",
    )
    assert "flow.bridge_toward_ot" in rules(check(deploy, capsys)[1])


def test_wildcard_publish_right_fails(deploy, capsys) -> None:
    edit(deploy / "ot-broker.acl", lambda t: t.replace(
        "topic write acme/plant1/stamping/line1/cell1/press-01/telemetry",
        "topic write acme/plant1/stamping/line1/cell1/press-01/#"))  # fmt: skip
    assert "acl.wildcard_write" in rules(check(deploy, capsys)[1])


def test_write_under_another_identity_fails(deploy, capsys) -> None:
    edit(deploy / "ot-broker.acl", lambda t: t + "\nuser acme/plant1/stamping/line1/cell3/vib-01\n"
         "topic write acme/plant1/stamping/line1/cell1/press-01/telemetry\n")  # fmt: skip
    assert "acl.write_outside_identity" in rules(check(deploy, capsys)[1])


def test_it_consumer_with_write_right_fails(deploy, capsys) -> None:
    edit(
        deploy / "it-broker.acl",
        lambda t: t.replace("topic read acme/plant1/#", "topic readwrite acme/plant1/x"),
    )
    assert "acl.it_write_not_relay" in rules(check(deploy, capsys)[1])


def _self_signed(key, name: str, days: int, *, ca: bool, now: datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{name}")]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_certificate_valid_longer_than_policy_fails(deploy, capsys) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    now = datetime.now(UTC)
    cert = _self_signed(
        ec.generate_private_key(ec.SECP256R1()),
        "acme/plant1/stamping/line1/cell1/press-01",
        400,
        ca=False,
        now=now,
    )
    (deploy / "certs").mkdir()
    (deploy / "certs" / "press-01.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    code, report = check(deploy, capsys)
    finding = next(f for f in report["findings"] if f["rule"] == "cert.validity_exceeds_policy")
    assert code == 1 and "400 days" in finding["message"] and "90" in finding["message"]


def test_weak_key_fails(deploy, capsys) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    weak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _self_signed(
        weak, "acme/plant1/stamping/line1/cell1/press-01", 30, ca=False, now=datetime.now(UTC)
    )
    (deploy / "weak.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    assert "cert.weak_key" in rules(check(deploy, capsys)[1])


def test_missing_crl_fails(deploy, capsys) -> None:
    edit(deploy / "ot-broker.conf", lambda t: t.replace("crlfile /", "crlfile /nonexistent/"))
    assert "crl.missing" in rules(check(deploy, capsys)[1])


def test_listener_without_crlfile_fails(deploy, capsys) -> None:
    edit(
        deploy / "it-broker.conf",
        lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("crlfile")),
    )
    assert "crl.not_configured" in rules(check(deploy, capsys)[1])


def test_crl_past_next_update_fails(deploy, capsys) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    code, report = check(deploy, capsys, "--now", later)
    assert code == 1 and "crl.expired" in rules(report)


def warnings(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["severity"] == "warning"}


def test_crl_near_next_update_is_a_warning(deploy, capsys) -> None:
    """Review M6: 11 h before nextUpdate the CA host has missed its republishing (at half of the
    1-day lifetime); the check says so while nothing has broken yet."""
    soon = (datetime.now(UTC) + timedelta(hours=13)).isoformat()
    code, report = check(deploy, capsys, "--now", soon)
    assert code == 0 and "crl.expiring" in warnings(report)
    finding = next(f for f in report["findings"] if f["rule"] == "crl.expiring")
    assert "h away" in finding["message"] and "idmz ca crl" in finding["fix"]
    code, report = check(deploy, capsys, "--now", soon, "--crl-warn-hours", "6")
    assert "crl.expiring" not in warnings(report)
    assert "crl.expiring" not in warnings(check(deploy, capsys)[1])


def keep_last(text: str) -> str:
    """What the relay renders while on_stale_crl = keep-last is in effect."""
    return text.replace("\ncrlfile ", "\n# idmz-keep-last-crl: ")


def test_crlfile_left_out_under_keep_last_with_a_stale_crl_is_a_warning(deploy, capsys) -> None:
    edit(deploy / "ot-broker.conf", keep_last)
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    _, report = check(deploy, capsys, "--now", later)
    assert "crl.kept_last" in warnings(report)
    assert "crl.not_configured" not in rules(report)


def test_crlfile_left_out_while_the_crl_is_fresh_fails(deploy, capsys) -> None:
    edit(deploy / "ot-broker.conf", keep_last)
    code, report = check(deploy, capsys)
    assert code == 1 and "crl.not_configured" in rules(report)


def test_crlfile_left_out_in_a_fail_closed_zone_fails(deploy, capsys) -> None:
    edit(deploy / "it-broker.conf", keep_last)  # the IT zone is fail-closed by default
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    code, report = check(deploy, capsys, "--now", later)
    assert code == 1 and "crl.not_configured" in rules(report)
    assert "crl.kept_last" not in warnings(report)


def test_crl_from_another_ca_fails(deploy, capsys, tmp_path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    foreign = _self_signed(key, "foreign CA", 30, ca=True, now=now)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(foreign.subject)
        .last_update(now - timedelta(minutes=1))
        .next_update(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "foreign-crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    edit(deploy / "ot-broker.conf", lambda t: "\n".join(
        f"crlfile {tmp_path / 'foreign-crl.pem'}" if ln.startswith("crlfile") else ln for ln in t.splitlines()))  # fmt: skip
    assert "crl.wrong_issuer" in rules(check(deploy, capsys)[1])


@pytest.mark.parametrize("version", ["tlsv1", "tlsv1.1"])
def test_tls_below_1_2_fails(deploy, capsys, version) -> None:
    edit(
        deploy / "ot-broker.conf",
        lambda t: t.replace("tls_version tlsv1.2", f"tls_version {version}"),
    )
    assert "tls.version_below_1_2" in rules(check(deploy, capsys)[1])


def test_unset_tls_version_is_a_warning_because_2_0_defaults_to_tls_1_2(deploy, capsys) -> None:
    edit(deploy / "it-broker.conf", lambda t: t.replace("tls_version tlsv1.2\n", ""))
    code, report = check(deploy, capsys)
    warnings = {f["rule"] for f in report["findings"] if f["severity"] == "warning"}
    assert "tls.version_unset" in warnings and code == 0


def test_missing_policy_fails(deploy, capsys) -> None:
    (deploy / "policy.toml").unlink()
    assert "policy.missing" in rules(check(deploy, capsys)[1])


def test_invalid_policy_fails_with_its_line(deploy, capsys) -> None:
    edit(
        deploy / "policy.toml",
        lambda t: t.replace('from = "idmz"\nto = "it"', 'from = "idmz"\nto = "ot"'),
    )
    code, report = check(deploy, capsys)
    finding = next(f for f in report["findings"] if f["rule"] == "policy.invalid")
    assert code == 1 and finding["line"] is not None


def test_text_report_names_rule_file_line_and_fix(deploy, capsys) -> None:
    edit(
        deploy / "ot-broker.conf",
        lambda t: t.replace("allow_anonymous false", "allow_anonymous true"),
    )
    assert main(["policy", "check", "--deployment", str(deploy)]) == 1
    out = capsys.readouterr().out
    assert (
        "auth.anonymous" in out and "ot-broker.conf:" in out and "fix:" in out and "FAILED" in out
    )


@pytest.mark.integration
def test_cli_rendered_deployment_starts_mosquitto(pki, server, tmp_path, capsys) -> None:
    from tests.support.mosquitto import start_broker
    from tests.support.net import free_port

    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps({"devices": ["acme/plant1/stamping/line1/cell1/press-01"]}))
    out, ot_port, it_port = tmp_path / "deploy", free_port(), free_port()
    args = ["policy", "render", "--policy", str(PLANT_POLICY), "--devices", str(devices), "--out", str(out),
            "--ot-port", str(ot_port), "--it-port", str(it_port), "--bind", "127.0.0.1", "--run-as-user", "root",
            "--cafile", str(pki.cafile), "--crlfile", str(pki.crlfile)]  # fmt: skip
    for zone in ("ot", "it"):
        args += [f"--{zone}-cert", str(server.cert), f"--{zone}-key", str(server.key)]
    assert main(args) == 0
    brokers = []
    try:
        for zone, port in (("ot", ot_port), ("it", it_port)):
            brokers.append(
                start_broker(
                    (out / f"{zone}-broker.conf").read_text(), port, tmp_path / zone, name=zone
                )
            )
        assert all(b.process.poll() is None for b in brokers)
    finally:
        for b in brokers:
            b.stop()
    capsys.readouterr()
    assert check(out, capsys)[0] == 0


def test_listener_letting_clients_choose_their_client_id_fails(deploy, capsys) -> None:
    # Review H3: a client id not bound to the certificate lets one identity take over another's
    # persistent session, the relay's included (ADR 0058).
    edit(deploy / "ot-broker.conf", lambda t: t.replace("use_username_as_clientid true\n", ""))
    assert "listener.client_id_unbound" in rules(check(deploy, capsys)[1])


RELEASE_TOML = (Path(__file__).resolve().parents[2] / "deploy" / "release.toml").read_text()


def without(key: str) -> tuple[str, str]:
    line = next(ln for ln in RELEASE_TOML.splitlines(keepends=True) if ln.startswith(key))
    return line, ""


def test_release_repository_as_a_conduit_of_its_own_passes(deploy, capsys) -> None:
    (deploy / "release.toml").write_text(RELEASE_TOML)
    code, report = check(deploy, capsys)
    assert code == 0 and report["findings"] == [] and "release.toml" in report["checked_files"]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (('writers = ["it"]', 'writers = ["it", "ot"]'), "release.ot_writes"),
        (('zone = "idmz"', 'zone = "ot"'), "release.zone"),  # IT would write into OT
        (('readers = ["ot"]', 'readers = ["ot", "it"]'), "release.readers"),
        (without("client_ca"), "release.no_client_ca"),
        (without("crl"), "release.no_crl"),
        (("port = 8445", "port = 8445\nupload = true"), "release.invalid"),
    ],
)
def test_release_repository_that_ot_can_write_or_that_reaches_ot_fails(
    deploy, capsys, change: tuple[str, str], rule: str
) -> None:
    (deploy / "release.toml").write_text(RELEASE_TOML.replace(*change))
    code, report = check(deploy, capsys)
    assert code == 1 and rule in rules(report)
