"""The one thing the appliance writes on OT, the Sparkplug STATE (relay/sparkplug_state.py,
ADR 0110), is made from configuration alone: the module cannot reach the IT side and every
message it publishes is `state_payload` of a boolean and its own timestamp. The live half
(NCMD and STATE published on IT never seen on OT) is in test_sparkplug.py."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from relay.sparkplug_state import StatePublisher

SOURCE = Path(__file__).resolve().parents[2] / "relay" / "sparkplug_state.py"
IT_SIDE = {
    "relay.it_sink", "relay.it_codec", "relay.worker", "relay.pipeline", "relay.drain",
    "relay.spool", "relay.inspector", "relay.sparkplug_flow", "relay.retention", "relay.links",
}  # fmt: skip


def _tree() -> ast.Module:
    return ast.parse(SOURCE.read_text(encoding="utf-8"))


def test_the_state_publisher_imports_nothing_of_the_it_side() -> None:
    imported = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not imported & IT_SIDE
    assert not [m for m in imported if m.startswith("paho")]


def test_every_state_it_publishes_is_a_state_payload() -> None:
    for func in ast.walk(_tree()):
        if not isinstance(func, ast.FunctionDef):
            continue
        made = {
            t.id
            for n in ast.walk(func)
            if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Call)
            and getattr(n.value.func, "id", "") == "state_payload"
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for call in ast.walk(func):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") in (
                "_publish",
                "_connect",
            ):
                payload = call.args[-1]
                assert isinstance(payload, ast.Name) and payload.id in made, (
                    f"{func.name}: {ast.unparse(call)} publishes something other than a STATE"
                )


def test_no_public_method_takes_a_message() -> None:
    for name, member in inspect.getmembers(StatePublisher, inspect.isfunction):
        if name.startswith("_") or name in ("on_packets", "on_connected"):
            continue  # on_packets: the OT broker's answers (PUBACK); read for the reason code
        params = inspect.signature(member).parameters
        assert not [p for p in params if p not in ("self", "was_up")], (name, list(params))
