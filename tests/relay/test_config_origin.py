"""deploy/relay.toml names the audit log as every idmz command does (idmz.audit_log), so the
relay opens a log that another command created first instead of refusing to start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from audit.errors import AuditConfigError
from audit.log import AuditLog
from idmz.audit_log import open_audit_log
from idmz.home import Home
from idmz.relay_config import load_relay_config
from relay.errors import RelayConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "relay.toml"


def _load(home: Home, env: dict[str, str], text: str | None = None) -> str:
    config = load_relay_config(text or DEPLOY.read_text(), home=home, source=DEPLOY, environ=env)
    return config.worker.audit_origin


def test_relay_uses_the_origin_of_a_log_another_command_created(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    with open_audit_log(home, environ={"IDMZ_AUDIT_ORIGIN": "plant9.example/audit"}):
        pass  # e.g. `idmz ca init` ran first
    origin = _load(home, {})  # the relay's environment does not name it
    assert origin == "plant9.example/audit"
    with AuditLog.open(home.audit_dir, origin=origin):  # what `idmz relay run` does
        pass


def test_no_log_yet_env_then_hostname(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    assert _load(home, {"IDMZ_AUDIT_ORIGIN": "plant1.example/audit"}) == "plant1.example/audit"
    assert _load(home, {}) == f"{socket.gethostname()}/idmz-audit"


def test_an_explicit_origin_is_kept_and_a_log_with_another_refuses_it(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    with open_audit_log(home, environ={"IDMZ_AUDIT_ORIGIN": "plant9.example/audit"}):
        pass
    text = 'audit_origin = "other.example/audit"\n' + DEPLOY.read_text()
    origin = _load(home, {}, text)
    assert origin == "other.example/audit"
    with pytest.raises(AuditConfigError), AuditLog.open(home.audit_dir, origin=origin):
        pass
    with pytest.raises(RelayConfigError, match="audit_origin"):
        _load(home, {}, 'audit_origin = ""\n' + DEPLOY.read_text())
