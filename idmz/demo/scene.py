"""What every scene of the story shares: waiting on evidence with the demo's deadline,
publishing with ``mosquitto_pub`` as an independent client, finding refusals in the audit log,
and the barrier that makes "nothing arrived" a checked claim instead of a fixed sleep.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bedrock.clock import utc_now
from idmz.demo.layout import PRESS_1
from idmz.demo.observe import Capture, Message
from idmz.demo.plant import Plant
from idmz.demo.processes import Completed
from policies.envelope import Envelope

PUBACK_RC = re.compile(r"received PUBACK \(Mid: \d+, RC:(\d+)\)")
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87
T = TypeVar("T")


def envelope(device: str, msg_id: str, kind: str, data: dict[str, Any]) -> str:
    ts = utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Envelope(msg_id, ts, device, kind, data).to_json().decode()


def cert_sha256(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def clip(text: str, n: int = 150) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass
class Scene:
    plant: Plant

    def _wait(self, condition: Callable[[], T | None], what: str, timeout_s: float = 60.0) -> T:
        return self.plant.procs.wait_for(condition, what=what, timeout_s=timeout_s)

    def _pub(
        self, name: str, port: int, cert: Path, key: Path, topic: str, payload: str
    ) -> Completed:
        """``mosquitto_pub`` (MQTT 5, QoS 1, -d to show the broker's PUBACK reason code)."""
        layout = self.plant.layout
        return self.plant.procs.run(
            name,
            [
                shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", "127.0.0.1",
                "-p", str(port), "-V", "mqttv5", "-q", "1", "-d", "-i", f"demo-{name}",
                "--cafile", str(layout.ca / "chain.pem"), "--cert", str(cert), "--key", str(key),
                "-t", topic, "-m", payload,
            ],
            timeout_s=30,
        )  # fmt: skip

    @staticmethod
    def _puback(done: Completed) -> int | None:
        m = PUBACK_RC.search(done.output)
        return int(m.group(1)) if m else None

    def _flowing_after(self, capture: Capture, when: datetime, where: str) -> Message:
        """Barrier: a later press-01 message has come through ``capture``'s path."""
        return self._wait(
            lambda: capture.newer_than(PRESS_1, when),
            f"a newer press-01 message at the {where} (the path is flowing)",
        )

    def _refusal(self, actor: str, resource: str | None = None, **details: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for e in reversed(self.plant.audit.find("relay.message.refused", actor=actor)):
                d = e.get("details") or {}
                if (resource is None or e.get("resource") == resource) and all(
                    d.get(k) == v for k, v in details.items()
                ):
                    return dict(e)
            return None

        return self._wait(found, f"the audit record refusing {actor}", timeout_s=30)
