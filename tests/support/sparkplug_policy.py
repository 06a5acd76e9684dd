"""A policy with Sparkplug B edge nodes for the tests: the example plant policy plus a Sparkplug
device class, two edge nodes and a consumer grant (ADR 0110)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_1 = "acme/plant1/stamping/line1/cell4/spb-gw-01"
NODE_2 = "acme/plant1/stamping/line1/cell4/spb-gw-02"
GROUP = "plant1"
HOST_ID = "scada-primary"

SPARKPLUG_SECTION = f"""
[device_classes.sparkplug-gateway]
description = "Sparkplug B edge node"
publish = ["status"]
sparkplug = true

[assignments."acme/plant1/stamping/line1/cell4"]

[sparkplug]
host_id = "{HOST_ID}"
max_metrics = 500
max_payload_bytes = 65536

[sparkplug.nodes."{NODE_1}"]
group = "{GROUP}"
node = "press-01"
devices = ["plc", "drive"]

[sparkplug.nodes."{NODE_2}"]
group = "{GROUP}"
node = "press-02"
devices = ["plc"]
"""


def sparkplug_policy_text(*, host_id: bool = True) -> str:
    """plant.toml with the Sparkplug section; the cell4 assignment is spliced into the
    existing [assignments] table, the historian reads the group."""
    base = (REPO / "deploy" / "policy" / "plant.toml").read_text()
    base = base.replace(
        '"acme/plant1/stamping/line1/cell3" = "sensor-gateway"',
        '"acme/plant1/stamping/line1/cell3" = "sensor-gateway"\n'
        '"acme/plant1/stamping/line1/cell4" = "sparkplug-gateway"',
    )
    base = base.replace(
        'subscribe = ["acme/plant1"]\n',
        f'subscribe = ["acme/plant1"]\nsparkplug_groups = ["{GROUP}"]\n',
        1,
    )
    section = SPARKPLUG_SECTION.replace('[assignments."acme/plant1/stamping/line1/cell4"]\n', "")
    if not host_id:
        section = section.replace(f'host_id = "{HOST_ID}"\n', "")
    return base + section
