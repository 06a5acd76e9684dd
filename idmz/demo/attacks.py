"""Acts 3 and 4: attacks from both sides are refused, and a compromised device is revoked and
cut off. Each attempt uses real certificates with ``mosquitto_pub``; each refusal is confirmed
where it must show: the broker's PUBACK reason code, the audit log, the relay's or the gateway's
metrics, and the absence of the message behind a barrier.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from bedrock.clock import utc_now
from idmz.demo.layout import HISTORIAN, PRESS_1, PRESS_2
from idmz.demo.observe import http_text, metric, parse_ts
from idmz.demo.runner import StepFailedError
from idmz.demo.scene import NOT_AUTHORIZED, Scene, clip, envelope


@dataclass
class Attacks(Scene):
    cutoff_at: datetime | None = None
    cutoff_index: int | None = None  # the relay's cut-off record in the audit log

    # -- act 3 ---------------------------------------------------------------------------

    def spoof(self) -> str:
        gw2 = self.plant.press2.credentials
        marker = f"spoof-{secrets.token_hex(6)}"
        topic = f"{PRESS_1}/events/anomaly"
        body = envelope(PRESS_1, marker, "anomaly", {"asset": "press01", "score": 0.0})
        started = utc_now()
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
        body = envelope(PRESS_1, marker, "anomaly", {"asset": "press01", "score": 0.0})
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
        started = utc_now()
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
        self.cutoff_at = parse_ts(cutoff.get("time")) or utc_now()
        self.cutoff_index = int(cutoff["seq"])
        crl_at = parse_ts(revoked[-1].get("time")) if revoked else None
        took = f"{(self.cutoff_at - crl_at).total_seconds():.1f} s" if crl_at else "soon"
        crl = re.search(r"CRL #(\d+)", out)
        return (
            f"key-compromise: CRL #{crl.group(1) if crl else '?'} published; the relay saw it and "
            f"cut press-02 off {took} later (both audited)\n"
            f"idmz provisioning revoke {PRESS_2} --reason key-compromise"
        )

    def cut_off(self) -> str:
        if self.cutoff_at is None:
            raise StepFailedError("press-02 cannot be cut off before its certificate is revoked")
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
        self._flowing_after(self.plant.historian, after, "IT historian")  # press-01 still flows
        gw2 = self.plant.press2.credentials

        def refused_at_tls() -> str | None:
            msg_id = f"after-revoke-{secrets.token_hex(4)}"
            done = self._pub(
                "revoked-reconnect", self.plant.ports.ot, gw2 / "cert.pem", gw2 / "key.pem",
                f"{PRESS_2}/status", envelope(PRESS_2, msg_id, "status", {}),
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
        evicted = (
            "OT-facing broker's revoke plugin evicted it (no broker restart)"
            if restarts == 0
            else f"OT-facing broker restarted without it ({restarts:.0f}×, no revoke plugin)"
        )
        return (
            f"{evicted}: session dropped, "
            f"reconnects refused at TLS{caught}; {held:.0f} message(s) stuck in its outbox; "
            "nothing from it at IT since; press-01 still flowing\n"
            f"mosquitto_pub --cert press-02/cert.pem  →  {clip(reason, 110)}"
        )
