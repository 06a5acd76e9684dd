"""The repository's HTTPS server: read-only, device certificates only, no way out of its
directory, nothing served to a gateway outside the artifact's prefix. Spoken to with `curl`
(an independent client) and with the gateway's own client."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from pki.authority import RevocationReason
from pki.identity import ConsumerIdentity
from tests.release.conftest import GW_A, GW_B, LINE1, LINE2
from tests.support.release_fleet import Fleet


def curl(fleet: Fleet, who: Path, path: str, *extra: str) -> int:
    """HTTP status of ``path`` for the client whose cert/key files are in ``who``."""
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(fleet.ca.root_path),
         "--cert", str(who / "cert.pem"), "--key", str(who / "key.pem"), *extra,
         f"{fleet.url}/{path}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return int(done.stdout or 0)


@pytest.fixture
def gw_a(fleet: Fleet) -> Path:
    creds = fleet.gateways[GW_A].creds
    (creds / "cert.pem").write_bytes(
        (creds / "cert.pem").read_bytes() + (creds / "chain.pem").read_bytes()
    )
    return creds


def test_a_gateway_reads_metadata(fleet: Fleet, gw_a: Path) -> None:
    assert curl(fleet, gw_a, "metadata/timestamp.json") == 200
    assert curl(fleet, gw_a, "metadata/1.root.json", "-I") == 200  # HEAD


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_repository_is_read_only_for_gateways(fleet: Fleet, gw_a: Path, method: str) -> None:
    before = (fleet.repo.metadata_dir / "timestamp.json").read_bytes()
    assert curl(fleet, gw_a, "metadata/timestamp.json", "-X", method, "--data", "x") == 405
    assert (fleet.repo.metadata_dir / "timestamp.json").read_bytes() == before
    assert any(f.status == 405 and f.identity == GW_A for f in fleet.fetches)


@pytest.mark.parametrize(
    "path",
    ["keys/online.pem", "metadata/../keys/online.pem", "metadata/%2e%2e/keys/online.pem",
     "history.json", "targets/../history.json", "metadata/", "lock"],
)  # fmt: skip
def test_nothing_outside_metadata_and_targets_is_served(
    fleet: Fleet, gw_a: Path, path: str
) -> None:
    assert curl(fleet, gw_a, path, "--path-as-is") in (403, 404)


def test_an_it_consumer_certificate_is_not_a_gateway(fleet: Fleet, tmp_path: Path) -> None:
    from pki.profiles import ProfileName

    issued = fleet.ca.issue(ConsumerIdentity.parse("acme/it/historian"), ProfileName.CONSUMER)
    (tmp_path / "cert.pem").write_bytes(issued.cert_pem + issued.chain_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    assert curl(fleet, tmp_path, "metadata/timestamp.json") == 403


def test_a_client_without_a_certificate_is_refused_at_the_handshake(fleet: Fleet) -> None:
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
         str(fleet.ca.root_path), f"{fleet.url}/metadata/timestamp.json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and done.stdout in ("", "000")


def test_an_artifact_is_served_only_under_its_prefix(
    fleet: Fleet, gw_a: Path, models: dict[str, bytes]
) -> None:
    mine = fleet.publish_model(models["m-1"], LINE1)
    other = fleet.publish_model(models["m-2"], LINE2)
    assert curl(fleet, gw_a, f"targets/model/{LINE1}/{mine.sha256}.release.all") == 200
    assert curl(fleet, gw_a, f"targets/model/{LINE2}/{other.sha256}.release.all") == 403


def test_a_connection_flood_is_capped_and_a_gateway_gets_through_after_it(
    fleet: Fleet, gw_a: Path
) -> None:
    """An enrolled gateway (or anyone who can reach the port) opens more connections than the
    server serves at once and never speaks TLS: past the cap each is closed at once and
    reported, so the flood holds no threads beyond the cap; when it stops, gateways read as
    before."""
    import socket

    from release.server import MAX_CONNECTIONS

    extra = 8
    flood = [
        socket.create_connection(("127.0.0.1", fleet.port), timeout=20)
        for _ in range(MAX_CONNECTIONS + extra)
    ]
    try:
        # each extra one is closed by the server (a timeout here means it was held open)
        assert [s.recv(1) for s in flood[MAX_CONNECTIONS:]] == [b""] * extra
        assert sum(f.status == 503 for f in fleet.fetches) == extra
    finally:
        for s in flood:
            s.close()
    assert curl(fleet, gw_a, "metadata/timestamp.json") == 200


def _tls_client(fleet: Fleet, who: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(fleet.ca.root_path))
    ctx.load_cert_chain(str(who / "cert.pem"), str(who / "key.pem"))
    return ctx


def _get(conn: http.client.HTTPSConnection, path: str) -> int:
    """Status of ``path`` on a kept-alive connection; 0 when the server closed it instead."""
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
    except (http.client.HTTPException, OSError):
        return 0
    return response.status


def test_a_revoked_gateway_cannot_keep_pulling_over_a_kept_alive_connection(
    fleet: Fleet, gw_a: Path
) -> None:
    """The CRL is checked at the handshake; a gateway revoked after it connected (its key
    stolen) must not go on reading over the same connection."""
    conn = http.client.HTTPSConnection(
        "localhost", fleet.port, context=_tls_client(fleet, gw_a), timeout=30
    )
    try:
        assert _get(conn, "/metadata/timestamp.json") == 200
        serial = x509.load_pem_x509_certificate((gw_a / "cert.pem").read_bytes()).serial_number
        fleet.ca.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=datetime.now(UTC))
        fleet.ca.ca.publish_crl(now=datetime.now(UTC))
        assert _get(conn, "/metadata/timestamp.json") != 200
        assert _get(conn, "/metadata/timestamp.json") != 200  # nor on the connection after
    finally:
        conn.close()
    assert curl(fleet, gw_a, "metadata/timestamp.json") != 200


def test_one_gateway_cannot_take_every_connection_slot(fleet: Fleet, gw_a: Path) -> None:
    """A gateway in an attacker's hands (valid key) opens as many TLS connections as the
    server serves and keeps them: another gateway must still get through (a rollback must
    reach the fleet), and the hoarder's extra connections are refused and recorded."""
    from release.server import MAX_CONNECTIONS, MAX_PER_DEVICE

    ctx = _tls_client(fleet, gw_a)
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            raw = socket.create_connection(("127.0.0.1", fleet.port), timeout=20)
            held.append(ctx.wrap_socket(raw, server_hostname="localhost"))
        gw_b = fleet.gateways[GW_B].creds
        (gw_b / "cert.pem").write_bytes(
            (gw_b / "cert.pem").read_bytes() + (gw_b / "chain.pem").read_bytes()
        )
        assert curl(fleet, gw_b, "metadata/timestamp.json") == 200
        cut = [f for f in fleet.fetches if f.identity == GW_A and f.status == 503]
        assert len(cut) >= MAX_CONNECTIONS - MAX_PER_DEVICE - 1, fleet.fetches[-5:]
    finally:
        for s in held:
            s.close()


def test_a_directory_of_the_tree_is_answered_not_found_and_recorded(
    fleet: Fleet, gw_a: Path, models: dict[str, bytes]
) -> None:
    fleet.publish_model(models["m-1"], LINE1)
    assert curl(fleet, gw_a, f"targets/model/{LINE1}") == 404
    assert any(f.status == 404 and f.path == f"targets/model/{LINE1}" for f in fleet.fetches)


def test_a_damaged_crl_refuses_every_gateway_with_a_recorded_reason(
    fleet: Fleet, gw_a: Path
) -> None:
    """The CA's CRL file is rewritten with garbage (a torn copy, an attacker on the IDMZ
    disk): fail closed, and each refused connection is recorded, not a stack trace."""
    good = fleet.ca.crl_path.read_bytes()
    fleet.ca.crl_path.write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    try:
        assert curl(fleet, gw_a, "metadata/timestamp.json") != 200
        assert any(f.identity == "" and "CRL" in f.reason.upper() for f in fleet.fetches), (
            fleet.fetches
        )
    finally:
        fleet.ca.crl_path.write_bytes(good)
    assert curl(fleet, gw_a, "metadata/timestamp.json") == 200
