"""One CA passphrase rule for the CLI and the provisioning service (W11): the same sources in
the same order, the same refusal when a CA is opened without one, and a generated one always
said out loud (printed by the CLI, logged by the service), never its value."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from bedrock.errors import exit_code_for
from idmz.commands import ca_context
from idmz.home import Home, SettingsError
from idmz.provisioning_runtime import ensure_ca
from idmz.secrets import ca_passphrase


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    for var in ("IDMZ_CA_PASSPHRASE", "IDMZ_CA_PASSPHRASE_FILE", "IDMZ_AUDIT_ORIGIN"):
        monkeypatch.delenv(var, raising=False)
    return Home(tmp_path / "home").ensure()


def test_opening_a_ca_without_a_passphrase_is_refused_alike_by_cli_and_service(
    home: Home,
) -> None:
    with pytest.raises(SettingsError) as cli:
        ca_context.passphrase(home, create=False)
    with pytest.raises(SettingsError) as service:
        ca_passphrase(home, create=False)
    assert str(cli.value) == str(service.value) and "IDMZ_CA_PASSPHRASE_FILE" in str(cli.value)
    assert exit_code_for(cli.value) == 2
    assert not (home.ca_dir / "passphrase").exists()


def test_the_service_logs_a_generated_passphrase_without_its_value(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="idmz.provisioning"):
        ensure_ca(home, organization="acme")
    secret_file = home.ca_dir / "passphrase"
    secret = secret_file.read_bytes().decode()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert any("generated a random CA passphrase" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text
    assert ca_passphrase(home, create=False) == secret.encode()  # and the CLI reads the same


def test_the_cli_prints_a_generated_passphrase_without_its_value(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    value = ca_context.passphrase(home, create=True)
    err = capsys.readouterr().err
    assert "idmz: generated a random CA passphrase" in err and value.decode() not in err
