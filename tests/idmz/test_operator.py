"""One operator name: every idmz command audits the operator as ``operator:<name>``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idmz.cli import main
from idmz.operator import operator_actor, operator_name


def test_one_operator_name_idmz_operator_then_login_then_a_safe_fallback() -> None:
    assert operator_actor({"IDMZ_OPERATOR": "alice", "USER": "root"}) == "operator:alice"
    assert operator_actor({"LOGNAME": "bob", "USER": "root"}) == "operator:bob"
    assert operator_actor({"USER": "carol"}) == "operator:carol"
    assert operator_name({"IDMZ_OPERATOR": "  "}) != ""  # blank is unset: login or "unknown"


def test_one_operator_name_across_ca_provisioning_and_audit_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    monkeypatch.setenv("IDMZ_OPERATOR", "dana")
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", "operator-test-passphrase")
    monkeypatch.delenv("IDMZ_CA_PASSPHRASE_FILE", raising=False)
    path = "acme/plant1/press/line1/cell2/press-07"
    assert main(["--home", home, "ca", "init"]) == 0
    assert main(["--home", home, "provisioning", "device", "add", path]) == 0
    assert main(["--home", home, "audit", "append", "--action", "operator.test.done",
                 "--resource", "r", "--reason", "checked"]) == 0  # fmt: skip
    capsys.readouterr()
    entries = [json.loads(line) for line in (Path(home) / "audit" / "entries.jsonl").open()]
    assert [e["action"] for e in entries] == [
        "pki.ca.created", "provisioning.device.added", "operator.test.done"
    ]  # fmt: skip
    assert {e["actor"] for e in entries} == {"operator:dana"}
