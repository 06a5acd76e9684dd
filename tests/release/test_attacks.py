"""Each attack on the release path is refused by the gateway, recorded in its status (and, for
the repository's own refusals, in the fetch record), and the running version stays in service.
Real HTTPS mTLS server, real TUF client, the repository's files changed as an attacker who
controls the IDMZ host's disk (but not the keys) would change them."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from bedrock.clock import FixedClock
from pki.authority import RevocationReason
from policies.release import ReleaseKind, StageRequest
from release.errors import ReleaseRefusedError
from release.keys import load_signer
from release.repository import ReleaseRepository
from tests.release.conftest import GW_A, GW_B, GW_C, LINE1, LINE2
from tests.support.release_fleet import Fleet, FleetGateway


@pytest.fixture
def running(fleet: Fleet, models: dict[str, bytes]) -> Fleet:
    """Every line-1 gateway runs m-1 (release 1) from the repository."""
    fleet.publish_model(models["m-1"], LINE1)
    for gw in (GW_A, GW_B):
        fleet.gateways[gw].check()
        assert fleet.gateways[gw].model_version == "m-1"
    return fleet


def refused(gw: FleetGateway, *words: str) -> None:
    results = gw.check()
    bad = [r for r in results if r.result == "refused"]
    assert bad, results
    for w in words:
        assert w in bad[0].reason, bad[0].reason
    assert gw.model_version == "m-1" and gw.model_release == 1  # untouched
    last = gw.gateway.status()["release"]["last"]  # type: ignore[index]
    assert last[-1]["result"] == "refused"


def md(repo: ReleaseRepository) -> Path:
    return repo.metadata_dir


def blob(repo: ReleaseRepository, sha: str) -> Path:
    return next(repo.targets_dir.rglob(f"{sha}.release.all"))


def resign_chain(repo: ReleaseRepository, targets: Metadata[Targets], signer: CryptoSigner) -> None:
    """Write ``targets`` (signed by ``signer``) and a snapshot and timestamp that point at it,
    signed with the repository's real online key: only the targets key is wrong."""
    online = load_signer(repo.online_key_path)
    ts = Metadata[Timestamp].from_file(str(md(repo) / "timestamp.json"))
    snap = Metadata[Snapshot].from_file(
        str(md(repo) / f"{ts.signed.snapshot_meta.version}.snapshot.json")
    )
    targets.signed.version += 1
    targets.signatures.clear()
    targets.sign(signer)
    snap.signed.version += 1
    snap.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    snap.signatures.clear()
    snap.sign(online)
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile(snap.signed.version)
    ts.signatures.clear()
    ts.sign(online)
    ser = JSONSerializer(compact=False)
    (md(repo) / f"{targets.signed.version}.targets.json").write_bytes(targets.to_bytes(ser))
    (md(repo) / f"{snap.signed.version}.snapshot.json").write_bytes(snap.to_bytes(ser))
    (md(repo) / "timestamp.json").write_bytes(ts.to_bytes(ser))


def test_tampered_artifact_is_refused(running: Fleet, models: dict[str, bytes]) -> None:
    rec = running.publish_model(models["m-2"], LINE1)
    path = blob(running.repo, rec.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    refused(running.gateways[GW_A], "LengthOrHashMismatch")


def test_artifact_larger_than_declared_is_refused(running: Fleet, models: dict[str, bytes]) -> None:
    rec = running.publish_model(models["m-2"], LINE1)
    path = blob(running.repo, rec.sha256)
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    refused(running.gateways[GW_A], "DownloadLengthMismatch")


def test_tampered_metadata_is_refused(running: Fleet, models: dict[str, bytes]) -> None:
    running.publish_model(models["m-2"], LINE1, "canary:1")
    ts = json.loads((md(running.repo) / "timestamp.json").read_bytes())
    snap_v = ts["signed"]["meta"]["snapshot.json"]["version"]
    snap = json.loads((md(running.repo) / f"{snap_v}.snapshot.json").read_bytes())
    tv = snap["signed"]["meta"]["targets.json"]["version"]
    tpath = md(running.repo) / f"{tv}.targets.json"
    doc = json.loads(tpath.read_bytes())
    for info in doc["signed"]["targets"].values():
        info["custom"]["idmz"]["canary"] = [GW_B]  # give the canary to another gateway
    tpath.write_text(json.dumps(doc))
    refused(running.gateways[GW_B], "UnsignedMetadata")


def test_replayed_timestamp_is_refused_freeze_attack(
    running: Fleet, models: dict[str, bytes]
) -> None:
    old = (md(running.repo) / "timestamp.json").read_bytes()
    running.publish_model(models["m-2"], LINE1, "canary:1")  # GW_B must keep m-1 ...
    running.gateways[GW_B].check()  # ... and has now seen the newer timestamp
    running.repo.rollback(
        ReleaseKind.MODEL, LINE1, sign=running.resign,
        reason="x", actor="t", targets_signer=running.targets_signer(),
    )  # fmt: skip
    (md(running.repo) / "timestamp.json").write_bytes(old)  # freeze GW_B at the old state
    refused(running.gateways[GW_B], "BadVersionNumber")


def test_older_metadata_offered_again_is_refused_rollback_attack(
    running: Fleet, models: dict[str, bytes]
) -> None:
    snapshot_of_repo = running.tmp / "old-metadata"
    shutil.copytree(md(running.repo), snapshot_of_repo)
    running.publish_model(models["m-2"], LINE1)
    running.publish_model(models["m-3"], LINE1)
    gw = running.gateways[GW_A]
    gw.check()
    assert gw.model_version == "m-3"
    shutil.rmtree(md(running.repo))
    shutil.copytree(snapshot_of_repo, md(running.repo))  # the whole older, validly signed set
    results = gw.check()
    assert [r.result for r in results] == ["refused"]
    assert "BadVersionNumber" in results[0].reason
    assert gw.model_version == "m-3"


def test_a_model_signed_for_an_older_release_is_refused(
    running: Fleet, models: dict[str, bytes]
) -> None:
    old_bundle = running.bundle_for(models["m-2"])(1)
    running.repo.publish(
        ReleaseKind.MODEL, LINE1, StageRequest.parse("all"),
        models["m-2"], fleet=[], sign=lambda _: old_bundle, reason="x", actor="t",
        targets_signer=running.targets_signer(),
    )  # fmt: skip
    refused(running.gateways[GW_A], "signature is for release 1")


def test_a_target_for_another_line_is_neither_taken_nor_served(
    running: Fleet, models: dict[str, bytes]
) -> None:
    rec = running.publish_model(models["m-2"], LINE2)
    gw = running.gateways[GW_A]
    assert [r.result for r in gw.check()] == ["current", "current"]
    assert gw.model_version == "m-1"
    # Asking the server for line 2's artifact directly, with line 1's certificate: 403.
    client = gw.agent.client.fetcher.client()
    rel = f"targets/model/{LINE2}/{rec.sha256}.release.all"
    assert client.get(f"{running.url}/{rel}").status_code == 403
    assert any(f.identity == GW_A and f.status == 403 and f.path == rel for f in running.fetches)
    assert running.gateways[GW_C].check()[0].result == "activated"


def test_expired_timestamp_is_refused(running: Fleet, models: dict[str, bytes]) -> None:
    running.publish_model(models["m-2"], LINE1)
    running.repo.clock = FixedClock(datetime.now(UTC) - timedelta(days=2))
    running.repo.renew_online(force=True)  # signed two days ago, valid for one
    refused(running.gateways[GW_A], "ExpiredMetadata")


def test_metadata_signed_by_a_wrong_key_is_refused(running: Fleet) -> None:
    targets = Metadata[Targets].from_file(str(sorted(md(running.repo).glob("*.targets.json"))[-1]))
    resign_chain(running.repo, targets, CryptoSigner(ec.generate_private_key(ec.SECP256R1())))
    refused(running.gateways[GW_A], "UnsignedMetadata")


def test_metadata_signed_by_a_revoked_release_signer_is_refused(
    running: Fleet, models: dict[str, bytes]
) -> None:
    new_signer = running.ca.signer("release-2")
    old_key = running.targets_signer()
    running.repo.set_signers(
        [new_signer.cert_pem], root_key=running.tmp / "offline-root" / "root-key.pem"
    )
    with pytest.raises(ReleaseRefusedError, match="not one of the repository's release signers"):
        running.repo.publish(
            ReleaseKind.MODEL, LINE1, StageRequest.parse("all"), models["m-2"], fleet=[],
            sign=running.bundle_for(models["m-2"]),
            reason="x", actor="t", targets_signer=old_key,
        )  # fmt: skip
    targets = Metadata[Targets].from_file(str(sorted(md(running.repo).glob("*.targets.json"))[-1]))
    resign_chain(running.repo, targets, old_key)
    refused(running.gateways[GW_A], "UnsignedMetadata")


def test_revoked_gateway_certificate_is_refused_at_the_repository(
    running: Fleet, models: dict[str, bytes]
) -> None:
    gw = running.gateways[GW_B]
    cert = gw.creds / "cert.pem"
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    running.ca.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=datetime.now(UTC))
    running.ca.ca.publish_crl(now=datetime.now(UTC))
    running.publish_model(models["m-2"], LINE1)
    # Its kept-alive connection is closed when the CRL changes (503, "reconnect"); the
    # next connection is refused at the handshake.
    for _ in range(2):
        assert [r.result for r in gw.check()] == ["failed"]
    assert gw.model_version == "m-1"
    # The server records the refusal in its own thread, possibly after the client saw the alert.
    deadline = time.monotonic() + 30
    while not any(f.identity == "" and "revoked" in f.reason for f in running.fetches):
        assert time.monotonic() < deadline, running.fetches
        time.sleep(0.01)
    # The others still pull: one whose connection spanned the CRL change reconnects first.
    other = running.gateways[GW_A]
    first = other.check()[0].result
    assert first == "activated" or (first == "failed" and other.check()[0].result == "activated")
