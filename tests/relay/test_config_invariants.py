"""The appliance's configuration invariants are checks that raise, so `python -O` keeps them.

Managed brokers check every client certificate against the CA's CRL: a configuration that
manages brokers without one is refused when it is built, not found out by an `assert` that
`python -O` strips (it used to be one, in `Appliance._render`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import (
    ApplianceConfig,
    ManagedBroker,
    WorkerConfig,
)
from relay.errors import RelayConfigError
from tests.support.relay_fakes import worker_config

ROOT = Path(__file__).resolve().parents[2]


def _worker(tmp: Path, crl_path: Path | None) -> WorkerConfig:
    return worker_config(tmp, crl_path=crl_path)


def _managed(tmp: Path, port: int) -> ManagedBroker:
    return ManagedBroker("127.0.0.1", port, tmp / "ca.pem", tmp / "srv.pem", tmp / "srv.key")


def test_managed_brokers_without_a_crl_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RelayConfigError, match="CRL"):
        ApplianceConfig(
            worker=_worker(tmp_path, crl_path=None),
            managed_ot=_managed(tmp_path, 8883),
            managed_it=_managed(tmp_path, 8884),
            broker_dir=tmp_path / "brokers",
        )


def test_managed_brokers_come_whole_with_their_crl(tmp_path: Path) -> None:
    config = ApplianceConfig(
        worker=_worker(tmp_path, crl_path=tmp_path / "crl.pem"),
        managed_ot=_managed(tmp_path, 8883),
        managed_it=_managed(tmp_path, 8884),
        broker_dir=tmp_path / "brokers",
    )
    managed = config.managed_brokers()
    assert (managed.ot.port, managed.it.port) == (8883, 8884)
    assert (managed.directory, managed.crl_path) == (tmp_path / "brokers", tmp_path / "crl.pem")


def test_external_brokers_have_no_managed_brokers_to_render(tmp_path: Path) -> None:
    config = ApplianceConfig(worker=_worker(tmp_path, crl_path=None))
    with pytest.raises(RelayConfigError, match="manages no brokers"):
        config.managed_brokers()


def test_crl_check_survives_python_optimize(tmp_path: Path) -> None:
    """The refusal above under `python -O`, where an `assert` would have vanished."""
    script = (
        "import sys; from pathlib import Path\n"
        "from tests.relay.test_config_invariants import _managed, _worker\n"
        "from relay.config import ApplianceConfig\n"
        "from relay.errors import RelayConfigError\n"
        "tmp = Path(sys.argv[1])\n"
        "try:\n"
        "    ApplianceConfig(worker=_worker(tmp, None), managed_ot=_managed(tmp, 1),\n"
        "                    managed_it=_managed(tmp, 2), broker_dir=tmp)\n"
        "except RelayConfigError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: managed brokers need the CA's CRL"), done.stdout
