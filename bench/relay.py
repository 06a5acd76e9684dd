"""Relay against Mosquitto's own bridge, with C load generators, in the same run.

    .venv/bin/python bench/relay.py [--quick] [--drain-only] [--messages 50000] [--workers 1,2]
                                    [--rates 500,1000,2000] [--latency-seconds 6]

Every phase runs between two fresh Mosquitto brokers rendered by the same code with the same
arguments (TLS 1.2+ with client certificates, the idmz broker plugin, the bound-id listeners,
ACLs from the example policy with the rate limits raised so a benchmark is not refused). The
only difference: for the bridge, the OT broker's config gets a stock ``connection`` block
(``topic acme/# out 1``, mutual TLS to the IT broker, persistent session); for the relay, N
worker processes (every check on, per-batch audit fsynced before anything is forwarded,
provenance properties) connect to both bound-id listeners. The load is C: ``mosquitto_pub -l``
(one process per gateway certificate, QoS 1) and ``mosquitto_sub -C`` (the historian's
persistent session, QoS 1, receipt times printed by mosquitto_sub itself), so the reference is
the broker, not a Python client.

Phases, for the bridge and for the relay with each worker count:

(a) drain: the forwarder is stopped (SIGSTOP: the relay's workers; for the bridge the IT
    broker, so the bridge's session is what queues) while the gateways queue ``--messages`` in
    the OT broker; then it continues. Rate = messages / (last receipt - first receipt).
(b) live: the gateways publish ``--messages`` as fast as the OT broker takes them while the
    forwarder runs. Rate as above.
(c) latency at fixed rates (``--rates``, total over the gateways) while a process burns a CPU:
    gateway stdin line -> historian receipt, both broker hops included (the bridge's figure is
    the reference: what the relay adds is the difference).

Where the CPU goes (bench/relay_cpu.py, ADR 0129): over the drain and the live phase, user +
system time from /proc of every process in it, by role: OT broker, IT broker, workers, the
historian's mosquitto_sub, the gateways' mosquitto_pub (live only: in the drain they published
before the window). Per phase a line gives the cores those processes kept busy (out of
``os.cpu_count()``), the whole machine's busy cores (other load included) and CPU microseconds
per message per role. ``cpu_us_w<N>`` is the workers' (the OT broker's for the bridge: it runs
the bridge). ``predicted_ratio_w<N>`` = bridge CPU per message / relay CPU per message, all
processes summed: the drain ratio to expect when both saturate the same cores.
``manycore_ratio_w<N>``: the same for the busiest single process of each (every process with a
core of its own, i.e. more cores). The machine may be shared: read ratios and CPU, not absolute
rates, and compare ``*_cores_busy`` with ``*_machine_busy``. ``--drain-only`` runs the drain
phase alone (for before/after CPU comparisons). The last line (one per profile):

    RESULT relay profile=... drain_ratio_w1=... live_ratio_w1=... cpu_us_w1=... p50_ms_1000_w1=...
           ... spb_inspect_us=... json50_inspect_us=... spb_ratio=... machine_cores=...
           bridge_cores_busy=... bridge_machine_busy=... bridge_total_us=... broker_us_bridge=...
           bridge_live_cores_busy=... bridge_live_total_us=... relay_cores_busy_w1=...
           relay_machine_busy_w1=... total_us_w1=... broker_us_w1=... predicted_ratio_w1=...
           manycore_ratio_w1=... relay_live_cores_busy_w1=... predicted_live_ratio_w1=... ...

The Sparkplug B profile rides along in every run (bench/relay_sparkplug.py): the relay's
inspection CPU per message for NDATA with 50 metrics against a 50-tag JSON envelope.

A profile is a payload generator and a name (bench/relay_profiles/): another load (Sparkplug)
registers itself there from its own module and is run with ``--profiles``.
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from relay_cpu import Meter, Usage, exited, manycore_ratio, predicted_ratio  # noqa: E402
from relay_profiles import ENVELOPE, PROFILES, Profile  # noqa: E402

from audit.log import AuditLog  # noqa: E402
from pki.ceremony import init_local_ca  # noqa: E402
from pki.csr import verify_csr  # noqa: E402
from pki.identity import ConsumerIdentity, DeviceIdentity  # noqa: E402
from pki.keys import KeyPolicy, generate_private_key, private_key_pem  # noqa: E402
from pki.local import LocalCA  # noqa: E402
from pki.profiles import ProfileName, ServerName  # noqa: E402
from policies import load_policy  # noqa: E402
from relay.appliance import run_worker_process  # noqa: E402
from relay.brokers import MosquittoProcess, free_port, registry_from_ledger, render_files  # noqa: E402
from relay.config import BrokerEndpoint, ManagedBroker, RelayLimits, TLSFiles, WorkerConfig  # noqa: E402
from relay.revoke_plugin import build_plugin  # noqa: E402
from relay.share_secret import ensure_share_secret  # noqa: E402

PASS = b"bench-passphrase"
DEVICES = [f"acme/plant1/stamping/line1/cell1/press-{i:02d}" for i in range(4)]
RELAY_ID, CONSUMER = "acme/it/idmz-relay", "acme/it/historian"
PROBE_TOPIC = "acme/plant1/+/+/+/+/status"  # readiness probes; never counted


# -- the CA, the credentials, the brokers ----------------------------------------------------


def _issue(
    ca: LocalCA, out: Path, subject: Any, profile: ProfileName, cn: str
) -> tuple[Path, Path]:
    key = generate_private_key("ec-p256")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    issued = ca.issue(
        verify_csr(csr.public_bytes(serialization.Encoding.PEM), KeyPolicy()),
        subject,
        profile=profile,
        now=datetime.now(UTC),
    )
    d = out / cn.replace("/", "_")
    d.mkdir(parents=True)
    (d / "cert.pem").write_bytes(issued.leaf_pem())
    (d / "key.pem").write_bytes(private_key_pem(key, None))
    return d / "cert.pem", d / "key.pem"


def bench_policy(text: str) -> str:
    """The example policy with every rate limit out of a benchmark's way (the limiter runs)."""
    return re.sub(
        r"max_messages_per_s = \d+\nburst = \d+",
        "max_messages_per_s = 1000000\nburst = 1000000",
        text,
    )


@dataclass
class Setup:
    tmp: Path
    ca: LocalCA
    creds: dict[str, tuple[Path, Path]]
    server: tuple[Path, Path]
    policy_text: str
    plugin: Path

    @property
    def cafile(self) -> Path:
        return self.tmp / "ca" / "chain.pem"

    def tls_args(self, who: str) -> list[str]:
        cert, key = self.creds[who]
        return ["--cafile", str(self.cafile), "--cert", str(cert), "--key", str(key)]


def make_setup(tmp: Path, profile: Profile) -> Setup:
    init_local_ca(
        tmp / "ca",
        passphrase=PASS,
        organization="acme",
        now=datetime.now(UTC) - timedelta(minutes=5),
    )
    ca = LocalCA.open(tmp / "ca", passphrase=PASS)
    creds = {
        d: _issue(ca, tmp / "creds", DeviceIdentity.parse(d), ProfileName.DEVICE, d)
        for d in DEVICES
    }
    for c in (RELAY_ID, CONSUMER):
        creds[c] = _issue(ca, tmp / "creds", ConsumerIdentity.parse(c), ProfileName.CONSUMER, c)
    server = _issue(ca, tmp / "creds", ServerName(("localhost",), (ipaddress.ip_address("127.0.0.1"),)),
                    ProfileName.SERVER, "localhost")  # fmt: skip
    text = profile.policy(bench_policy((REPO / "deploy" / "policy" / "plant.toml").read_text()))
    return Setup(tmp, ca, creds, server, text, build_plugin())


@dataclass
class Brokers:
    ot: MosquittoProcess
    it: MosquittoProcess
    ot_port: int
    it_port: int
    ot_bound: int
    it_bound: int

    def stop(self) -> None:
        for b in (self.ot, self.it):
            if b.pid is not None:
                os.kill(b.pid, signal.SIGCONT)
            b.stop()


def start_brokers(s: Setup, directory: Path, *, bridge: bool) -> Brokers:
    """Both brokers, rendered exactly as the appliance renders them; ``bridge``: the OT broker
    also carries Mosquitto's bridge to the IT broker's main listener."""
    ports = [free_port("127.0.0.1") for _ in range(4)]

    def managed(port: int, bound: int) -> ManagedBroker:
        return ManagedBroker("127.0.0.1", port, s.cafile, *s.server, bound_port=bound)

    policy = load_policy(s.policy_text, source="bench")
    files, _, _ = render_files(
        policy, registry_from_ledger(s.ca.ledger.entries(), frozenset()),
        ot=managed(ports[0], ports[2]), it=managed(ports[1], ports[3]),
        crl_path=s.tmp / "ca" / "crl.pem", directory=directory, audit_denials=True,
        run_as_user="root" if os.geteuid() == 0 else None,
        policy_document=("bench", s.policy_text), revoke_plugin=s.plugin,
    )  # fmt: skip
    if bridge:
        cert, key = s.creds[RELAY_ID]
        with files.ot_config.open("a") as fh:
            fh.write(
                "\nconnection idmz-bridge\n"
                f"address 127.0.0.1:{ports[1]}\n"
                "topic acme/# out 1\n"
                "bridge_protocol_version mqttv311\n"
                "cleansession false\n"
                f"remote_clientid {RELAY_ID}\n"
                f"bridge_cafile {s.cafile}\nbridge_certfile {cert}\nbridge_keyfile {key}\n"
                "bridge_insecure false\n"
                "restart_timeout 1\n"
                "notifications false\n"  # the IT ACL rightly refuses $SYS notification writes
            )
    it = MosquittoProcess("it", files.it_config, "127.0.0.1", ports[1], "mosquitto")
    it.start()
    ot = MosquittoProcess("ot", files.ot_config, "127.0.0.1", ports[0], "mosquitto")
    ot.start()
    return Brokers(ot, it, ports[0], ports[1], ports[2], ports[3])


# -- forwarders ------------------------------------------------------------------------------


class Forwarder:
    """What moves messages from OT to IT: the processes to pause, and the role whose CPU per
    message is the forwarder's own (the bridge runs inside the OT broker)."""

    name = ""
    role = ""

    def pause_pids(self) -> list[int]:
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        return []

    def stop(self) -> None:
        """Nothing of its own to stop (the bridge lives in the OT broker)."""

    def signal(self, sig: signal.Signals) -> None:
        for pid in self.pause_pids():
            os.kill(pid, sig)


class Bridge(Forwarder):
    name, role = "bridge", "ot_broker"

    def __init__(self, brokers: Brokers) -> None:
        self.brokers = brokers

    def pause_pids(self) -> list[int]:  # the bridge's session queues while IT does not read
        return [p for p in (self.brokers.it.pid,) if p is not None]


class Relay(Forwarder):
    role = "workers"

    def __init__(self, s: Setup, brokers: Brokers, home: Path, workers: int) -> None:
        self.name = f"relay-w{workers}"
        tls = TLSFiles(s.cafile, *s.creds[RELAY_ID])
        state = home / "relay"
        state.mkdir(parents=True, mode=0o700)
        ensure_share_secret(state / "share-secret")
        AuditLog.open(home / "audit", origin="bench/idmz-audit").close()
        config = WorkerConfig(
            ot=BrokerEndpoint("127.0.0.1", brokers.ot_bound, tls),
            it=BrokerEndpoint("127.0.0.1", brokers.it_bound, tls),
            policy_text=s.policy_text, policy_source="bench", state_dir=state,
            audit_dir=home / "audit", audit_origin="bench/idmz-audit",
            crl_path=s.tmp / "ca" / "crl.pem", issuing_ca_path=s.tmp / "ca" / "issuing.pem",
            ledger_path=s.tmp / "ca" / "ledger.sqlite", limits=RelayLimits(),
            shared_subscription=workers > 1,
        )  # fmt: skip
        ctx = mp.get_context("spawn")
        self.procs = [
            ctx.Process(target=run_worker_process, args=(config, i, "warning", os.getpid()))
            for i in range(workers)
        ]
        for p in self.procs:
            p.start()

    def pause_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    worker_pids = pause_pids

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()


# -- C load generators -----------------------------------------------------------------------


class Run:
    """Message ids unique in the whole run (the dedup window would drop a repeat)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.n = 0

    def lines(self, device: str, count: int, t: float = 0.0) -> bytes:
        tag = device.rsplit("/", 1)[1]
        out = []
        for _ in range(count):
            self.n += 1
            out.append(self.profile.payload(device, f"{tag}-{self.n}", t))
        return b"\n".join(out) + b"\n"


def publisher(s: Setup, port: int, device: str, topic: str, stdin: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), *s.tls_args(device), "-V", "mqttv5",
         "-q", "1", "-M", "1000", "-t", topic, "-l"],
        stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def subscriber(s: Setup, port: int, count: int, out: Path, fmt: str, *, probe: bool = False) -> subprocess.Popen[bytes]:  # fmt: skip
    """The historian's persistent session: messages are queued for it while no run is
    connected, so none is lost between runs. A probe run counts only the status probes."""
    skip = "acme/plant1/+/+/+/+/telemetry" if probe else PROBE_TOPIC
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), *s.tls_args(CONSUMER), "-V", "mqttv5",
         "-q", "1", "-c", "-i", CONSUMER, "-x", "3600", "-t", "acme/plant1/#", "-T", skip,
         "-C", str(count), "-F", fmt],
        stdout=out.open("wb"), stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_flowing(s: Setup, brokers: Brokers, work: Path, timeout_s: float = 60.0) -> None:
    """Probe OT -> IT until one probe arrives: the forwarder is connected and subscribed."""
    sub = subscriber(s, brokers.it_port, 1, work / "probe.out", "%t", probe=True)
    device = DEVICES[0]
    deadline = time.monotonic() + timeout_s
    try:
        while sub.poll() is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"no probe reached IT in {timeout_s:.0f} s; see {work}")
            body = ENVELOPE.payload(device, f"probe-{time.monotonic_ns()}", 0.0)
            body = body.replace(b'"telemetry"', b'"status"')
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(brokers.ot_port), *s.tls_args(device),
                 "-V", "mqttv5", "-q", "1", "-t", f"{device}/status", "-m", body],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            with suppress(subprocess.TimeoutExpired):
                sub.wait(timeout=0.5)
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.wait()


def wait_count(
    sub: subprocess.Popen[bytes],
    out: Path,
    expected: int,
    meter: Meter | None = None,
    stall_s: float = 30.0,
) -> None:
    """Until the subscriber has its ``expected`` messages; ``meter`` reads its CPU as it exits."""
    size, moved = -1, time.monotonic()
    while not exited(sub):
        now_size = out.stat().st_size
        if now_size != size:
            size, moved = now_size, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            sub.kill()
            got = len(out.read_bytes().splitlines())
            raise SystemExit(f"stalled at {got}/{expected} messages; see {out.parent}")
        time.sleep(0.05)
    if meter is not None:
        meter.child_done(sub)
    sub.wait()


def receipt_span(out: Path) -> tuple[int, float]:
    times = [float(line.split()[0]) for line in out.read_bytes().splitlines() if line]
    return len(times), max(times) - min(times)


# -- phases ----------------------------------------------------------------------------------


@dataclass
class Figures:
    drain: float = 0.0
    live: float = 0.0
    cpu_us: float = 0.0
    live_cpu_us: float = 0.0
    latency: dict[int, tuple[float, float]] = field(default_factory=dict)
    drain_use: Usage | None = None
    live_use: Usage | None = None


def meter(b: Brokers, f: Forwarder, sub: subprocess.Popen[bytes]) -> Meter:
    """Every process of a phase by role; publishers join as they start."""
    pids = {"ot_broker": [b.ot.pid], "it_broker": [b.it.pid], "workers": f.worker_pids(),
            "subscriber": [sub.pid]}  # fmt: skip
    return Meter({role: [p for p in ps if p is not None] for role, ps in pids.items()})


def drain_phase(s: Setup, run: Run, b: Brokers, f: Forwarder, n: int, work: Path) -> tuple[float, Usage]:  # fmt: skip
    out = work / f"{f.name}-drain.out"
    sub = subscriber(s, b.it_port, n, out, "%U")
    time.sleep(0.3)  # connected (and if not yet: its session queues)
    f.signal(signal.SIGSTOP)
    try:
        pubs = []
        for d in DEVICES:
            src = work / f"{f.name}-{d.rsplit('/', 1)[1]}.lines"
            src.write_bytes(run.lines(d, n // len(DEVICES)))
            with src.open("rb") as fh:
                pubs.append(publisher(s, b.ot_port, d, run.profile.topic(d), fh))
        for p in pubs:
            if p.wait(timeout=300) != 0:
                raise SystemExit(
                    f"mosquitto_pub failed: {p.stderr.read().decode() if p.stderr else ''}"
                )
    finally:
        m = meter(b, f, sub)  # the backlog is queued: from here on, only forwarding
        m.start()
        f.signal(signal.SIGCONT)
    wait_count(sub, out, n, m)
    count, span = receipt_span(out)
    return count / span, m.stop(count)


def live_phase(s: Setup, run: Run, b: Brokers, f: Forwarder, n: int, work: Path) -> tuple[float, Usage]:  # fmt: skip
    out = work / f"{f.name}-live.out"
    sources = []
    for d in DEVICES:
        src = work / f"{f.name}-{d.rsplit('/', 1)[1]}-live.lines"
        src.write_bytes(run.lines(d, n // len(DEVICES)))
        sources.append(src)
    sub = subscriber(s, b.it_port, n, out, "%U")
    time.sleep(0.3)
    m = meter(b, f, sub)
    m.start()
    handles = [src.open("rb") for src in sources]
    pubs = [publisher(s, b.ot_port, d, run.profile.topic(d), fh) for d, fh in zip(DEVICES, handles, strict=True)]  # fmt: skip
    for p in pubs:
        m.add("publishers", p.pid)
    wait_count(sub, out, n, m)
    for p, fh in zip(pubs, handles, strict=True):
        m.child_done(p)
        fh.close()
    count, span = receipt_span(out)
    return count / span, m.stop(count)


def latency_phase(s: Setup, run: Run, b: Brokers, f: Forwarder, rate: int, seconds: float, work: Path) -> tuple[float, float]:  # fmt: skip
    """Lines written to the gateways' stdin at ``rate`` (total), each carrying its write time."""
    n = max(len(DEVICES), int(rate * seconds) // len(DEVICES) * len(DEVICES))
    out = work / f"{f.name}-lat{rate}.out"
    sub = subscriber(s, b.it_port, n, out, "%U %p")
    time.sleep(0.3)
    pubs = [publisher(s, b.ot_port, d, run.profile.topic(d), subprocess.PIPE) for d in DEVICES]
    time.sleep(0.3)  # connected
    start = time.monotonic()
    for i in range(n):
        d = i % len(DEVICES)
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stdin = pubs[d].stdin
        if stdin is None:
            raise SystemExit("publisher without stdin")
        stdin.write(run.lines(DEVICES[d], 1, time.time()))
        stdin.flush()
    for p in pubs:
        if p.stdin is not None:
            p.stdin.close()
    wait_count(sub, out, n)
    for p in pubs:
        p.wait(timeout=60)
    lat = sorted(
        float(recv) - run.profile.sent_at(payload)
        for recv, payload in (line.split(b" ", 1) for line in out.read_bytes().splitlines() if line)
    )
    return statistics.median(lat) * 1000, lat[max(0, int(len(lat) * 0.99) - 1)] * 1000


@contextmanager
def cpu_burner() -> Iterator[None]:
    """A process that wants a whole CPU, as on a plant's IDMZ box that is never quiet."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def measure(s: Setup, run: Run, label: str, workers: int, args: argparse.Namespace) -> Figures:
    work = s.tmp / f"{run.profile.name}-{label}"
    work.mkdir(parents=True)
    brokers = start_brokers(s, work / "brokers", bridge=workers == 0)
    forwarder: Forwarder | None = None
    try:
        forwarder = Bridge(brokers) if workers == 0 else Relay(s, brokers, work / "home", workers)
        wait_flowing(s, brokers, work)
        fig = Figures()
        fig.drain, fig.drain_use = drain_phase(s, run, brokers, forwarder, args.messages, work)
        fig.cpu_us = fig.drain_use.us(forwarder.role)
        print(f"{forwarder.name} drain: {fig.drain_use.describe()}", flush=True)
        if args.drain_only:
            print(f"{forwarder.name}: drain {fig.drain:.0f} msg/s; {fig.cpu_us:.0f} us/msg of {forwarder.role}", flush=True)  # fmt: skip
            return fig
        fig.live, fig.live_use = live_phase(s, run, brokers, forwarder, args.messages, work)
        fig.live_cpu_us = fig.live_use.us(forwarder.role)
        print(f"{forwarder.name} live: {fig.live_use.describe()}", flush=True)
        print(
            f"{forwarder.name}: drain {fig.drain:.0f} msg/s, live {fig.live:.0f} msg/s; CPU per "
            f"message {fig.cpu_us:.0f} us (drain), {fig.live_cpu_us:.0f} us (live) of "
            f"{'the OT broker' if workers == 0 else 'the workers'}",
            flush=True,
        )
        with cpu_burner():
            for rate in args.rates:
                fig.latency[rate] = latency_phase(
                    s, run, brokers, forwarder, rate, args.latency_seconds, work
                )
                p50, p99 = fig.latency[rate]
                print(f"{forwarder.name}: {rate} msg/s with a CPU burner: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)  # fmt: skip
        return fig
    finally:
        if forwarder is not None:
            forwarder.stop()
        brokers.stop()


def result_line(profile: str, bridge: Figures, relay: dict[int, Figures]) -> str:
    kv = [f"profile={profile}", f"bridge_drain_msgs_per_s={bridge.drain:.0f}",
          f"bridge_live_msgs_per_s={bridge.live:.0f}"]  # fmt: skip
    for w, fig in relay.items():
        kv.append(f"drain_ratio_w{w}={fig.drain / bridge.drain:.2f}")
        if bridge.live:
            kv.append(f"live_ratio_w{w}={fig.live / bridge.live:.2f}")
        kv.append(f"cpu_us_w{w}={fig.cpu_us:.0f}")
    for rate, (_p50, p99) in bridge.latency.items():
        kv.append(f"bridge_p99_ms_{rate}={p99:.1f}")
        for w, fig in relay.items():
            kv += [f"p50_ms_{rate}_w{w}={fig.latency[rate][0]:.1f}",
                   f"p99_ms_{rate}_w{w}={fig.latency[rate][1]:.1f}"]  # fmt: skip
    return "RESULT relay " + " ".join(kv)


def cpu_fields(bridge: Figures, relay: dict[int, Figures]) -> str:
    """Where the CPU went (bench/relay_cpu.py): cores busy, CPU per message of all the phase's
    processes and of the two brokers, and the rate ratios that CPU predicts."""
    bd = bridge.drain_use
    if bd is None:
        return ""
    broker = ("ot_broker", "it_broker")
    kv = [f"machine_cores={os.cpu_count()}", f"bridge_cores_busy={bd.cores_busy:.2f}",
          f"bridge_machine_busy={bd.machine_busy:.2f}", f"bridge_total_us={bd.us():.1f}",
          f"broker_us_bridge={bd.us(*broker):.1f}"]  # fmt: skip
    if bridge.live_use is not None:
        kv += [f"bridge_live_cores_busy={bridge.live_use.cores_busy:.2f}",
               f"bridge_live_total_us={bridge.live_use.us():.1f}"]  # fmt: skip
    for w, fig in relay.items():
        rd = fig.drain_use
        if rd is None:
            continue
        kv += [f"relay_cores_busy_w{w}={rd.cores_busy:.2f}",
               f"relay_machine_busy_w{w}={rd.machine_busy:.2f}", f"total_us_w{w}={rd.us():.1f}",
               f"broker_us_w{w}={rd.us(*broker):.1f}",
               f"predicted_ratio_w{w}={predicted_ratio(bd, rd):.2f}",
               f"manycore_ratio_w{w}={manycore_ratio(bd, rd):.2f}"]  # fmt: skip
        if bridge.live_use is not None and fig.live_use is not None:
            kv += [f"relay_live_cores_busy_w{w}={fig.live_use.cores_busy:.2f}",
                   f"predicted_live_ratio_w{w}={predicted_ratio(bridge.live_use, fig.live_use):.2f}"]  # fmt: skip
    return " " + " ".join(kv)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=50000, help="backlog and live messages")
    ap.add_argument("--workers", type=_ints, default=[1, 2], help="worker counts, e.g. 1,2")
    ap.add_argument("--rates", type=_ints, default=[500, 1000, 2000], help="latency rates, msg/s")
    ap.add_argument("--latency-seconds", type=float, default=6.0, help="per rate")
    ap.add_argument("--profiles", default="envelope", help=f"of {sorted(PROFILES)}")
    ap.add_argument("--quick", action="store_true", help="10,000 messages, 2 s per rate")
    ap.add_argument("--drain-only", action="store_true",
                    help="only the drain phase (no live rate, latency or Sparkplug B figure)")  # fmt: skip
    ap.add_argument("--sparkplug-profile", action="store_true",
                    help="only the Sparkplug B inspection CPU against the JSON one (bench/relay_sparkplug.py)")  # fmt: skip
    args = ap.parse_args(argv)
    import relay_sparkplug  # bench/ is on sys.path when this file runs (ADR 0110: its own module)

    if args.sparkplug_profile:
        return int(relay_sparkplug.main(["--messages", str(args.messages)]))
    if args.quick:
        args.messages, args.latency_seconds = 10000, 2.0
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            print(f"{tool} not found", file=sys.stderr)
            return 2
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    unknown = sorted(set(args.profiles.split(",")) - set(PROFILES))
    if unknown:
        print(f"unknown profile(s) {unknown}; known: {sorted(PROFILES)}", file=sys.stderr)
        return 2
    for name in args.profiles.split(","):
        profile = PROFILES[name]
        tmp = Path(tempfile.mkdtemp(prefix="idmz-bench-relay-"))
        s = make_setup(tmp, profile)
        run = Run(profile)
        bridge = measure(s, run, "bridge", 0, args)
        relay = {w: measure(s, run, f"w{w}", w, args) for w in args.workers}
        s.ca.close()
        # The Sparkplug B profile in the same run: inspection CPU per message, NDATA with 50
        # metrics against a 50-tag JSON envelope (the rest of the path costs both the same).
        spb_kv = ""
        if not args.drain_only:
            spb = relay_sparkplug.run(min(args.messages, 20000))
            spb_kv = (
                f" spb_inspect_us={spb['sparkplug_us']:.1f} json50_inspect_us={spb['json_us']:.1f}"
                f" spb_ratio={spb['sparkplug_us'] / spb['json_us']:.2f}"
            )
        print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
        print(result_line(name, bridge, relay) + spb_kv + cpu_fields(bridge, relay), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)  # on failure tmp is kept for its broker logs
    return 0


if __name__ == "__main__":
    sys.exit(main())
