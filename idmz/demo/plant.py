"""Act 0: build the plant in a box, through the parts' own command lines.

Every certificate key is generated where it is used (``openssl`` for the IDMZ's own services and
the IT consumer, ``idmz enroll`` on each gateway); the CA writes the names. The gateways enroll
at first boot with a one-time token and the pinned root fingerprint, exactly as in the field.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bedrock.clock import utc_now
from idmz.demo.configs import gateway_toml, relay_toml
from idmz.demo.layout import (
    AUDIT_ORIGIN,
    HISTORIAN,
    MODEL_SIGNER,
    PRESS_1,
    PRESS_2,
    RELAY,
    DemoLayout,
    Gateway,
)
from idmz.demo.observe import CAPTURE_FORMAT, AuditTail, Capture, http_json
from idmz.demo.ports import Ports, pick_ports, port_open
from idmz.demo.processes import DemoProcesses
from idmz.demo.release_setup import start_release_repository as release_repo
from idmz.demo.runner import Step, StepFailedError
from idmz.home import generate_secret_file, write_secret_file
from idmz.supervisor import Child

HEALTHY_TRAINING_S = "60"  # seconds of simulated healthy vibration the model is fitted on


def repo_policy() -> Path:
    """The example plant policy the repository ships (deploy/policy/plant.toml)."""
    return Path(__file__).resolve().parents[2] / "deploy" / "policy" / "plant.toml"


@dataclass
class Plant:
    layout: DemoLayout
    procs: DemoProcesses
    ports: Ports = field(default_factory=pick_ports)
    fingerprint: str = ""
    policy_hash: str = ""
    model_version: str = ""
    threshold: float = 0.0
    children: dict[str, Child] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: utc_now().isoformat(timespec="seconds"))
    ca_backend: str = "local"  # "vault": an OpenBao dev server (idmz.demo.openbao)

    def __post_init__(self) -> None:
        self.press1 = self.layout.gateway("press-01", PRESS_1)
        self.press2 = self.layout.gateway("press-02", PRESS_2)
        self.historian = Capture(self.layout.captures / "historian.tsv")
        self.ot_observer = Capture(self.layout.captures / "ot-observer.tsv")
        self.audit = AuditTail(self.layout.audit)

    @property
    def relay_health_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.relay_health}"

    def _start(self, name: str, argv: list[str], stdout_path: Path | None = None) -> Child:
        child = self.procs.start(name, argv, stdout_path=stdout_path)
        self.children[name] = child
        return child

    def start_child(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = self.procs.start(name, argv, extra_env=env)
        self.children[name] = child
        return child

    def idmz(self, name: str, *args: str, timeout_s: float = 60.0) -> str:
        return self.procs.idmz(name, *args, timeout_s=timeout_s)

    # -- steps ---------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        return [
            Step("simulated stamping line and model training started", self.background),
            Step("audit log started, its verifier key pinned by the auditor", self.audit_log),
            Step("certificate authority created", self.ca),
            Step("IDMZ certificates issued from CSRs", self.certificates),
            Step("provisioning service up", self.provisioning, ("provisioning",)),
            Step("gateways registered, one-time tokens minted", self.register),
            Step("gateways enrolled at first boot", self.enroll, ("provisioning",)),
            Step("a replayed enrollment token is refused", self.replayed_token, ("provisioning",)),
            Step("anomaly model trained on healthy data and signed", self.model, ("model-train",)),
            Step("release repository up in the IDMZ", lambda: release_repo(self), ("release",)),
            Step("relay up with brokers rendered from the policy", self.relay, ("relay",)),
            Step("deployment passes `idmz policy check`", self.deployment_check),
            Step("stamping line serving OPC UA and Modbus TCP", self.simulator, ("simulator",)),
            Step("IT historian subscribed (independent mosquitto_sub)", self.subscribers),
            Step(
                "gateways streaming",
                self.gateways,
                ("gateway-press-01", "gateway-press-02", "relay"),
            ),
        ]

    def background(self) -> str:
        """The two slow starters begin now and are waited for when they are needed."""
        self._start(
            "model-train",
            self.procs.idmz_argv(
                "model", "train", "--from-simulator", HEALTHY_TRAINING_S, "--seed", "7",
                "--version", f"demo-{utc_now():%Y%m%dT%H%M%SZ}",
                "--out", str(self.layout.model / "model.onnx"),
            ),
        )  # fmt: skip
        self.layout.sim_control.write_text("{}\n")
        p = self.ports
        self._start(
            "simulator",
            self.procs.idmz_argv(
                "edge", "simulate", "--opcua-port", str(p.opcua), "--modbus-port", str(p.modbus),
                "--seed", "3", "--control", str(self.layout.sim_control),
                "--opcua-security", str(self.layout.opcua_server),
            ),
        )  # fmt: skip
        return (
            f"idmz edge simulate (OPC UA :{p.opcua}, Modbus :{p.modbus}); "
            f"idmz model train --from-simulator {HEALTHY_TRAINING_S}"
        )

    def audit_log(self) -> str:
        self.idmz(
            "audit-start", "audit", "append", "--origin", AUDIT_ORIGIN,
            "--action", "operator.plant.commissioned",
            "--resource", str(self.layout.root), "--reason", "plant in a box started by idmz demo",
        )  # fmt: skip
        vkey = self.idmz("audit-key", "audit", "key").strip().splitlines()[-1]
        self.layout.pinned_audit_key.parent.mkdir(mode=0o700)
        self.layout.pinned_audit_key.write_text(vkey + "\n")
        return f"{self.layout.audit} (origin {AUDIT_ORIGIN}); key {self.layout.pinned_audit_key}"

    def simulator(self) -> str:
        p = self.ports
        server_cert = self.layout.opcua_server / "cert.pem"
        self.procs.wait_for(
            lambda: port_open(p.opcua) and port_open(p.modbus) and server_cert.exists(),
            what="the simulator's OPC UA and Modbus ports",
            watch=[self.children["simulator"]],
        )
        return (
            f"opc.tcp://127.0.0.1:{p.opcua}/idmz/sim (Basic256Sha256, SignAndEncrypt only), "
            f"Modbus TCP 127.0.0.1:{p.modbus}"
        )

    def ca(self) -> str:
        generate_secret_file(self.layout.ca_passphrase)
        if self.ca_backend == "vault":
            from idmz.demo.openbao import vault_ca

            where = vault_ca(self)
        else:
            out = self.idmz("ca-init", "ca", "init", "--organization", "acme")
            m = re.search(r"root fingerprint \(sha256\) ([0-9a-f]{64})", out)
            if not m:
                raise StepFailedError(f"`idmz ca init` printed no root fingerprint:\n{out}")
            self.fingerprint = m.group(1)
            where = f"root + issuing CA in {self.layout.ca}"
        # The enrollment service needs only the CA; it starts while the next step runs.
        self._start(
            "provisioning",
            self.procs.idmz_argv(
                "provisioning", "serve", "--host", "127.0.0.1",
                "--port", str(self.ports.provisioning),
            ),
        )  # fmt: skip
        return f"{where}; root sha256 {self.fingerprint[:16]}…"

    def _csr(self, key: Path) -> Path:
        """A key and CSR made with openssl where the key will live (the CA rewrites the name)."""
        csr = key.with_suffix(".csr")
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        done = self.procs.run(
            f"openssl-{key.stem}",
            [
                shutil.which("openssl") or "openssl", "req", "-new", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=csr",
                "-keyout", str(key), "-out", str(csr),
            ],
        )  # fmt: skip
        if done.returncode != 0 or not csr.exists():
            raise StepFailedError(f"openssl could not make a CSR for {key}:\n{done.output[-400:]}")
        key.chmod(0o600)
        return csr

    def certificates(self) -> str:
        tls, it, model = self.layout.relay_tls, self.layout.historian, self.layout.model
        issued = [
            (tls / "broker.key", "localhost,127.0.0.1", "server", tls / "broker.pem"),
            (tls / "relay.key", RELAY, "consumer", tls / "relay.pem"),
            (it / "historian.key", HISTORIAN, "consumer", it / "historian.pem"),
            (model / "signer.key", MODEL_SIGNER, "model-signer", model / "signer.pem"),
        ]
        for key, identity, profile, cert in issued:
            csr = self._csr(key)
            self.idmz(
                f"ca-issue-{key.stem}", "ca", "issue", "--csr", str(csr), "--identity", identity,
                "--profile", profile, "--out", str(cert),
                "--chain-out", str(cert.with_name(cert.stem + "-chain.pem")),
            )  # fmt: skip
        return (
            "brokers (server, localhost/127.0.0.1), relay and historian (consumer), "
            "model signer; each key made by openssl where it is used"
        )

    def provisioning(self) -> str:
        port = self.ports.provisioning
        self.procs.wait_for(
            lambda: port_open(port),
            what=f"the provisioning service on port {port}",
            watch=[self.children["provisioning"]],
        )
        return f"https://127.0.0.1:{port} (enrollment, EST, renewal over mTLS)"

    def register(self) -> str:
        for gw in (self.press1, self.press2):
            self.idmz(f"device-add-{gw.name}", "provisioning", "device", "add", gw.identity)
            out = self.idmz(
                f"token-{gw.name}", "provisioning", "token", "create", "--device", gw.identity
            )
            # Handed to the gateway as a 0600 file, never on a command line.
            write_secret_file(gw.token_file, out.strip().splitlines()[-1].strip().encode())
        return f"{PRESS_1}, {PRESS_2}; each token single-use, 15 min, handed over in a 0600 file"

    def _enroll(self, gw: Gateway, out: Path, label: str) -> str:
        return self.idmz(
            label, "enroll", "--server", f"https://127.0.0.1:{self.ports.provisioning}",
            "--token-file", str(gw.token_file), "--ca-fingerprint", self.fingerprint,
            "--identity", gw.identity, "--out", str(out),
        )  # fmt: skip

    def enroll(self) -> str:
        lines = []
        for gw in (self.press1, self.press2):
            out = self._enroll(gw, gw.credentials, f"enroll-{gw.name}").strip().splitlines()[-1]
            if (gw.credentials / "key.pem").stat().st_mode & 0o077:
                raise StepFailedError(f"{gw.credentials}/key.pem is readable by others")
            lines.append(out)
        return "keys generated on the gateways (0600), CA pinned by fingerprint\n" + "\n".join(
            lines
        )

    def replayed_token(self) -> str:
        scratch = self.press1.dir / "replay-attempt"
        try:
            self._enroll(self.press1, scratch, "enroll-replayed-token")
        except StepFailedError as exc:
            reason = str(exc).strip().splitlines()[-1]
            if "idmz: error:" not in reason:
                raise
            if (scratch / "cert.pem").exists():
                raise StepFailedError("the replayed token still produced a certificate") from None
            self.procs.wait_for(
                lambda: self.audit.find("provisioning.enroll.refused"),
                what="the refused enrollment in the audit log",
                timeout_s=20,
            )
            return (
                f"press-01's token used again: {reason.removeprefix('idmz: error: ')}; "
                "nothing issued, refusal audited"
            )
        raise StepFailedError("a second enrollment with the same token succeeded")

    def model(self) -> str:
        train = self.children["model-train"]
        self.procs.wait_for(
            lambda: not train.alive(), what="model training", timeout_s=120, interval_s=0.2
        )
        if train.process.returncode != 0:
            raise StepFailedError(f"`idmz model train` exited {train.process.returncode}")
        printed = train.log_path.read_text()
        summary = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
        self.model_version, self.threshold = summary["version"], float(summary["threshold"])
        m = self.layout.model
        self.idmz(
            "model-sign", "model", "sign", "--model", str(m / "model.onnx"),
            "--cert", str(m / "signer.pem"), "--key", str(m / "signer.key"),
            "--chain", str(m / "signer-chain.pem"),
        )  # fmt: skip
        out = self.idmz(
            "model-verify", "model", "verify", "--model", str(m / "model.onnx"),
            "--root", str(self.layout.ca / "root.pem"), "--crl", str(self.layout.ca / "crl.pem"),
        )  # fmt: skip
        verified = json.loads(out)
        windows = summary.get("summary", {}).get("windows", "?")
        return (
            f"{self.model_version}: {windows} healthy windows, threshold {self.threshold:.2f}; "
            f"signed by {verified['signer']}"
        )

    def relay(self) -> str:
        if not repo_policy().is_file():
            raise StepFailedError(
                f"the example policy {repo_policy()} is missing; run the demo from a clone"
            )
        shutil.copyfile(repo_policy(), self.layout.policy)
        out = self.idmz("policy-validate", "policy", "validate", str(self.layout.policy))
        m = re.search(r"content sha256: ([0-9a-f]{64})", out)
        if not m:
            raise StepFailedError(f"`idmz policy validate` printed no content hash:\n{out}")
        self.policy_hash = m.group(1)
        self.layout.relay_toml.write_text(relay_toml(self.layout, self.ports))
        relay = self._start(
            "relay", self.procs.idmz_argv("relay", "run", "--config", str(self.layout.relay_toml))
        )

        def connected() -> bool:
            health = http_json(self.relay_health_url + "/health") or {}
            workers = health.get("workers") or {}
            return bool(workers) and all(
                w.get("ot_connected") and w.get("it_connected") for w in workers.values()
            )

        self.procs.wait_for(
            connected, what="relay workers connected to both brokers", watch=[relay]
        )
        p = self.ports
        return (
            f"OT-facing :{p.ot} (gateways), IT-facing :{p.it} (consumers), 1 worker; "
            f"policy sha256 {self.policy_hash[:12]}…\n"
            f"rendered broker configs and ACLs: {self.layout.broker_dir}"
        )

    def deployment_check(self) -> str:
        # The relay renders its brokers without the policy document; check those very files
        # (they reference the CA, CRL and ACL files by absolute path) next to the policy.
        check = self.layout.deployment_check
        check.mkdir(mode=0o700)
        for conf in sorted(self.layout.broker_dir.glob("*.conf")):
            shutil.copyfile(conf, check / conf.name)
        shutil.copyfile(self.layout.policy, check / "policy.toml")
        out = self.idmz("policy-check", "policy", "check", "--deployment", str(check))
        verdict = out.strip().splitlines()[-1]
        return f"{verdict} (TLS-only, client certificates, no anonymous, no route into OT)"

    def _mosquitto_sub(
        self, name: str, port: int, identity: str, cert: Path, key: Path, topic: str
    ) -> Child:
        """On a bound-id listener, as ``<identity>:demo-<name>`` (ADR 0058)."""
        capture = self.layout.captures / f"{name}.tsv"
        return self._start(
            name,
            [
                shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", "127.0.0.1",
                "-p", str(port), "-V", "mqttv5", "-q", "1", "-i", f"{identity}:demo-{name}",
                "--cafile", str(self.layout.ca / "chain.pem"), "--cert", str(cert),
                "--key", str(key), "-t", topic, "-F", CAPTURE_FORMAT,
            ],
            stdout_path=capture,
        )  # fmt: skip

    def subscribers(self) -> str:
        it = self.layout.historian
        hist = self._mosquitto_sub(
            "historian", self.ports.it_bound, HISTORIAN, it / "historian.pem",
            it / "historian.key", "acme/plant1/#",
        )  # fmt: skip
        # An OT-side observer for act 3: the relay's read-only identity, a plain subscription.
        tls = self.layout.relay_tls
        obs = self._mosquitto_sub(
            "ot-observer", self.ports.ot_bound, RELAY, tls / "relay.pem", tls / "relay.key",
            "acme/#",
        )  # fmt: skip
        logs = self.layout.broker_dir

        def connected(log: Path, client: str) -> bool:
            identity = HISTORIAN if client == "historian" else RELAY
            try:
                return f"as {identity}:demo-{client} " in log.read_text(errors="replace")
            except FileNotFoundError:
                return False

        self.procs.wait_for(
            lambda: (
                connected(logs / "it.log", "historian")
                and connected(logs / "ot.log", "ot-observer")
            ),
            what="the historian and the OT observer connected",
            watch=[hist, obs],
        )
        return (
            f"as {HISTORIAN} on the IT-facing broker, topic acme/plant1/#\n"
            f"mosquitto_sub -V mqttv5 -p {self.ports.it_bound} -i '{HISTORIAN}:demo-historian' "
            f"--cert it/historian/historian.pem -t 'acme/plant1/#' -F '%t %P %p'"
        )

    def gateways(self) -> str:
        # press-01's OPC UA application certificate: its own key, not the MQTT identity.
        self.idmz(
            "opcua-cert-press-01", "edge", "opcua-cert", "--out", str(self.press1.opcua),
            "--uri", "urn:acme:plant1:stamping:press-01-gateway", "--name", "press-01 gateway",
        )  # fmt: skip
        for gw, metrics, model in (
            (self.press1, self.ports.press_1_metrics, True),
            (self.press2, self.ports.press_2_metrics, False),
        ):
            gw.config.write_text(
                gateway_toml(self.layout, gw, self.ports, metrics_port=metrics, with_model=model)
            )
            self._start(
                f"gateway-{gw.name}",
                self.procs.idmz_argv("edge", "run", "--config", str(gw.config)),
            )
        watch = [self.children["gateway-press-01"], self.children["gateway-press-02"]]
        for gw in (self.press1, self.press2):
            self.procs.wait_for(
                functools.partial(self.historian.where, device=gw.identity, kind="telemetry"),
                what=f"telemetry from {gw.name} at the IT historian",
                watch=watch,
            )
        log = self.children["gateway-press-01"].log_tail(40)
        if "SecurityPolicy None" in log:
            raise StepFailedError("press-01 read the PLC over an unsecured OPC UA channel")
        m = re.search(r"model (\S+) verified", log)
        verified = f"press-01 verified model {m.group(1)}" if m else "press-01 model verified"
        return (
            f"{verified}, reads the PLC over OPC UA SignAndEncrypt (server certificate pinned); "
            "both gateways' telemetry reached the IT historian via the relay"
        )
