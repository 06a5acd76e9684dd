"""The configuration files the demo writes, exactly as an operator would write them by hand:
``relay.toml`` (deploy/relay.toml's format) and each gateway's ``gateway.toml`` (docs/edge.md).
Strings are written as TOML basic strings (JSON escaping is valid TOML for them).
"""

from __future__ import annotations

import json
from pathlib import Path

from idmz.demo.layout import AUDIT_ORIGIN, DemoLayout, Gateway
from idmz.demo.ports import Ports


def _s(value: str | Path) -> str:
    return json.dumps(str(value))


def relay_toml(layout: DemoLayout, ports: Ports) -> str:
    tls = layout.relay_tls
    return f"""\
# idmz relay for the demo (format: deploy/relay.toml). Loopback only, one worker.
policy = {_s(layout.policy)}
workers = 1
accepted_audit = "per-batch"
audit_origin = {_s(AUDIT_ORIGIN)}

[ot]
managed = true
bind_address = "127.0.0.1"
host = "127.0.0.1"
port = {ports.ot}
bound_port = {ports.ot_bound}

[it]
managed = true
bind_address = "127.0.0.1"
host = "127.0.0.1"
port = {ports.it}
bound_port = {ports.it_bound}

[tls]
ca = {_s(layout.ca / "chain.pem")}
relay_cert = {_s(tls / "relay.pem")}
relay_key = {_s(tls / "relay.key")}
server_cert = {_s(tls / "broker.pem")}
server_key = {_s(tls / "broker.key")}

[health]
host = "127.0.0.1"
port = {ports.relay_health}

[brokers]
audit_denials = true
"""


def gateway_toml(
    layout: DemoLayout,
    gw: Gateway,
    ports: Ports,
    *,
    metrics_port: int,
    with_model: bool,
) -> str:
    """press-01: OPC UA + Modbus, the vibration channel and the signed model.
    press-02: a drive-cabinet gateway (Modbus only, no model)."""
    lines = [
        f"# gateway {gw.identity} (demo)",
        "[gateway]",
        f"credential_dir = {_s(gw.credentials)}",
        f"state_dir = {_s(gw.state)}",
        "telemetry_interval_s = 1.0",
        "status_interval_s = 5.0",
        "",
        "[uplink]",
        'host = "127.0.0.1"',
        f"port = {ports.ot}",
        "backoff_initial_s = 0.2",
        "backoff_max_s = 2.0",
        "",
        "[metrics]",
        'host = "127.0.0.1"',
        f"port = {metrics_port}",
        "",
        "[[modbus]]",
        'name = "drive"',
        'host = "127.0.0.1"',
        f"port = {ports.modbus}",
        "poll_interval_s = 0.5",
        "",
    ]
    asset = "press01" if with_model else "press02"

    def tag(name: str, source: str, address: str, unit: str, **extra: object) -> None:
        lines.extend(
            [
                "[[tag]]",
                f"name = {_s(name)}",
                f"source = {_s(source)}",
                f"address = {address}",
                f"unit = {_s(unit)}",
                f"asset = {_s(asset)}",
                *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
                "",
            ]
        )

    tag("motor_current", "drive", "0", "A")
    tag("bearing_temperature", "drive", "2", "degC")
    if not with_model:
        return "\n".join(lines)
    lines += [
        "[model]",
        f"path = {_s(layout.model / 'model.onnx')}",
        f"trust_roots = [{_s(gw.credentials / 'ca.pem')}]",
        f"crls = [{_s(layout.ca / 'crl.pem')}]",
        'allowed_signers = ["acme/signer/edge-models"]',
        "",
        # Pulls signed models from the IDMZ release repository (act 5), every 2 s for the demo.
        "[release]",
        f'url = "https://localhost:{ports.release}"',
        f"trusted_root = {_s(gw.dir / 'release-root.json')}",
        "interval_s = 2.0",
        "jitter_s = 1.0",
        'kinds = ["model"]',
        "",
        "[[opcua]]",
        'name = "press-plc"',
        f'endpoint = "opc.tcp://127.0.0.1:{ports.opcua}/idmz/sim"',
        "backoff_initial_s = 0.2",
        "backoff_max_s = 2.0",
        # A signed and encrypted channel to the PLC, whose certificate is pinned.
        'security_policy = "Basic256Sha256"',
        'security_mode = "SignAndEncrypt"',
        f"certificate = {_s(gw.opcua / 'cert.pem')}",
        f"private_key = {_s(gw.opcua / 'key.pem')}",
        f"server_certificate = {_s(layout.opcua_server / 'cert.pem')}",
        "",
    ]
    node = "ns=2;s=press01."
    tag("press_tonnage", "press-plc", _s(node + "tonnage"), "t", safe_min=0, safe_max=300)
    tag("ram_velocity", "press-plc", _s(node + "ram_velocity"), "mm/s")
    tag("hydraulic_pressure", "press-plc", _s(node + "hydraulic_pressure"), "bar")
    tag("shaft_speed", "press-plc", _s(node + "shaft_speed"), "rpm")
    tag("bearing_de_accel", "press-plc", _s(node + "bearing_de.accel"), "g", kind="waveform")
    lines += [
        "[[vibration]]",
        'tag = "bearing_de_accel"',
        "sample_rate_hz = 12000.0",
        "window_s = 1.0",
        'shaft_speed_tag = "shaft_speed"',
        "shaft_rpm = 1797.0",
        'temperature_tag = "bearing_temperature"',
        "realarm_interval_s = 30.0",
        "",
    ]
    return "\n".join(lines)
