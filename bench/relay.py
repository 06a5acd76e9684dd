"""Relay throughput and added latency against Mosquitto's own bridge, in the same run.

    .venv/bin/python bench/relay.py [--messages 20000] [--workers 2] [--latency-seconds 10]

Same machine, same Mosquitto binary, the same rendered broker configurations (TLS 1.2+ with
client certificates on both brokers, ACLs from the example policy), QoS 1 end to end:

1. bridge: the OT broker carries a stock `connection` bridge (``topic acme/# out 1``) to the IT
   broker over mutual TLS; no relay. Brokers log at their normal level.
2. relay, 1 worker, then relay, N workers: the appliance with every check on (identity, policy,
   rate limiter, strict JSON, JSON Schema, envelope), per-batch audit records fsynced before the
   OT ack, provenance user properties, and its brokers at debug log level (the product default,
   so ACL refusals are audited). The example policy's rate limits (20 msg/s per device) would
   refuse a benchmark's load, so the bench policy raises them; the limiter still runs.
3. latency: 1,000 msg/s for ``--latency-seconds`` through the relay (N workers); latency is
   gateway publish -> IT consumer receipt (both broker hops included, so it over-states what
   the relay adds) and the same is measured through the bridge as the reference.

Load: 4 gateway processes (paho, MQTT 5, QoS 1, 1,000 in flight each), one consumer process on
the IT broker. The machine is shared: read ratios, not absolute numbers. Last line:

    RESULT relay msgs_per_s=... bridge_msgs_per_s=... ratio=... p50_ms=... p99_ms=... per_worker_msgs_per_s=...
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import multiprocessing as mp
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from audit.log import AuditLog  # noqa: E402
from pki.csr import verify_csr  # noqa: E402
from pki.identity import ConsumerIdentity, DeviceIdentity  # noqa: E402
from pki.keys import KeyPolicy, generate_private_key, private_key_pem  # noqa: E402
from pki.local import LocalCA, init_local_ca  # noqa: E402
from pki.profiles import ProfileName, ServerName  # noqa: E402
from policies import load_policy  # noqa: E402
from relay.appliance import Appliance  # noqa: E402
from relay.brokers import MosquittoProcess, registry_from_ledger, render_files  # noqa: E402
from relay.config import (  # noqa: E402
    ApplianceConfig,
    BrokerEndpoint,
    ManagedBroker,
    RelayLimits,
    TLSFiles,
    WorkerConfig,
)

PASS = b"bench-passphrase"
DEVICES = [f"acme/plant1/stamping/line1/cell1/press-{i:02d}" for i in range(4)]
RELAY_ID, CONSUMER = "acme/it/idmz-relay", "acme/it/historian"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _issue(
    ca: LocalCA, out: Path, name: str, subject: Any, profile: ProfileName, cn: str
) -> tuple[Path, Path]:
    key = generate_private_key("ec-p256")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )  # type: ignore[arg-type]
    issued = ca.issue(
        verify_csr(csr.public_bytes(serialization.Encoding.PEM), KeyPolicy()),
        subject,
        profile=profile,
        now=datetime.now(UTC),
    )
    d = out / name.replace("/", "_")
    d.mkdir(parents=True)
    (d / "cert.pem").write_bytes(issued.leaf_pem())
    (d / "key.pem").write_bytes(private_key_pem(key, None))
    return d / "cert.pem", d / "key.pem"


def _tls(cafile: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# -- load generators (separate processes) -------------------------------------------------


def _publisher(port: int, cafile: Path, cred: tuple[Path, Path], device: str, count: int,
               rate: float | None, ready: Any, go: Any, done: Any) -> None:  # fmt: skip
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{device}-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.tls_set_context(_tls(cafile, *cred))
    client.max_inflight_messages_set(1000)
    acked = [0]
    client.on_publish = lambda *_a: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    ready.put(device)
    go.wait()
    name = f"{device.rsplit('/', 1)[1]}-{time.monotonic_ns()}"  # fresh ids: no dedup hits
    start = time.monotonic()
    for i in range(count):
        msg_id = f"{name}-{i}"
        body = json.dumps({"v": 1, "id": msg_id, "ts": "2026-11-22T10:00:00.000Z", "device": device,
                           "kind": "telemetry", "data": {"t": time.time(), "tags": []}},
                          separators=(",", ":"))  # fmt: skip
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("idmz-msg-id", msg_id)]
        client.publish(f"{device}/telemetry", body, qos=1, properties=props)
        if rate:
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elif i - acked[0] > 2000:  # keep the client's queue bounded
            while i - acked[0] > 1000:
                time.sleep(0.001)
    while acked[0] < count:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    done.put(device)


def _consumer(
    port: int, cafile: Path, cred: tuple[Path, Path], expected: int, result: Any, ready: Any
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-consumer-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.tls_set_context(_tls(cafile, *cred))
    seen: set[bytes] = set()
    lat: list[float] = []
    times = {"first": 0.0, "last": 0.0}

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        if msg.payload in seen:
            return
        seen.add(msg.payload)
        if not times["first"]:
            times["first"] = now
        times["last"] = now
        with contextlib.suppress(ValueError, KeyError):
            lat.append(now - json.loads(msg.payload)["data"]["t"])

    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.put("consumer")
    client.on_connect = lambda c, *_a: c.subscribe("acme/#", qos=1)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    last_progress, last_count = time.monotonic(), 0
    while len(seen) < expected and time.monotonic() - last_progress < 30:  # stalled: give up
        time.sleep(0.02)
        if len(seen) != last_count:
            last_progress, last_count = time.monotonic(), len(seen)
    client.disconnect()
    client.loop_stop()
    result.put({"count": len(seen), "first": times["first"], "last": times["last"], "lat": lat})


def run_load(ot_port: int, it_port: int, creds: dict[str, tuple[Path, Path]], cafile: Path,
             per_device: int, rate_per_device: float | None) -> dict[str, Any]:  # fmt: skip
    ctx = mp.get_context("spawn")
    ready, done, result, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    expected = per_device * len(DEVICES)
    consumer = ctx.Process(
        target=_consumer, args=(it_port, cafile, creds[CONSUMER], expected, result, ready)
    )
    consumer.start()
    pubs = [
        ctx.Process(
            target=_publisher,
            args=(ot_port, cafile, creds[d], d, per_device, rate_per_device, ready, go, done),
        )
        for d in DEVICES
    ]
    for p in pubs:
        p.start()
    for _ in range(len(pubs) + 1):
        ready.get(timeout=120)
    time.sleep(0.5)  # subscriptions settle (SUBACK seen; bridge/relay already connected)
    t0 = time.time()
    go.set()
    out = result.get(timeout=900)
    for p in pubs:
        p.join(timeout=60)
    consumer.join(timeout=60)
    out["t0"] = t0
    out["expected"] = expected
    return out


# -- setups --------------------------------------------------------------------------------


def bench_policy() -> str:
    text = (REPO / "deploy" / "policy" / "plant.toml").read_text()
    return text.replace(
        "max_messages_per_s = 20\nburst = 100", "max_messages_per_s = 1000000\nburst = 1000000"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=20000, help="messages per throughput phase")
    ap.add_argument("--workers", type=int, default=2, help="N for the multi-worker phase")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--no-broker-denial-audit", action="store_true",
                    help="relay brokers at normal log level (no audit of broker ACL refusals)")  # fmt: skip
    ap.add_argument("--sparkplug-profile", action="store_true",
                    help="only the Sparkplug B profile against the JSON one (bench/relay_sparkplug.py)")  # fmt: skip
    args = ap.parse_args()
    if args.sparkplug_profile:  # ADR 0110: its own module, so the load generation here stays apart
        import relay_sparkplug  # bench/ is on sys.path when this file runs

        return relay_sparkplug.main(["--messages", str(args.messages)])
    if shutil.which("mosquitto") is None:
        print("mosquitto not found", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="idmz-bench-relay-"))
    init_local_ca(
        tmp / "ca",
        passphrase=PASS,
        organization="acme",
        now=datetime.now(UTC) - timedelta(minutes=5),
    )
    ca = LocalCA.open(tmp / "ca", passphrase=PASS)
    creds: dict[str, tuple[Path, Path]] = {}
    for d in DEVICES:
        creds[d] = _issue(ca, tmp / "creds", d, DeviceIdentity.parse(d), ProfileName.DEVICE, d)
    for c in (RELAY_ID, CONSUMER):
        creds[c] = _issue(ca, tmp / "creds", c, ConsumerIdentity.parse(c), ProfileName.CONSUMER, c)
    server = _issue(ca, tmp / "creds", "server", ServerName(("localhost",), (ipaddress.ip_address("127.0.0.1"),)),
                    ProfileName.SERVER, "localhost")  # fmt: skip
    cafile = tmp / "ca" / "chain.pem"
    policy_text = bench_policy()
    policy = load_policy(policy_text, source="bench")
    per_device = args.messages // len(DEVICES)
    results: dict[str, float] = {}

    def managed(port: int) -> ManagedBroker:
        return ManagedBroker("127.0.0.1", port, cafile, *server)

    # 1. Mosquitto bridge between the two brokers.
    ot_port, it_port = _free_port(), _free_port()
    bdir = tmp / "bridge"
    registry = registry_from_ledger(ca.ledger.entries(), frozenset())
    files, _, _ = render_files(policy, registry, ot=managed(ot_port), it=managed(it_port),
                               crl_path=tmp / "ca" / "crl.pem", directory=bdir, audit_denials=False,
                               run_as_user="root")  # fmt: skip
    relay_cert, relay_key = creds[RELAY_ID]
    with files.ot_config.open("a") as fh:
        fh.write(
            "\nconnection idmz-bridge\n"
            f"address 127.0.0.1:{it_port}\n"
            "topic acme/# out 1\n"
            "bridge_protocol_version mqttv311\n"
            "cleansession false\n"
            "remote_clientid idmz-bridge\n"
            f"bridge_cafile {cafile}\nbridge_certfile {relay_cert}\nbridge_keyfile {relay_key}\n"
            "bridge_insecure false\n"
            "notifications false\n"  # the IT ACL rightly refuses $SYS notification writes
        )
    it_proc = MosquittoProcess("it", files.it_config, "127.0.0.1", it_port, "mosquitto")
    it_proc.start()
    ot_proc = MosquittoProcess("ot", files.ot_config, "127.0.0.1", ot_port, "mosquitto")
    ot_proc.start()
    time.sleep(1.0)  # the bridge connects
    try:
        r = run_load(ot_port, it_port, creds, cafile, per_device, None)
        if r["count"] < r["expected"]:
            raise SystemExit(f"bridge delivered {r['count']}/{r['expected']}; see {bdir}")
        results["bridge"] = r["count"] / (r["last"] - r["t0"])
        print(
            f"bridge: {r['count']}/{r['expected']} in {r['last'] - r['t0']:.2f}s = {results['bridge']:.0f} msg/s",
            flush=True,
        )
        lat_rate = 1000.0 / len(DEVICES)
        n_lat = int(args.latency_seconds * lat_rate)
        r = run_load(ot_port, it_port, creds, cafile, n_lat, lat_rate)
        lat = sorted(r["lat"])
        results["bridge_p50"] = statistics.median(lat) * 1000
        results["bridge_p99"] = lat[int(len(lat) * 0.99) - 1] * 1000
        print(
            f"bridge latency at 1000 msg/s: p50 {results['bridge_p50']:.2f} ms, p99 {results['bridge_p99']:.2f} ms",
            flush=True,
        )
    finally:
        ot_proc.stop()
        it_proc.stop()

    # 2. The relay appliance with 1 and N workers; 3. latency through N workers.
    def relay_phase(workers: int, latency: bool) -> None:
        home = tmp / f"relay-{workers}"
        ot_p, it_p = _free_port(), _free_port()
        tls = TLSFiles(cafile, relay_cert, relay_key)
        wc = WorkerConfig(
            ot=BrokerEndpoint("127.0.0.1", ot_p, tls), it=BrokerEndpoint("127.0.0.1", it_p, tls),
            policy_text=policy_text, policy_source="bench", state_dir=home / "relay",
            audit_dir=home / "audit", audit_origin="bench/idmz-audit",
            crl_path=tmp / "ca" / "crl.pem", issuing_ca_path=tmp / "ca" / "issuing.pem",
            ledger_path=tmp / "ca" / "ledger.sqlite", limits=RelayLimits(),
        )  # fmt: skip
        cfg = ApplianceConfig(worker=wc, workers=workers, managed_ot=managed(ot_p), managed_it=managed(it_p),
                              broker_dir=home / "brokers", health_port=_free_port(),
                              audit_broker_denials=not args.no_broker_denial_audit)  # fmt: skip
        audit = AuditLog.open(home / "audit", origin="bench/idmz-audit")
        app = Appliance(cfg, audit=audit)
        app.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                snaps = app.snapshots()
                if len(snaps) >= workers and all(
                    s.get("ot_connected") and s.get("it_connected") for s in snaps.values()
                ):
                    break
                time.sleep(0.1)
            pids = [p for p in app.worker_pids() if p is not None]
            cpu0 = sum(_cpu_seconds(p) for p in pids)
            r = run_load(ot_p, it_p, creds, cafile, per_device, None)
            if r["count"] < r["expected"]:
                raise SystemExit(f"relay delivered {r['count']}/{r['expected']}")
            cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
            rate = r["count"] / (r["last"] - r["t0"])
            results[f"relay{workers}"] = rate
            results[f"cpu_us{workers}"] = cpu / r["count"] * 1e6
            print(
                f"relay, {workers} worker(s): {r['count']}/{r['expected']} in {r['last'] - r['t0']:.2f}s = {rate:.0f} msg/s; "
                f"worker CPU {results[f'cpu_us{workers}']:.0f} us/msg "
                f"(a worker with a core to itself: ~{1e6 / results[f'cpu_us{workers}']:.0f} msg/s)",
                flush=True,
            )
            if latency:
                lat_rate = 1000.0 / len(DEVICES)
                r = run_load(
                    ot_p, it_p, creds, cafile, int(args.latency_seconds * lat_rate), lat_rate
                )
                lat = sorted(r["lat"])
                results["p50"] = statistics.median(lat) * 1000
                results["p99"] = lat[int(len(lat) * 0.99) - 1] * 1000
                print(
                    f"relay latency at 1000 msg/s ({workers} workers): p50 {results['p50']:.2f} ms, p99 {results['p99']:.2f} ms",
                    flush=True,
                )
        finally:
            app.stop()
            audit.close()

    relay_phase(1, latency=False)
    relay_phase(args.workers, latency=True)
    ca.close()
    best = max(results["relay1"], results[f"relay{args.workers}"])
    print(
        f"RESULT relay msgs_per_s={best:.0f} bridge_msgs_per_s={results['bridge']:.0f} "
        f"ratio={best / results['bridge']:.2f} p50_ms={results['p50']:.2f} p99_ms={results['p99']:.2f} "
        f"per_worker_msgs_per_s={results['relay1']:.0f} "
        f"worker_cpu_us_per_msg={results['cpu_us1']:.0f} "
        f"per_worker_core_msgs_per_s={1e6 / results['cpu_us1']:.0f}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0  # on failure tmp is kept for its broker logs


if __name__ == "__main__":
    sys.exit(main())
