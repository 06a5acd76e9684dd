"""`idmz release` as an operator uses it: init, a canary picked from the CA's ledger, the
repository served by `idmz release serve` in its own process, a gateway pulling from it, the
gateway's status report recorded on the IT side, and the audit report's change-control section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from idmz.cli import main
from policies.envelope import Envelope
from tests.release.conftest import GW_A, GW_B, LINE1
from tests.support.ca import PASSPHRASE, ProductCA, make_ca
from tests.support.release_fleet import Fleet, FleetGateway


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Path, ProductCA]]:
    h = tmp_path / "home"
    ca = make_ca(h / "ca", age=timedelta(days=365))
    ca.ca.publish_crl(now=datetime.now(UTC))
    yield h, ca


def test_operator_publishes_a_canary_served_to_one_gateway_and_audited(
    home: tuple[Path, ProductCA], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    models: dict[str, bytes],
) -> None:  # fmt: skip
    h, ca = home
    signer, server = ca.signer("release"), ca.server()
    files = {
        "signer.pem": signer.cert_pem, "signer-key.pem": signer.key_pem,
        "chain.pem": signer.chain_pem, "server.pem": server.cert_pem + server.chain_pem,
        "server-key.pem": server.key_pem, "model.onnx": models["m-2"],
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    os.chmod(tmp_path / "signer-key.pem", 0o600)
    home_opt = ("--home", str(h))
    run(capsys, "release", "init", *home_opt, "--signer-cert", str(tmp_path / "signer.pem"),
        "--signer-key", str(tmp_path / "signer-key.pem"), "--signer-chain",
        str(tmp_path / "chain.pem"), "--root-key-dir", str(tmp_path / "offline"))  # fmt: skip
    gateways = {i: ca.device(i) for i in (GW_A, GW_B)}  # in the CA's ledger: the canary pool
    _, out = run(capsys, "release", "publish", "--kind", "model", "--file",
                 str(tmp_path / "model.onnx"), "--to", LINE1, "--stage", "canary:1",
                 "--reason", "retrained on week 49", *home_opt)  # fmt: skip
    published = json.loads(out)
    assert published["canary"] == [GW_A] and published["release"] == 1

    serve = subprocess.Popen(
        [sys.executable, "-c", "import sys; from idmz.cli import main; sys.exit(main())",
         "release", "serve", *home_opt, "--cert", str(tmp_path / "server.pem"),
         "--key", str(tmp_path / "server-key.pem"), "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "IDMZ_CA_PASSPHRASE": PASSPHRASE.decode()},
    )  # fmt: skip
    try:
        line = serve.stdout.readline() if serve.stdout else ""
        port = int(line.rsplit(":", 1)[1].split()[0])
        fleet = Fleet(ca, tmp_path, signer, None, None, port)  # type: ignore[arg-type]
        (tmp_path / "trusted-root.json").write_bytes(
            (h / "release" / "trusted-root.json").read_bytes()
        )
        a: FleetGateway = fleet.add_gateway(GW_A)
        b: FleetGateway = fleet.add_gateway(GW_B)
        assert [r.result for r in a.check()] == ["activated", "current"]
        assert [r.result for r in b.check()] == ["current", "current"]
        assert a.model_version == "m-2" and b.model_version is None
        status_msg = Envelope("1", "2026-12-07T00:00:00.000Z", GW_A, "status", a.gateway.status())
        (tmp_path / "status.jsonl").write_bytes(status_msg.to_json() + b"\n")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    _, out = run(capsys, "release", "reports", "--from", str(tmp_path / "status.jsonl"), *home_opt)
    assert out.startswith("1 gateway release result")
    _, out = run(capsys, "release", "status", "--json", *home_opt)
    status = json.loads(out)
    rows = {r["identity"]: r for r in status["gateways"]}
    assert rows[GW_A]["model"] == 1 and rows[GW_A]["running"] == {"model": 1, "config": 0}
    assert rows[GW_A]["line"] == "line1"
    assert status["offered"][f"model/{LINE1}/release.canary"]["canary"] == [GW_A]

    _, key = run(capsys, "audit", "key", "--dir", str(h / "audit"))
    report = tmp_path / "report.json"
    run(capsys, "audit", "report", "--dir", str(h / "audit"), "--key", key.strip(),
        "--format", "json", "--out", str(report))  # fmt: skip
    changes = json.loads(report.read_text())["change_control"]
    actions = [c["action"] for c in changes]
    assert actions == ["release.change.published", "edge.release.activated"]
    assert changes[0]["reason"] == "retrained on week 49"
    assert changes[0]["details"]["canary"] == GW_A and changes[1]["actor"] == GW_A
    del gateways
