"""Fast tests of the demo's own machinery. The story itself is tested by `idmz demo --check`
(make test runs it once); these cover what that run cannot show: the demo's configs are what
the real loaders accept, its directory wipe refuses foreign directories, its readers cope with
half-written lines, and its sweep stops a leaked broker and nothing else."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.opcua_certs import make_application_certificate
from idmz.demo.configs import gateway_toml, relay_toml
from idmz.demo.layout import AUDIT_ORIGIN, PRESS_1, PRESS_2, DemoDirectoryError, DemoLayout
from idmz.demo.observe import Capture, metric
from idmz.demo.plant import repo_policy
from idmz.demo.ports import LOW_PORT, Ports, ephemeral_start, pick_ports
from idmz.demo.processes import (
    Deadline,
    DemoProcesses,
    describe,
    process_running,
    processes_naming,
    sweep,
)
from idmz.demo.runner import Step, StepFailedError, StoryRunner
from idmz.gateway_config import load_gateway_config
from idmz.home import Home
from idmz.relay_config import load_relay_config
from idmz.supervisor import Supervisor
from tests.support.ca import make_ca
from tests.support.net import free_port, port_open, wait_for

PORTS = Ports(8443, 8883, 8884, 9465, 4840, 5020, 9464, 9466, 18883, 18884)


def test_demo_refuses_to_wipe_a_directory_it_did_not_create(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    (root / "precious.txt").write_text("not the demo's")
    with pytest.raises(DemoDirectoryError, match="not a demo directory"):
        DemoLayout(root).prepare()
    assert (root / "precious.txt").read_text() == "not the demo's"


def test_demo_wipes_its_own_previous_run(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path / "demo")
    layout.prepare()
    (layout.root / "old-run.log").write_text("x")
    layout.prepare()
    assert not (layout.root / "old-run.log").exists()
    assert (layout.root / ".idmz-demo").exists()
    assert layout.secrets.stat().st_mode & 0o077 == 0


def test_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = dataclasses.astuple(pick_ports())
    assert len(set(ports)) == len(ports)
    assert all(LOW_PORT <= p < ephemeral_start() for p in ports)


def test_relay_toml_loads_and_shares_the_provisioning_audit_log(tmp_path: Path) -> None:
    layout = DemoLayout(tmp_path / "demo")
    layout.prepare()
    shutil.copyfile(repo_policy(), layout.policy)
    text = relay_toml(layout, PORTS)
    config = load_relay_config(text, home=Home(layout.root), source=layout.relay_toml)
    # One log per home: the relay appends under the origin the demo created the log with (and
    # that every idmz child is told through IDMZ_AUDIT_ORIGIN); a mismatch stops the relay.
    assert config.worker.audit_origin == AUDIT_ORIGIN
    assert DemoProcesses(layout, Deadline(60)).env["IDMZ_AUDIT_ORIGIN"] == AUDIT_ORIGIN
    assert (config.worker.ot.port, config.worker.it.port) == (PORTS.ot, PORTS.it)
    assert config.managed_ot is not None and config.managed_ot.bind_address == "127.0.0.1"
    assert config.broker_dir == layout.broker_dir
    assert config.health_port == PORTS.relay_health


@pytest.mark.parametrize(("identity", "with_model"), [(PRESS_1, True), (PRESS_2, False)])
def test_gateway_toml_loads_with_enrolled_credentials(
    tmp_path: Path, identity: str, with_model: bool
) -> None:
    layout = DemoLayout(tmp_path / "demo")
    layout.prepare()
    ca = make_ca(layout.ca)
    try:
        gw = layout.gateway(identity.rsplit("/", 1)[1], identity)
        ca.write_credentials(gw.credentials, ca.device(identity), identity)
        (layout.model / "model.onnx").write_bytes(b"not read by the loader")
        make_application_certificate(gw.opcua, "urn:test:gateway", "gw", server=False, days=30)
        make_application_certificate(
            layout.opcua_server, "urn:test:plc", "plc", server=True, days=30
        )
        gw.config.write_text(
            gateway_toml(
                layout, gw, PORTS, metrics_port=PORTS.press_1_metrics, with_model=with_model
            )
        )
        loaded = load_gateway_config(gw.config)
    finally:
        ca.ca.close()
    cfg = loaded.gateway
    assert cfg.identity.path == identity
    assert cfg.uplink is not None and (cfg.uplink.host, cfg.uplink.port) == ("127.0.0.1", PORTS.ot)
    assert cfg.metrics_host == "127.0.0.1"
    assert (loaded.model is not None) is with_model
    assert bool(cfg.vibration) is with_model and bool(cfg.opcua) is with_model
    assert all(s.security is not None for s in cfg.opcua)  # never SecurityPolicy None
    assert [m.port for m in cfg.modbus] == [PORTS.modbus]


def test_capture_reads_properties_and_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "historian.tsv"
    line = (
        f"{PRESS_1}/telemetry\tidmz-device:{PRESS_1} idmz-msg-id:m1\t"
        f'{{"v":1,"id":"m1","ts":"2026-11-22T10:00:00.000Z","device":"{PRESS_1}",'
        '"kind":"telemetry","data":{"tags":[]}}'
    )
    path.write_text(line[:40])  # mosquitto_sub is mid-write
    capture = Capture(path)
    assert capture.read() == []
    with path.open("a") as fh:
        fh.write(line[40:] + "\nnot\ta message\n")
    (msg,) = capture.where(device=PRESS_1, kind="telemetry")
    assert msg.properties == {"idmz-device": PRESS_1, "idmz-msg-id": "m1"}
    assert msg.body["id"] == "m1" and msg.ts is not None
    assert capture.where(device=PRESS_2) == []


def test_metric_sums_only_matching_samples() -> None:
    text = "\n".join(
        [
            "# HELP idmz_relay_broker_refused_total publishes refused",
            f'idmz_relay_broker_refused_total{{broker="ot",device="{PRESS_2}"}} 2.0',
            f'idmz_relay_broker_refused_total{{broker="it",device="{PRESS_2}"}} 1.0',
            'idmz_relay_broker_refused_total{broker="ot",device="acme/it/historian"} 5.0',
            "idmz_edge_uplink_connected 0.0",
        ]
    )
    assert metric(text, "idmz_relay_broker_refused_total", device=PRESS_2) == 3.0
    assert metric(text, "idmz_relay_broker_refused_total", broker="ot", device=PRESS_2) == 2.0
    assert metric(text, "idmz_edge_uplink_connected") == 0.0
    assert metric(None, "anything") == 0.0


def _detached_mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A broker started in its own session, as the relay starts its managed brokers."""
    directory.mkdir(parents=True)
    port = free_port()
    conf = directory / "broker.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: port_open(port), timeout_s=20, what="mosquitto listening")
    return proc, port


@pytest.mark.skipif(
    not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
    reason="needs mosquitto",
)
def test_sweep_stops_a_leaked_broker_of_the_demo_and_spares_others(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    leaked, _ = _detached_mosquitto(demo / "relay" / "brokers")
    other, other_port = _detached_mosquitto(tmp_path / "someone-else")
    try:
        assert [pid for pid, _ in processes_naming(demo)] == [leaked.pid]
        found = sweep(demo)
        assert len(found) == 1 and f"pid {leaked.pid}:" in found[0]
        leaked.wait(timeout=10)
        assert other.poll() is None and port_open(other_port)
        assert sweep(demo) == []
    finally:
        for proc in (leaked, other):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def test_supervisor_stops_group_members_that_outlive_the_child(tmp_path: Path) -> None:
    """A child that exits on SIGTERM while its own worker ignores SIGTERM: stopping the child
    must not leave the worker running."""
    sup = Supervisor(tmp_path / "logs")
    pid_file = tmp_path / "worker.pid"
    script = (
        f"(trap '' TERM; exec sleep 300) & echo $! > {pid_file}; trap 'exit 0' TERM; "
        "while :; do sleep 0.1; done"
    )
    child = sup.start("parent", ["sh", "-c", script])
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="worker")
    worker = int(pid_file.read_text())
    child.stop(grace_s=1.0)
    assert child.process.returncode == 0  # the child itself left on SIGTERM
    wait_for(lambda: not process_running(worker), timeout_s=10, what="worker stopped")
    sup.close()


def test_failure_messages_never_show_an_enrollment_token() -> None:
    token = "eyJhbGciOiJFZERTQSJ9.secret.signature"
    argv = ["/venv/bin/python", "-m", "idmz", "--home", "/d", "enroll", "--token", token]
    shown = describe(argv)
    assert token not in shown
    assert shown.startswith("idmz enroll --token ***")


def test_a_failed_step_shows_its_logs_and_lists_the_rest_as_not_run() -> None:
    out = io.StringIO()
    runner = StoryRunner(out=out)
    explained: list[str] = []

    def refused() -> str:
        raise StepFailedError("the relay forwarded a spoofed message\nmarker spoof-1 at IT")

    acts = [
        ("Act 1", [Step("healthy", lambda: "3 windows\nevidence line")]),
        ("Act 2", [Step("spoof refused", refused, ("relay",)), Step("forged refused", str)]),
        ("Act 3", [Step("revoked", str)]),
    ]
    assert runner.tell(acts, lambda step: explained.append(",".join(step.logs))) is False
    text = out.getvalue()
    assert "  ✔ healthy — 3 windows" in text and "      │ evidence line" in text
    assert "  ✘ spoof refused — the relay forwarded a spoofed message" in text
    assert "      │ marker spoof-1 at IT" in text
    assert "  – forged refused (not run)" in text and "  – revoked (not run)" in text
    assert "Act 3" in text and explained == ["relay"]
    assert [o.ok for o in runner.outcomes] == [True, False] and not runner.all_ok
