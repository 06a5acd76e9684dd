"""One audit origin for a home: every idmz command that opens the log names it the same way."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from audit.keys import existing_origin
from idmz.audit_log import audit_origin, open_audit_log
from idmz.cli import main
from idmz.home import Home
from idmz.provisioning_runtime import open_runtime


def test_one_audit_origin_for_a_home_existing_log_then_env_then_hostname(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    assert audit_origin(home, {}) == f"{socket.gethostname()}/idmz-audit"
    assert audit_origin(home, {"IDMZ_AUDIT_ORIGIN": "plant1.example/audit"}) == (
        "plant1.example/audit"
    )
    open_audit_log(home, environ={"IDMZ_AUDIT_ORIGIN": "plant1.example/audit"}).close()
    # Once the log exists its origin wins over any later setting (a log never renames itself).
    assert audit_origin(home, {"IDMZ_AUDIT_ORIGIN": "other.example/audit"}) == (
        "plant1.example/audit"
    )
    open_audit_log(home, environ={"IDMZ_AUDIT_ORIGIN": "other.example/audit"}).close()
    assert existing_origin(home.audit_dir) == "plant1.example/audit"


@pytest.mark.parametrize("first", ["ca", "audit", "provisioning"])
def test_one_audit_origin_for_a_home_whichever_command_writes_first(
    first: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("IDMZ_AUDIT_ORIGIN", "plant1.example/audit")
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", "origin-test-passphrase")
    monkeypatch.delenv("IDMZ_CA_PASSPHRASE_FILE", raising=False)
    argv = {
        "ca": ["ca", "init"],
        "audit": ["audit", "append", "--action", "operator.test.done", "--resource", "r",
                  "--reason", "first"],
        "provisioning": None,
    }[first]  # fmt: skip
    if argv is None:
        open_runtime(Home(home)).close()
    else:
        assert main(["--home", str(home), *argv]) == 0
    monkeypatch.setenv("IDMZ_AUDIT_ORIGIN", "changed.example/audit")  # too late: the log exists
    if first == "audit":
        assert main(["--home", str(home), "ca", "init"]) == 0
    assert main(["--home", str(home), "audit", "append", "--action", "operator.test.done",
                 "--resource", "r", "--reason", "second"]) == 0  # fmt: skip
    capsys.readouterr()
    assert existing_origin(home / "audit") == "plant1.example/audit"
    actions = [json.loads(line)["action"] for line in (home / "audit" / "entries.jsonl").open()]
    assert "pki.ca.created" in actions and actions[-1] == "operator.test.done"
