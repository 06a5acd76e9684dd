"""`idmz policy validate` and `idmz policy evaluate` as an operator uses them."""

from __future__ import annotations

import json

from idmz.cli import main
from tests.policies.conftest import PLANT_POLICY

PRESS = "acme/plant1/stamping/line1/cell1/press-01"


def test_validate_prints_the_content_hash(policy, capsys) -> None:
    assert main(["policy", "validate", str(PLANT_POLICY), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["content_sha256"] == policy.content_hash


def test_validate_invalid_policy_exits_2_naming_key_and_line(tmp_path, plant_text, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(plant_text.replace("min_rsa_bits = 3072", "min_rsa_bits = 1024"))
    assert main(["policy", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "certificates.min_rsa_bits" in err and f"{bad}:" in err


def test_evaluate_explains_a_refusal_with_its_reason_code(capsys) -> None:
    code = main(["policy", "evaluate", "--policy", str(PLANT_POLICY), "--identity", PRESS,
                 "--topic", "acme/plant1/stamping/line1/cell1/press-02/telemetry", "--json"])  # fmt: skip
    assert code == 1
    assert json.loads(capsys.readouterr().out)["reason_code"] == "topic_outside_identity"


def test_evaluate_checks_a_payload_file(tmp_path, capsys) -> None:
    payload = tmp_path / "msg.json"
    payload.write_text(json.dumps({"v": 1, "id": "m-1", "ts": "2026-11-22T10:00:00Z", "device": PRESS,
                                   "kind": "status", "data": {}}))  # fmt: skip
    code = main(["policy", "evaluate", "--policy", str(PLANT_POLICY), "--identity", PRESS,
                 "--topic", f"{PRESS}/status", "--payload", str(payload)])  # fmt: skip
    assert code == 0 and capsys.readouterr().out.startswith("ALLOW")


def test_example_devices_file_renders_without_notes(tmp_path, capsys) -> None:
    devices = PLANT_POLICY.parent / "devices.toml"
    out = tmp_path / "deploy"
    assert (
        main(
            [
                "policy",
                "render",
                "--policy",
                str(PLANT_POLICY),
                "--devices",
                str(devices),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "note:" not in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "policy.toml", "ot-broker.conf", "ot-broker.acl", "it-broker.conf", "it-broker.acl",
    }  # fmt: skip
