"""Where the demo keeps everything: one directory, ``<home>/demo``, wiped at every start.

The directory is itself an idmz home (``idmz --home <home>/demo ...`` works on it afterwards):
``ca/``, ``audit/``, ``provisioning/`` and ``relay/`` are the parts' own layout; the demo adds
the gateways' credential directories, the plant's files and the logs. A marker file says the
directory is the demo's, so the wipe never removes anything else.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import bedrock.errors as category

MARKER = ".idmz-demo"

# Names in the plant (deploy/policy/plant.toml assigns acme/plant1/stamping/... to "gateway").
ENTERPRISE = "acme"
PRESS_1 = "acme/plant1/stamping/line1/cell1/press-01"  # the gateway with the anomaly model
PRESS_2 = "acme/plant1/stamping/line1/cell1/press-02"  # legitimately enrolled, later misused
HISTORIAN = "acme/it/historian"  # the IT consumer
RELAY = "acme/it/idmz-relay"  # the relay's client identity on both brokers
MODEL_SIGNER = "acme/signer/edge-models"
AUDIT_ORIGIN = "demo.idmz.local/audit"  # the demo creates the log; every part appends to it
DEMO_OPERATOR = "idmz-demo"  # IDMZ_OPERATOR for every idmz child: audited as operator:idmz-demo


class DemoDirectoryError(category.ConfigError):
    """``<home>/demo`` exists but is not the demo's: refuse to wipe it (exit code 2)."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """One simulated gateway's files (its own directory, as on a separate box)."""

    name: str
    identity: str
    dir: Path

    @property
    def credentials(self) -> Path:
        return self.dir / "credentials"

    @property
    def config(self) -> Path:
        return self.dir / "gateway.toml"

    @property
    def token_file(self) -> Path:
        """The one-time enrollment token as the operator hands it over (0600)."""
        return self.dir / "enrollment-token"

    @property
    def opcua(self) -> Path:
        """The gateway's OPC UA application certificate (not its MQTT identity)."""
        return self.dir / "opcua"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def alarms(self) -> Path:
        return self.state / "alarms.jsonl"


@dataclass(frozen=True, slots=True)
class DemoLayout:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def ca_passphrase(self) -> Path:
        return self.secrets / "ca-passphrase"

    @property
    def pinned_audit_key(self) -> Path:
        """The log's verifier key as the auditor pinned it when the log was created."""
        return self.root / "auditor" / "audit-log.vkey"

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    @property
    def relay_toml(self) -> Path:
        return self.root / "relay.toml"

    @property
    def relay_tls(self) -> Path:
        return self.root / "relay" / "tls"

    @property
    def broker_dir(self) -> Path:
        """Where the relay renders and runs its managed brokers (relay_config.py)."""
        return self.root / "relay" / "brokers"

    @property
    def deployment_check(self) -> Path:
        return self.root / "deployment-check"

    @property
    def historian(self) -> Path:
        return self.root / "it" / "historian"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def plant(self) -> Path:
        return self.root / "plant"

    @property
    def opcua_server(self) -> Path:
        """The simulated PLC's OPC UA server certificate (made by the simulator)."""
        return self.plant / "opcua-server"

    @property
    def sim_control(self) -> Path:
        return self.plant / "control.json"

    @property
    def captures(self) -> Path:
        return self.root / "captures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def gateway(self, name: str, identity: str) -> Gateway:
        return Gateway(name, identity, self.root / "gateways" / name)

    def prepare(self) -> None:
        """Wipe and recreate the directory (only if it is the demo's or does not exist)."""
        if self.root.exists():
            if not (self.root / MARKER).exists():
                raise DemoDirectoryError(
                    f"{self.root} exists and is not a demo directory (no {MARKER}); "
                    "move it away or choose another --home"
                )
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, mode=0o700)
        (self.root / MARKER).write_text("created by `idmz demo`; wiped at its next start\n")
        for d in (self.logs, self.secrets, self.captures, self.plant, self.model):
            d.mkdir(parents=True, mode=0o700)
