"""`idmz edge simulate`, `idmz edge run`, `idmz edge check` as an operator runs them, with the
example deploy/gateway.toml."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tomllib
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.metrics import GatewayMetrics
from edge.model_signing import sign_model
from edge.rul import OperatingCondition
from idmz.gateway_config import load_gateway_config, parse_gateway_config
from tests.edge.harness import start_collector, train_simulator_model
from tests.support.ca import GATEWAY_ID, ProductCA
from tests.support.mosquitto import Broker
from tests.support.net import free_port, port_open, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "gateway.toml"


def make_config(
    test_ca: ProductCA,
    tmp: Path,
    *,
    broker_port: int,
    opcua: int,
    modbus: int,
    metrics: int,
    signer_ca: ProductCA | None = None,
) -> Path:
    creds = test_ca.write_credentials(tmp / "creds", test_ca.device())
    model = tmp / "model.onnx"
    model.write_bytes(train_simulator_model("cli-1"))
    signer = (signer_ca or test_ca).signer()
    model.with_name("model.onnx.sig").write_bytes(
        sign_model(
            model.read_bytes(),
            artifact="model.onnx",
            signer_cert_pem=signer.cert_pem,
            signer_key_pem=signer.key_pem,
            chain_pem=signer.chain_pem,
            now=datetime.now(UTC),
        )
    )
    test_ca.ca.publish_crl(now=datetime.now(UTC))
    text = EXAMPLE.read_text()
    for old, new in {
        '"/var/lib/idmz/gateway"': f'"{creds}"',
        '"/var/lib/idmz/edge"': f'"{tmp / "state"}"',
        '"idmz.plant1.example"': '"127.0.0.1"',
        "port = 8883": f"port = {broker_port}",
        "port = 9464": f"port = {metrics}",
        "127.0.0.1:4840": f"127.0.0.1:{opcua}",
        "port = 5020": f"port = {modbus}",
        '"/var/lib/idmz/models/bearing.onnx"': f'"{model}"',
        '"/var/lib/idmz/models/bearing.onnx.sig"': f'"{model}.sig"',
        '"/var/lib/idmz/gateway/ca.pem"': f'"{creds / "ca.pem"}"',
        '"/var/lib/idmz/ca/crl.pem"': f'"{test_ca.crl_path}"',
        "telemetry_interval_s = 1.0": "telemetry_interval_s = 0.5",
        "status_interval_s = 10.0": "status_interval_s = 1.0",
        "realarm_interval_s = 60": "realarm_interval_s = 5",
        "# load_n = 4000": "load_n = 4000",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / "gateway.toml"
    path.write_text(text)
    return path


def idmz(*args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """Run the CLI; output to `log` (a pipe nobody drains would block a long-running command)."""
    out = log.open("w") if log is not None else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "idmz", "--log-level", "info", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_example_config_loads_into_the_gateway_it_describes(
    test_ca: ProductCA, tmp_path: Path
) -> None:
    loaded = load_gateway_config(
        make_config(test_ca, tmp_path, broker_port=8883, opcua=4840, modbus=5020, metrics=9464)
    )
    g = loaded.gateway
    assert g.identity.path == GATEWAY_ID  # from the credential directory
    assert [t.name for t in g.tags][:2] == ["press_tonnage", "ram_velocity"]
    assert g.vibration[0].featurizer.bearing.n_elements == 9
    assert g.vibration[0].condition == OperatingCondition(1797.0, 4000.0)  # load_n, uncommented
    assert g.outbox.overflow == "drop-oldest" and g.metrics_host == "127.0.0.1"
    assert loaded.model is not None and loaded.model.trust.allowed_signers == (
        "acme/signer/reliability",
    )


def test_a_misspelt_key_is_refused_not_ignored(test_ca: ProductCA, tmp_path: Path) -> None:
    path = make_config(test_ca, tmp_path, broker_port=1, opcua=2, modbus=3, metrics=4)
    doc = tomllib.loads(path.read_text())
    doc["outbox"]["max_outbox_byte"] = 10
    with pytest.raises(ConfigError, match=r"unknown key.*max_outbox_byte"):
        parse_gateway_config(doc, tmp_path, source=path)


@pytest.mark.parametrize("line", ["load_n = inf", "load_n = 1e300", "shaft_rpm = inf"])
def test_an_infinite_load_or_speed_in_the_toml_is_refused_naming_the_key(
    test_ca: ProductCA, tmp_path: Path, line: str
) -> None:
    path = make_config(test_ca, tmp_path, broker_port=1, opcua=2, modbus=3, metrics=4)
    key, value = line.split(" = ")
    doc = tomllib.loads(path.read_text())
    doc["vibration"][0][key] = tomllib.loads(f"v = {value}")["v"]
    with pytest.raises(ConfigError, match=key):
        parse_gateway_config(doc, tmp_path, source=path)


def test_metrics_refuse_to_listen_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        GatewayMetrics().serve(free_port(), "0.0.0.0")


def test_edge_check_exits_1_for_a_model_signed_outside_the_trusted_ca(
    test_ca: ProductCA, other_ca: ProductCA, tmp_path: Path
) -> None:
    cfg = make_config(
        test_ca, tmp_path, broker_port=1, opcua=2, modbus=3, metrics=4, signer_ca=other_ca
    )
    proc = idmz("edge", "check", "--config", str(cfg))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "signer certificate refused" in out


@pytest.mark.integration
def test_edge_run_and_simulate_from_the_command_line(
    test_ca: ProductCA, mtls_broker: Broker, tmp_path: Path
) -> None:
    opcua, modbus, metrics = free_port(), free_port(), free_port()
    cfg = make_config(
        test_ca, tmp_path, broker_port=mtls_broker.port, opcua=opcua, modbus=modbus, metrics=metrics
    )
    control = tmp_path / "control.json"
    collector = start_collector(test_ca, mtls_broker.port, tmp_path / "it")
    sim = idmz(
        "edge",
        "simulate",
        "--opcua-port",
        str(opcua),
        "--modbus-port",
        str(modbus),
        "--control",
        str(control),
        log=tmp_path / "sim.log",
    )
    gw = None
    try:
        wait_for(lambda: port_open(opcua) and port_open(modbus), timeout_s=60, what="simulator")
        gw = idmz("edge", "run", "--config", str(cfg), log=tmp_path / "gw.log")
        wait_for(lambda: port_open(metrics), timeout_s=60, what="metrics endpoint")
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        text = body.decode()
        assert "idmz_edge_model_info{" in text and 'version="cli-1"' in text
        assert "idmz_edge_outbox_depth_messages" in text

        def status() -> dict[str, object] | None:
            for _, _, b in collector.records():
                if b["kind"] == "status" and b["data"]["readers"]["press-plc"]["connected"]:
                    return b["data"]
            return None

        st = wait_for(status, timeout_s=60, what="a status message with the reader up")
        assert st["model"]["version"] == "cli-1"  # type: ignore[index]
        control.write_text(json.dumps({"fault": "bearing-outer-race"}))
        wait_for(
            lambda: any(b["kind"] == "anomaly" for _, _, b in collector.records()),
            timeout_s=60,
            what="the anomaly on the IT side",
        )
        alarm = json.loads((tmp_path / "state" / "alarms.jsonl").read_text().splitlines()[0])
        assert alarm["model_version"] == "cli-1" and alarm["score"] > alarm["threshold"]
        gw.send_signal(signal.SIGTERM)
        gw.wait(timeout=60)
        assert gw.returncode == 0, (tmp_path / "gw.log").read_text()
    finally:
        for p in (gw, sim):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        collector.stop()
    assert sim.returncode == 0


def test_uplink_format_sparkplug_needs_its_group_and_node(
    test_ca: ProductCA, tmp_path: Path
) -> None:
    path = make_config(test_ca, tmp_path, broker_port=1, opcua=2, modbus=3, metrics=4)
    doc = tomllib.loads(path.read_text())
    doc["uplink"]["format"] = "sparkplug"
    with pytest.raises(ConfigError, match="sparkplug_group"):
        parse_gateway_config(doc, tmp_path, source=path)
    doc["uplink"].update(sparkplug_group="plant1", sparkplug_node="press/07")
    with pytest.raises(ConfigError, match="Sparkplug ids"):
        parse_gateway_config(doc, tmp_path, source=path)
    doc["uplink"]["sparkplug_node"] = "press-07"
    loaded = parse_gateway_config(doc, tmp_path, source=path)
    uplink = loaded.gateway.uplink
    assert uplink is not None and uplink.sparkplug is not None
    assert uplink.sparkplug.node == "press-07"
    doc["uplink"]["format"] = "protobuf"
    with pytest.raises(ConfigError, match="format"):
        parse_gateway_config(doc, tmp_path, source=path)
