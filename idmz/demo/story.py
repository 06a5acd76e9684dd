"""Acts 1-5: the story the plant tells once it runs. Each step acts like an operator or an
attacker would (a control file on the simulator, ``mosquitto_pub`` with real certificates,
``idmz provisioning revoke``, ``idmz audit``) and passes only on evidence from an independent
place: the gateway's local alarm file, the IT historian's own ``mosquitto_sub``, an OT-side
observer, the audit log, the relay's and gateways' metrics.

Negative claims ("nothing reached IT") are checked behind a barrier, never after a fixed sleep:
the path is known to have carried a later message from the honest gateway first.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from idmz.demo.layout import HISTORIAN, PRESS_1, PRESS_2
from idmz.demo.observe import (
    Capture,
    Message,
    http_text,
    metric,
    now_utc,
    parse_ts,
    read_jsonl,
)
from idmz.demo.plant import Plant
from idmz.demo.processes import Completed
from idmz.demo.runner import Step, StepFailedError

PUBACK_RC = re.compile(r"received PUBACK \(Mid: \d+, RC:(\d+)\)")
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87
T = TypeVar("T")


def _envelope(device: str, msg_id: str, kind: str, data: dict[str, Any]) -> str:
    ts = now_utc().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"v": 1, "id": msg_id, "ts": ts, "device": device, "kind": kind, "data": data}
    return json.dumps(body, separators=(",", ":"))


def _cert_sha256(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _clip(text: str, n: int = 150) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass
class Story:
    plant: Plant
    fault_at: datetime | None = None
    alarm: dict[str, Any] | None = None
    cutoff_at: datetime | None = None

    def acts(self) -> list[tuple[str, list[Step]]]:
        gw1, gw2, relay = "gateway-press-01", "gateway-press-02", "relay"
        return [
            (
                "Act 1 · Healthy operation",
                [Step("healthy telemetry and features reach IT", self.healthy, (gw1, relay))],
            ),
            (
                "Act 2 · A bearing starts to fail",
                [
                    Step("outer-race bearing fault injected", self.inject_fault, ("simulator",)),
                    Step("the gateway raises a local anomaly alarm", self.local_alarm, (gw1,)),
                    Step("the anomaly reaches IT through the relay", self.anomaly_at_it, (relay,)),
                    Step("the historian holds contextualized data", self.contextualized),
                ],
            ),
            (
                "Act 3 · Attacks are refused",
                [
                    Step("a device spoofing press-01's path is refused", self.spoof, (relay,)),
                    Step("a forged envelope is refused by the relay", self.forged, (relay,)),
                    Step("an IT client cannot write toward OT", self.it_to_ot, (relay,)),
                ],
            ),
            (
                "Act 4 · A compromised device is revoked",
                [
                    Step("press-02 revoked", self.revoke, ("provisioning", relay)),
                    Step("press-02 is cut off and stays out", self.cut_off, (gw2, relay)),
                ],
            ),
            (
                "Act 5 · The auditor's view",
                [
                    Step("audit log verified against the pinned key", self.verify_audit),
                    Step("HTML compliance report written", self.report),
                ],
            ),
        ]

    # -- helpers -------------------------------------------------------------------------

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

    # -- act 1 ---------------------------------------------------------------------------

    def healthy(self) -> str:
        hist = self.plant.historian

        def three_windows() -> list[Message] | None:
            found = hist.where(device=PRESS_1, kind="features")
            return found if len(found) >= 3 else None

        feats = self._wait(three_windows, "three feature windows from press-01 at the historian")
        scores = [float(m.data.get("score", 0.0)) for m in feats]
        if max(scores) > self.plant.threshold:
            raise StepFailedError(
                f"a healthy window scored {max(scores):.2f} > threshold {self.plant.threshold:.2f}"
            )
        if read_jsonl(self.plant.press1.alarms):
            raise StepFailedError("the gateway raised an alarm while the line was healthy")
        tele = hist.where(device=PRESS_1, kind="telemetry")
        tags = {t.get("name"): t for t in tele[-1].data.get("tags", []) if isinstance(t, dict)}
        shown = [
            f"{n} {t.get('value'):.1f} {t.get('unit')} ({t.get('quality')})"
            for n, t in tags.items()
            if n in ("press_tonnage", "motor_current", "bearing_temperature")
            and isinstance(t.get("value"), int | float)
        ]
        zone = feats[-1].data.get("iso_zone")
        return (
            f"{len(tele)} telemetry batches, {len(feats)} feature windows; anomaly score "
            f"≤ {max(scores):.2f} (threshold {self.plant.threshold:.2f}), ISO 10816 zone {zone}\n"
            + "; ".join(shown)
        )

    # -- act 2 ---------------------------------------------------------------------------

    def inject_fault(self) -> str:
        control = self.plant.layout.sim_control
        self.fault_at = now_utc()
        tmp = control.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fault": "bearing-outer-race"}) + "\n")
        tmp.replace(control)
        sim = self.plant.children["simulator"]
        self._wait(
            lambda: "fault bearing-outer-race injected" in sim.log_tail(20),
            "the simulator to apply the fault",
            timeout_s=20,
        )
        return f"defect at the outer race of the drive-end bearing (SKF 6205), via {control.name}"

    def local_alarm(self) -> str:
        assert self.fault_at is not None
        path = self.plant.press1.alarms
        alarms = self._wait(lambda: read_jsonl(path), "an alarm in the gateway's local alarm file")
        self.alarm = alarm = alarms[0]
        score, threshold = float(alarm["score"]), float(alarm["threshold"])
        if score <= threshold:
            raise StepFailedError(f"alarm score {score} is not above threshold {threshold}")
        after = (now_utc() - self.fault_at).total_seconds()
        return (
            f"{alarm['asset']}: score {score:.1f} > threshold {threshold:.2f} "
            f"(model {alarm['model_version']}), within {after:.1f} s of the fault\n"
            f"local alarm file (works with the uplink down): {path}"
        )

    def anomaly_at_it(self) -> str:
        assert self.alarm is not None
        window = self.alarm["window_start"]
        msg: Message = self._wait(
            lambda: next(
                (
                    m
                    for m in self.plant.historian.where(device=PRESS_1, kind="anomaly")
                    if m.data.get("window_start") == window
                ),
                None,
            ),
            "the same anomaly event at the IT historian",
        )
        p = msg.properties
        want = {
            "idmz-device": PRESS_1,
            "idmz-cert-sha256": _cert_sha256(self.plant.press1.credentials / "cert.pem"),
            "idmz-policy-sha256": self.plant.policy_hash,
            "idmz-msg-id": str(msg.body.get("id")),
        }
        wrong = [f"{k}={p.get(k)!r} (expected {v!r})" for k, v in want.items() if p.get(k) != v]
        if wrong:
            raise StepFailedError("provenance does not match: " + "; ".join(wrong))
        return (
            f"{msg.topic}, provenance checked: device, certificate sha256, policy sha256, message id\n"
            + _clip(f"historian: {msg.topic} {' '.join(f'{k}:{v}' for k, v in p.items())}", 220)
        )

    def contextualized(self) -> str:
        hist = self.plant.historian
        kinds = Counter(m.kind for m in hist.where(device=PRESS_1))
        tele = hist.where(device=PRESS_1, kind="telemetry")[-1]
        tag = next((t for t in tele.data.get("tags", []) if t.get("name") == "press_tonnage"), None)
        needed = {"name", "value", "unit", "quality", "asset", "source_ts"}
        if not isinstance(tag, dict) or not needed <= set(tag):
            raise StepFailedError(f"telemetry tags lack context ({needed}); found {tag}")
        anomaly = hist.where(device=PRESS_1, kind="anomaly")[-1].data
        missing = {"asset", "score", "threshold", "model_version", "features"} - set(anomaly)
        if missing:
            raise StepFailedError(f"the anomaly event lacks {sorted(missing)}")
        counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (
            f"{counts} from press-01, each a JSON envelope with its asset and units\n"
            f"tag {tag['name']} = {tag['value']:.1f} {tag['unit']}, quality {tag['quality']}, "
            f"asset {tag['asset']}; anomaly: score {float(anomaly['score']):.1f}, "
            f"model {anomaly['model_version']}, ISO zone {anomaly.get('iso_zone')}"
        )

    # -- act 3 ---------------------------------------------------------------------------

    def spoof(self) -> str:
        gw2 = self.plant.press2.credentials
        marker = f"spoof-{secrets.token_hex(6)}"
        topic = f"{PRESS_1}/events/anomaly"
        body = _envelope(PRESS_1, marker, "anomaly", {"asset": "press01", "score": 0.0})
        started = now_utc()
        done = self._pub(
            "spoof", self.plant.ports.ot, gw2 / "cert.pem", gw2 / "key.pem", topic, body
        )
        rc = self._puback(done)
        if rc != NOT_AUTHORIZED:
            raise StepFailedError(f"the OT broker answered PUBACK {rc}, not 0x87\n{done.output}")
        record = self._refusal(PRESS_2, topic)
        self._flowing_after(self.plant.historian, started, "IT historian")
        if self.plant.historian.containing(marker):
            raise StepFailedError(f"the spoofed message {marker} reached IT")
        refused = metric(
            http_text(self.plant.relay_health_url + "/metrics"),
            "idmz_relay_broker_refused_total",
            device=PRESS_2,
        )
        if refused < 1:
            raise StepFailedError("the relay's metrics do not count press-02's refused publish")
        return (
            f"press-02's own certificate on press-01's topic: PUBACK 0x87 (not authorized); "
            f"audited as {record['details'].get('code')}, counted in the relay's metrics; "
            "nothing reached IT\n"
            f"mosquitto_pub -V mqttv5 -q 1 --cert press-02/cert.pem -t {topic}  →  PUBACK RC:{rc}"
        )

    def forged(self) -> str:
        gw2 = self.plant.press2.credentials
        marker = f"forged-{secrets.token_hex(6)}"
        topic = f"{PRESS_2}/events/anomaly"
        body = _envelope(PRESS_1, marker, "anomaly", {"asset": "press01", "score": 0.0})
        done = self._pub(
            "forged", self.plant.ports.ot, gw2 / "cert.pem", gw2 / "key.pem", topic, body
        )
        if self._puback(done) is None:
            raise StepFailedError(f"mosquitto_pub got no PUBACK\n{done.output}")
        record = self._refusal(PRESS_2, topic, msg_id=marker)
        code = record["details"].get("code")
        if self.plant.historian.containing(marker):
            raise StepFailedError(f"the forged message {marker} reached IT")
        return (
            f"its own topic, but the envelope claims press-01: the relay refused it ({code}); "
            "audited; nothing reached IT"
        )

    def it_to_ot(self) -> str:
        it = self.plant.layout.historian
        cert, key = it / "historian.pem", it / "historian.key"
        marker = f"it-write-{secrets.token_hex(6)}"
        topic = f"{PRESS_1}/commands"
        body = json.dumps({"id": marker, "command": "stop-press"})
        started = now_utc()
        rc_it = self._puback(self._pub("it-write-it", self.plant.ports.it, cert, key, topic, body))
        rc_ot = self._puback(self._pub("it-write-ot", self.plant.ports.ot, cert, key, topic, body))
        if rc_it != NOT_AUTHORIZED or rc_ot != NOT_AUTHORIZED:
            raise StepFailedError(f"expected PUBACK 0x87 from both brokers; got {rc_it}, {rc_ot}")
        self._refusal(HISTORIAN, topic, broker="it")
        self._refusal(HISTORIAN, topic, broker="ot")
        self._flowing_after(self.plant.ot_observer, started, "OT-side observer")
        if self.plant.ot_observer.containing(marker):
            raise StepFailedError(f"the IT client's message {marker} reached the OT side")
        return (
            "the historian's certificate: PUBACK 0x87 from the IT-facing and the OT-facing "
            "broker, both audited; the OT-side observer saw nothing\n"
            f"mosquitto_pub --cert historian.pem -t {topic} on both brokers  →  PUBACK RC:135"
        )

    # -- act 4 ---------------------------------------------------------------------------

    def revoke(self) -> str:
        out = self.plant.idmz(
            "revoke-press-02", "provisioning", "revoke", PRESS_2, "--reason", "key-compromise"
        )
        audit = self.plant.audit
        cutoff = self._wait(
            lambda: audit.find("relay.device.cutoff", resource=PRESS_2),
            "the relay's cut-off record for press-02",
            timeout_s=30,
        )[-1]
        revoked = audit.find("provisioning.device.revoked", resource=PRESS_2)
        self.cutoff_at = parse_ts(cutoff.get("time")) or now_utc()
        crl_at = parse_ts(revoked[-1].get("time")) if revoked else None
        took = f"{(self.cutoff_at - crl_at).total_seconds():.1f} s" if crl_at else "soon"
        crl = re.search(r"CRL #(\d+)", out)
        return (
            f"key-compromise: CRL #{crl.group(1) if crl else '?'} published; the relay saw it and "
            f"cut press-02 off {took} later (both audited)\n"
            f"idmz provisioning revoke {PRESS_2} --reason key-compromise"
        )

    def cut_off(self) -> str:
        assert self.cutoff_at is not None
        url = f"http://127.0.0.1:{self.plant.ports.press_2_metrics}/metrics"
        self._wait(
            lambda: (
                metric(http_text(url), "idmz_edge_uplink_connected") == 0
                and metric(http_text(url), "idmz_edge_outbox_depth_messages") > 0
            ),
            "press-02's uplink down with messages held in its outbox",
            timeout_s=30,
        )
        after = self.cutoff_at + timedelta(seconds=1)
        self._flowing_after(self.plant.historian, after, "IT historian")  # broker back up
        gw2 = self.plant.press2.credentials

        def refused_at_tls() -> str | None:
            msg_id = f"after-revoke-{secrets.token_hex(4)}"
            done = self._pub(
                "revoked-reconnect", self.plant.ports.ot, gw2 / "cert.pem", gw2 / "key.pem",
                f"{PRESS_2}/status", _envelope(PRESS_2, msg_id, "status", {}),
            )  # fmt: skip
            if self._puback(done) is not None:
                raise StepFailedError(f"a revoked certificate could still publish:\n{done.output}")
            line = next((x for x in done.output.splitlines() if "certificate revoked" in x), None)
            return line.strip() if line else None

        reason = self._wait(refused_at_tls, "the OT broker to refuse press-02 at TLS", 20)
        late = [m for m in self.plant.historian.where(device=PRESS_2) if (m.ts or after) > after]
        if late:
            raise StepFailedError(f"{len(late)} press-02 message(s) reached IT after the cut-off")
        held = metric(http_text(url), "idmz_edge_outbox_depth_messages")
        restarts = metric(
            http_text(self.plant.relay_health_url + "/metrics"),
            "idmz_relay_broker_restarts_total",
            broker="ot",
        )
        in_flight = self.plant.audit.find(
            "relay.message.refused", actor=PRESS_2, code="certificate_revoked"
        )
        caught = (
            f"; {len(in_flight)} in-flight message(s) refused by the relay (audited)"
            if in_flight
            else ""
        )
        return (
            f"OT-facing broker restarted without it ({restarts:.0f}×): session dropped, "
            f"reconnects refused at TLS{caught}; {held:.0f} message(s) stuck in its outbox; "
            "nothing from it at IT since; press-01 still flowing\n"
            f"mosquitto_pub --cert press-02/cert.pem  →  {_clip(reason, 110)}"
        )

    # -- act 5 ---------------------------------------------------------------------------

    def _pinned_key(self) -> str:
        return self.plant.layout.pinned_audit_key.read_text().strip()

    def verify_audit(self) -> str:
        self.plant.idmz("audit-checkpoint", "audit", "checkpoint")
        out = self.plant.idmz("audit-verify", "audit", "verify", "--key", self._pinned_key())
        first = next((line for line in out.splitlines() if line.startswith("ok:")), "")
        if not first:
            raise StepFailedError(f"`idmz audit verify` did not say ok:\n{out}")
        events = self.plant.audit.events()
        refusals = Counter(
            (e.get("details") or {}).get("code", "?")
            for e in events
            if e.get("action") == "relay.message.refused"
        )
        counts = ", ".join(f"{code} ×{n}" for code, n in sorted(refusals.items()))
        actions = Counter(str(e.get("action")) for e in events)
        n = re.search(r"ok: (\d+) entries", first)
        return (
            f"{n.group(1) if n else '?'} entries, Merkle root and signed checkpoint match\n"
            f"refusals: {counts or 'none'}; cut-offs ×{actions['relay.device.cutoff']}; "
            f"enrollments ×{actions['provisioning.enroll.accepted']} "
            f"(refused ×{actions['provisioning.enroll.refused']}); "
            f"certificates issued ×{actions['pki.cert.issued']}"
        )

    def report(self) -> str:
        path = self.plant.layout.report
        until = (now_utc() + timedelta(minutes=1)).isoformat(timespec="seconds")
        self.plant.idmz(
            "audit-report", "audit", "report", "--from", self.plant.started_at, "--to", until,
            "--format", "html", "--out", str(path), "--key", self._pinned_key(),
        )  # fmt: skip
        if not path.exists() or path.stat().st_size == 0:
            raise StepFailedError(f"no report at {path}")
        return f"{path}\nopen it in a browser: {path.resolve().as_uri()}"
