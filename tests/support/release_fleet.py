"""A release repository served over real HTTPS mTLS on loopback, and gateways pulling from it
with the real TUF client, in one process (the end-to-end tests and bench/release.py).

Each `FleetGateway` is a real `edge.gateway.Gateway` (no readers, no uplink) with the real
`edge.updates.UpdateAgent` and `edge.activation` activators: what it runs is what its scorer is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from securesystemslib.signer import CryptoSigner

from edge.config import GatewayConfig
from edge.gateway import Gateway
from edge.model_signing import ModelTrust, sign_model
from edge.outbox import Outbox, OutboxLimits
from edge.updates import UpdateAgent, UpdateResult, UpdateSettings
from idmz.gateway_runtime import attach_updates
from pki.identity import DeviceIdentity
from policies.release import ReleaseKind, StageRequest
from release.keys import load_signer
from release.records import Expiry, ReleaseRecord
from release.repository import ReleaseRepository
from release.server import Fetch, RepositoryServer, ServerTLS
from tests.support.ca import Issued, ProductCA


@dataclass
class FleetGateway:
    identity: str
    gateway: Gateway
    agent: UpdateAgent
    creds: Path

    def check(self) -> list[UpdateResult]:
        return self.agent.check_once()

    @property
    def model_version(self) -> str | None:
        s = self.gateway.scorer
        return s.version if s is not None else None

    @property
    def model_release(self) -> int:
        return self.agent.activators[ReleaseKind.MODEL].running()


@dataclass
class Fleet:
    ca: ProductCA
    tmp: Path
    signer: Issued
    repo: ReleaseRepository
    server: RepositoryServer
    port: int
    fetches: list[Fetch] = field(default_factory=list)
    gateways: dict[str, FleetGateway] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def trust(self) -> ModelTrust:
        crl = x509.load_pem_x509_crl(self.ca.crl_path.read_bytes())
        return ModelTrust((self.ca.root_certificate,), (crl,))

    def bundle_for(self, model: bytes) -> Callable[[int], str]:
        def sign(release: int) -> str:
            return sign_model(
                model,
                artifact="model.onnx",
                signer_cert_pem=self.signer.cert_pem,
                signer_key_pem=self.signer.key_pem,
                chain_pem=self.signer.chain_pem,
                now=datetime.now(UTC),
                release=release,
            ).decode()

        return sign

    def resign(self, release: int, model: bytes) -> str:
        return self.bundle_for(model)(release)

    def publish_model(self, model: bytes, prefix: str, stage: str = "all") -> ReleaseRecord:
        return self.repo.publish(
            ReleaseKind.MODEL, prefix, StageRequest.parse(stage), model,
            fleet=list(self.gateways), sign=self.bundle_for(model),
            reason="test release", actor="tester", targets_signer=self.targets_signer(),
        )  # fmt: skip

    def targets_signer(self) -> CryptoSigner:
        return load_signer(self.tmp / "signer-key.pem")

    def add_gateway(self, identity: str, **settings: object) -> FleetGateway:
        home = self.tmp / "gw" / identity.replace("/", "_")
        creds = self.ca.write_credentials(home / "creds", self.ca.device(identity), identity)
        config = GatewayConfig(
            identity=DeviceIdentity.parse(identity),
            tags=(),
            outbox_path=home / "outbox.sqlite",
            state_dir=home / "state",
        )
        gw = Gateway(config, outbox=Outbox.open(config.outbox_path, OutboxLimits()))
        upd = UpdateSettings(
            url=self.url,
            trusted_root=self.tmp / "trusted-root.json",
            credential_dir=creds,
            state_dir=home / "state" / "release",
            **settings,  # type: ignore[arg-type]
        )
        agent = attach_updates(gw, upd, self.trust(), home / "model.onnx")
        fg = FleetGateway(identity, gw, agent, creds)
        self.gateways[identity] = fg
        return fg

    def stop(self) -> None:
        self.server.stop()
        for g in self.gateways.values():
            g.agent.client.fetcher.close()
            g.gateway.outbox.close()


def start_fleet(
    ca: ProductCA, tmp: Path, identities: Sequence[str] = (), *, expiry: Expiry | None = None
) -> Fleet:
    """A repository with one release signer, served on an ephemeral loopback port."""
    tmp.mkdir(parents=True, exist_ok=True)
    ca.publish_crl()
    signer = ca.signer("release")
    server = ca.server()
    (tmp / "server.pem").write_bytes(server.cert_pem + server.chain_pem)
    (tmp / "server-key.pem").write_bytes(server.key_pem)
    (tmp / "signer-key.pem").write_bytes(signer.key_pem)
    (tmp / "signer-key.pem").chmod(0o600)
    repo = ReleaseRepository.create(
        tmp / "repository",
        root_key_dir=tmp / "offline-root",
        signer_certs=[signer.cert_pem],
        targets_signer=load_signer(tmp / "signer-key.pem"),
        expiry=expiry or Expiry(),
    )
    (tmp / "trusted-root.json").write_bytes(repo.trusted_root())
    fetches: list[Fetch] = []
    tls = ServerTLS(tmp / "server.pem", tmp / "server-key.pem", ca.ca.paths.chain, ca.crl_path)
    srv = RepositoryServer(repo.root, tls, on_fetch=fetches.append)
    port = srv.start()
    fleet = Fleet(ca, tmp, signer, repo, srv, port, fetches)
    for ident in identities:
        fleet.add_gateway(ident)
    return fleet
