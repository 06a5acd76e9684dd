"""Act 5 of the demo (ADR 0100): a retrained model reaches one gateway as a canary, without a
restart, with its change record (the repository is set up in `idmz.demo.release_setup`).

Evidence comes from independent places: the IT historian's ``mosquitto_sub`` sees press-01's
features scored by the new model and its status reporting the release; the gateway process is
the one started at set-up; the audit log holds the publication and the activation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bedrock.clock import utc_now
from idmz.demo.layout import PRESS_1
from idmz.demo.observe import Message
from idmz.demo.release_setup import LINE
from idmz.demo.runner import Step, StepFailedError
from idmz.demo.scene import Scene


@dataclass
class ReleaseAct(Scene):
    version: str = ""
    release: int = 0
    published_at: Any = None
    gateway_pid: int | None = None
    status_lines: list[str] = field(default_factory=list)

    def steps(self) -> list[Step]:
        gw = "gateway-press-01"
        return [
            Step("a retrained model is published as a canary of one", self.publish, ("release",)),
            Step("press-01 runs it, without a restart", self.activated, (gw, "release")),
            Step("the change record reaches the auditor", self.change_record, ("relay",)),
        ]

    def publish(self) -> str:
        plant = self.plant
        train = plant.children["model-retrain"]
        plant.procs.wait_for(lambda: not train.alive(), what="retraining", timeout_s=180)
        if train.process.returncode != 0:
            raise StepFailedError(f"`idmz model train` exited {train.process.returncode}")
        self.gateway_pid = plant.children["gateway-press-01"].process.pid
        self.published_at = utc_now()
        out = plant.idmz(
            "release-publish", "release", "publish", "--kind", "model",
            "--file", str(plant.layout.model / "retrained.onnx"), "--to", LINE,
            "--stage", "canary:1", "--reason", "retrained on this week's healthy data",
        )  # fmt: skip
        record = json.loads(out[out.index("{") : out.rindex("}") + 1])
        if record["canary"] != [PRESS_1]:
            raise StepFailedError(f"the canary is {record['canary']}, expected [{PRESS_1}]")
        self.version, self.release = record["version"], record["release"]
        return (
            f"release {self.release} ({self.version}) to {LINE}, canary {PRESS_1} (press-02 is "
            f"revoked, so not a candidate); sha256 {record['sha256'][:16]}…"
        )

    def activated(self) -> str:
        def scored_by_new_model() -> Message | None:
            for m in reversed(self.plant.historian.where(device=PRESS_1, kind="features")):
                if m.data.get("model_version") == self.version:
                    return m
            return None

        features = self._wait(
            scored_by_new_model, f"press-01 features scored by {self.version}", 120
        )

        def reports_it() -> list[Message] | None:
            found = [
                m for m in self.plant.historian.where(device=PRESS_1, kind="status")
                if (m.data.get("release") or {}).get("running", {}).get("model") == self.release
            ]  # fmt: skip
            return found or None

        statuses = self._wait(reports_it, f"press-01's status reporting release {self.release}")
        self.status_lines = [json.dumps(m.body) for m in statuses]
        child = self.plant.children["gateway-press-01"]
        if not child.alive() or child.process.pid != self.gateway_pid:
            raise StepFailedError("press-01's gateway process was restarted")
        score = features.data.get("score")
        return (
            f"the historian sees press-01's features scored by {self.version} (score {score}); "
            f"same gateway process (pid {self.gateway_pid}); status: release {self.release}"
        )

    def change_record(self) -> str:
        path = self.plant.layout.captures / "press-01-status.jsonl"
        path.write_text("\n".join(self.status_lines) + "\n")
        self.plant.idmz("release-reports", "release", "reports", "--from", str(path))
        published = self.plant.audit.find("release.change.published", resource=f"model/{LINE}")
        activated = self.plant.audit.find("edge.release.activated", actor=PRESS_1)
        if not published or not activated:
            raise StepFailedError("the publication or the activation is not in the audit log")
        who = published[-1].get("actor")
        return (
            f"release.change.published by {who} (reason: {published[-1].get('reason')}); "
            f"edge.release.activated by {PRESS_1}; the report (act 6) lists both under change control"
        )
