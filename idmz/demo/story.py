"""Acts 1-6: the story the plant tells once it runs. Each step acts like an operator or an
attacker would (a control file on the simulator, ``mosquitto_pub`` with real certificates,
``idmz provisioning revoke``, ``idmz audit``) and passes only on evidence from an independent
place: the gateway's local alarm file, the IT historian's own ``mosquitto_sub``, an OT-side
observer, the audit log, the relay's and gateways' metrics.

Negative claims ("nothing reached IT") are checked behind a barrier, never after a fixed sleep:
the path is known to have carried a later message from the honest gateway first.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bedrock.clock import utc_now
from idmz.demo.attacks import Attacks
from idmz.demo.layout import PRESS_1
from idmz.demo.observe import Message, read_jsonl
from idmz.demo.release_act import ReleaseAct
from idmz.demo.runner import Step, StepFailedError
from idmz.demo.scene import Scene, cert_sha256, clip
from idmz.demo.wear import BASELINE_S, TRAINING, UNSEEN, parse_rows, rul_lines
from policies.envelope import (
    CERT_SHA256_PROPERTY,
    DEVICE_PROPERTY,
    MSG_ID_PROPERTY,
    POLICY_SHA256_PROPERTY,
)


@dataclass
class Story(Scene):
    fault_at: datetime | None = None
    alarm: dict[str, Any] | None = None
    attacks: Attacks = field(init=False)
    release: ReleaseAct = field(init=False)

    def __post_init__(self) -> None:
        self.attacks = Attacks(self.plant)
        self.release = ReleaseAct(self.plant)

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
                    Step("remaining useful life from run-to-failure histories", self.wear),
                ],
            ),
            (
                "Act 3 · Attacks are refused",
                [
                    Step(
                        "a device spoofing press-01's path is refused", self.attacks.spoof, (relay,)
                    ),
                    Step(
                        "a forged envelope is refused by the relay", self.attacks.forged, (relay,)
                    ),
                    Step("an IT client cannot write toward OT", self.attacks.it_to_ot, (relay,)),
                ],
            ),
            (
                "Act 4 · A compromised device is revoked",
                [
                    Step("press-02 revoked", self.attacks.revoke, ("provisioning", relay)),
                    Step("press-02 is cut off and stays out", self.attacks.cut_off, (gw2, relay)),
                ],
            ),
            ("Act 5 · A retrained model, canary first", self.release.steps()),
            (
                "Act 6 · The auditor's view",
                [
                    Step("audit log verified against the pinned key", self.verify_audit),
                    Step("the cut-off record proven in the log, offline", self.proof),
                    Step("HTML compliance report written", self.report),
                ],
            ),
        ]

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
        self.fault_at = utc_now()
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
        if self.fault_at is None:
            raise StepFailedError("no local alarm is expected before the fault is injected")
        path = self.plant.press1.alarms
        alarms = self._wait(lambda: read_jsonl(path), "an alarm in the gateway's local alarm file")
        self.alarm = alarm = alarms[0]
        score, threshold = float(alarm["score"]), float(alarm["threshold"])
        if score <= threshold:
            raise StepFailedError(f"alarm score {score} is not above threshold {threshold}")
        after = (utc_now() - self.fault_at).total_seconds()
        return (
            f"{alarm['asset']}: score {score:.1f} > threshold {threshold:.2f} "
            f"(model {alarm['model_version']}), within {after:.1f} s of the fault\n"
            f"the alarm file on the gateway itself: {path}"
        )

    def anomaly_at_it(self) -> str:
        if self.alarm is None:
            raise StepFailedError("the anomaly cannot reach IT before the gateway raised an alarm")
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
            DEVICE_PROPERTY: PRESS_1,
            CERT_SHA256_PROPERTY: cert_sha256(self.plant.press1.credentials / "cert.pem"),
            POLICY_SHA256_PROPERTY: self.plant.policy_hash,
            MSG_ID_PROPERTY: str(msg.body.get("id")),
        }
        wrong = [f"{k}={p.get(k)!r} (expected {v!r})" for k, v in want.items() if p.get(k) != v]
        if wrong:
            raise StepFailedError("provenance does not match: " + "; ".join(wrong))
        return (
            f"{msg.topic}, provenance checked: device, certificate sha256, policy sha256, message id\n"
            + clip(f"historian: {msg.topic} {' '.join(f'{k}:{v}' for k, v in p.items())}", 220)
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

    def proof(self) -> str:
        """An inclusion proof an auditor checks with the pinned key and nothing else."""
        index = self.attacks.cutoff_index
        if index is None:
            raise StepFailedError("no cut-off record to prove")
        path = self.plant.layout.pinned_audit_key.parent / f"entry-{index}.tlog-proof"
        self.plant.idmz("audit-proof", "audit", "proof", "--index", str(index), "--out", str(path))
        out = self.plant.idmz(
            "audit-verify-proof", "audit", "verify-proof", "--key", self._pinned_key(), str(path)
        )
        ok = next((line for line in out.splitlines() if line.startswith("ok:")), "")
        if not ok:
            raise StepFailedError(f"`idmz audit verify-proof` did not say ok:\n{out}")
        return (
            f"press-02's relay.device.cutoff: {ok.removeprefix('ok: ')}, checked with the pinned "
            f"key and the proof file alone\n{path}"
        )

    def report(self) -> str:
        path = self.plant.layout.report
        until = (utc_now() + timedelta(minutes=1)).isoformat(timespec="seconds")
        self.plant.idmz(
            "audit-report", "audit", "report", "--from", self.plant.started_at, "--to", until,
            "--format", "html", "--out", str(path), "--key", self._pinned_key(),
        )  # fmt: skip
        if not path.exists() or path.stat().st_size == 0:
            raise StepFailedError(f"no report at {path}")
        return f"{path}\nopen it in a browser: {path.resolve().as_uri()}"

    def wear(self) -> str:
        """Fit prognostics on three bearing lives, replay an unseen fourth (idmz/demo/wear.py)."""
        d = self.plant.layout.root / "wear"
        d.mkdir(exist_ok=True)
        runs = [str(r.write(d / f"life{i}.npz")) for i, r in enumerate(TRAINING)]
        unseen = UNSEEN.write(d / "unseen.npz")
        model = d / "rtf.onnx"
        self.plant.idmz(
            "model-train-rtf", "model", "train", "--run-to-failure", *runs, "--out", str(model),
            "--baseline-s", BASELINE_S, "--band-low", "500", "--band-high", "2000",
        )  # fmt: skip
        printed = self.plant.idmz(
            "model-score", "model", "score", "--model", str(model), "--recording", str(unseen),
            "--json",
        )  # fmt: skip
        lines, wrong = rul_lines(parse_rows(printed), UNSEEN.life_s)
        if wrong:
            raise StepFailedError("; ".join(wrong))
        return (
            f"idmz model train --run-to-failure (3 lives), idmz model score on an unseen "
            f"{UNSEEN.life_s / 60:.0f}-minute life:\n" + "\n".join(lines)
        )
