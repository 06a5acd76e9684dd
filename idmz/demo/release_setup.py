"""Set-up of the release path in the demo (ADR 0100): the repository in the IDMZ, press-01's
pin of its root, the server, and a retrained model made in the background for act 5."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bedrock.clock import utc_now
from idmz.demo.ports import port_open

if TYPE_CHECKING:
    from idmz.demo.plant import Plant

LINE = "acme/plant1/stamping/line1"
RETRAINING_S = "60"


def release_dir(plant: Plant) -> Path:
    return plant.layout.root / "release"


def pinned_root(plant: Plant) -> Path:
    """Where press-01 keeps the repository's root it pinned when it was set up."""
    return plant.press1.dir / "release-root.json"


def start_release_repository(plant: Plant) -> str:
    """Set-up: the repository (release signer: the model signer), press-01's pin, the server
    (the brokers' server certificate), and a retrained model in the background."""
    m, tls = plant.layout.model, plant.layout.relay_tls
    plant.idmz(
        "release-init", "release", "init", "--signer-cert", str(m / "signer.pem"),
        "--signer-key", str(m / "signer.key"), "--signer-chain", str(m / "signer-chain.pem"),
        "--root-key-dir", str(plant.layout.secrets / "release-root-key"),
    )  # fmt: skip
    pinned_root(plant).write_bytes((release_dir(plant) / "trusted-root.json").read_bytes())
    server = tls / "release-server.pem"
    server.write_bytes((tls / "broker.pem").read_bytes() + (tls / "broker-chain.pem").read_bytes())
    port = plant.ports.release
    plant.start_child(
        "release",
        plant.procs.idmz_argv(
            "release", "serve", "--cert", str(server), "--key", str(tls / "broker.key"),
            "--host", "127.0.0.1", "--port", str(port),
        ),
        {},
    )  # fmt: skip
    plant.start_child(
        "model-retrain",
        plant.procs.idmz_argv(
            "model", "train", "--from-simulator", RETRAINING_S, "--seed", "11",
            "--version", f"retrained-{utc_now():%Y%m%dT%H%M%SZ}",
            "--out", str(m / "retrained.onnx"),
        ),
        {},
    )  # fmt: skip
    plant.procs.wait_for(
        lambda: port_open(port), what=f"the release repository on port {port}",
        watch=[plant.children["release"]],
    )  # fmt: skip
    return f"https://127.0.0.1:{port}: offline root, targets by {m.name}/signer.pem, mTLS"
