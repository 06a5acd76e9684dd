"""``idmz policy check``: inspect a deployment (policy, broker configs, ACLs, certificates,
CRLs) and report what would let traffic or trust bypass the policy.

Pure: the caller gathers the files into a `Deployment` and passes ``now``; `check_deployment`
returns a `Report` of `Finding`s (rule id, severity, file, line, message, fix hint). Rule ids
are stable; docs/policies.md lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from policies.broker_config import KEPT_LAST_CRL_MARK
from policies.certificates import (
    CRL_WARN_BEFORE,
    check_certificates,
    check_crl,
    load_pem_certificates,
    read_crl_next_update,
)
from policies.document import CertificatePolicy, Policy, StaleCrlMode, Zone
from policies.errors import PolicyConfigError
from policies.findings import Finding, Findings, Severity
from policies.loader import load_policy
from policies.mosquitto_conf import MosquittoConfig, Section, parse_acl, parse_config
from policies.release_deployment import check_release_deployment
from policies.sparkplug_grants import sparkplug_ot_writes


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    policy_hash: str | None
    checked_files: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "policy_sha256": self.policy_hash,
            "checked_files": list(self.checked_files),
            "findings": [asdict(f) for f in self.findings],
        }

    def to_text(self) -> str:
        lines = []
        for f in self.findings:
            where = f"{f.file}:{f.line}" if f.line else f.file
            lines += [
                f"{f.severity.upper():7} {f.rule:28} {where}",
                f"        {f.message}",
                f"        fix: {f.fix}",
            ]
        errors = sum(f.severity is Severity.ERROR for f in self.findings)
        warnings = len(self.findings) - errors
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(
            f"{verdict}: {errors} error(s), {warnings} warning(s) in {len(self.checked_files)} file(s)"
        )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class BrokerConfigFile:
    name: str  # as shown in findings
    text: str


@dataclass(frozen=True, slots=True)
class Deployment:
    """Everything the check reads. ``files`` maps each path *as written in a config*
    (acl_file, cafile, certfile, crlfile) to its bytes; a missing file is simply absent."""

    policy_name: str | None
    policy_text: str | None
    configs: tuple[BrokerConfigFile, ...]
    files: Mapping[str, bytes] = field(default_factory=dict)
    extra_certificates: Mapping[str, bytes] = field(default_factory=dict)  # other *.pem in DIR
    release: BrokerConfigFile | None = None  # release.toml: the release repository (ADR 0100)


def _zone_of(cfg: BrokerConfigFile) -> Zone:
    for raw in cfg.text.splitlines()[:10]:
        if raw.startswith("# idmz-zone:"):
            value = raw.partition(":")[2].strip()
            if value in ("ot", "it"):
                return Zone(value)
    base = cfg.name.rsplit("/", 1)[-1]
    # Unknown broker: hold it to the OT rules, the strictest.
    return Zone.IT if base.startswith("it") else Zone.OT


def _check_listener(
    c: Findings, name: str, zone: Zone, conf: MosquittoConfig, lst: Section
) -> None:
    where = f"listener {lst.name}" + (" (the default listener)" if lst.kind == "default" else "")
    zone_name = zone.upper()
    has_tls = lst.get("certfile") is not None and lst.get("keyfile") is not None
    if lst.get("psk_hint") is not None and not has_tls:
        c.error("listener.psk", name, lst.line, f"{where} uses TLS-PSK: no per-device certificate identity",
                "use certificates: certfile, keyfile, cafile, require_certificate true")  # fmt: skip
    if not has_tls:
        c.error("listener.plaintext", name, lst.line,
                f"{zone_name} broker {where} has no TLS (certfile/keyfile): traffic and identity are unprotected",
                "remove the listener or add cafile, certfile, keyfile, require_certificate true")  # fmt: skip
        return
    req = lst.get("require_certificate")
    if req is None or req.value != "true":
        c.error("listener.client_cert_optional", name, req.line if req else lst.line,
                f"{zone_name} broker {where} does not require a client certificate",
                "set require_certificate true on the listener")  # fmt: skip
    ident = lst.get("use_identity_as_username")
    plugin = conf.security(lst, "plugin")
    rules = conf.security(lst, "plugin_opt_rules_file")
    # The idmz broker plugin binds a listener without use_identity_as_username itself: it takes
    # the identity from the certificate and checks the client id at CONNECT (ADR 0058).
    bound_by_plugin = (
        plugin is not None and rules is not None and Path(plugin.value).name.startswith("idmz_")
    )
    if (ident is None or ident.value != "true") and not bound_by_plugin:
        c.error("listener.identity_not_username", name, ident.line if ident else lst.line,
                f"{where}: without use_identity_as_username the ACL cannot bind a connection to its certificate CN",
                "set use_identity_as_username true")  # fmt: skip
    elif (
        ident is not None
        and ident.value == "true"
        and ((cid := lst.get("use_username_as_clientid")) is None or cid.value != "true")
    ):
        # Mosquitto asks no plugin at CONNECT on such a listener: only this binds the id.
        c.error("listener.client_id_unbound", name, lst.line,
                f"{where}: clients choose their client id, so one identity can take over another's "
                "session (the relay's included)",
                "set use_username_as_clientid true, or bind client ids with the idmz broker plugin")  # fmt: skip
    version = lst.get("tls_version")
    if version is None:
        # mosquitto.conf(5) for 2.0.11: unset allows TLS 1.3 and 1.2. Mosquitto 1.x allowed
        # 1.0/1.1 when unset, so the guarantee would rest on the broker's version: pin it.
        c.warn("tls.version_unset", name, lst.line,
               f"{where} sets no tls_version: TLS 1.2+ only because Mosquitto 2.0's default says so "
               "(1.x brokers also accepted TLS 1.0/1.1)",
               "set tls_version tlsv1.2 (or tlsv1.3)")  # fmt: skip
    elif version.value not in ("tlsv1.2", "tlsv1.3"):
        c.error("tls.version_below_1_2", name, version.line, f"{where} allows {version.value}, below TLS 1.2",
                "set tls_version tlsv1.2 (or tlsv1.3)")  # fmt: skip
    protocol = lst.get("protocol")
    if protocol is not None and protocol.value == "websockets":
        c.warn("listener.websockets", name, protocol.line,
               f"{where} speaks WebSockets, where Mosquitto 2.0 does not check the CRL",
               "serve MQTT over TLS (protocol mqtt) so revoked certificates are refused")  # fmt: skip
    anon = conf.security(lst, "allow_anonymous")
    if anon is not None and anon.value == "true":
        c.error("auth.anonymous", name, anon.line, f"anonymous clients may connect to {where}",
                "set allow_anonymous false")  # fmt: skip
    acl = conf.security(lst, "acl_file")
    plugin = conf.security(lst, "plugin") or conf.security(lst, "auth_plugin")
    if acl is None and plugin is None:
        c.error("acl.missing", name, lst.line,
                f"{where} has no acl_file: every authenticated client may publish and subscribe anywhere",
                "render the ACL with `idmz policy render` and set acl_file")  # fmt: skip
    elif acl is None and plugin is not None:
        c.warn("acl.plugin_unchecked", name, plugin.line, f"{where} authorizes with a plugin this check cannot read",
               "prefer the rendered acl_file, or review the plugin's rules")  # fmt: skip


def _bridge_targets(bridge: Section) -> list[str]:
    out = []
    for key in ("address", "addresses"):
        for opt in bridge.multi.get(key, []):
            out += opt.value.replace(",", " ").split()
    return out


def _check_bridges(
    c: Findings, name: str, zone: Zone, conf: MosquittoConfig, ot_ports: set[str]
) -> None:
    for bridge in conf.bridges:
        targets = _bridge_targets(bridge)
        # An address without a port means Mosquitto's default, 1883.
        toward_ot_broker = any(
            (t.rpartition(":")[2] if ":" in t else "1883") in ot_ports for t in targets
        )
        for topic in bridge.multi.get("topic", []):
            words = topic.value.split()
            direction = words[1] if len(words) > 1 else "out"
            if zone is Zone.OT and direction in ("in", "both"):
                c.error("flow.bridge_toward_ot", name, topic.line,
                        f"bridge {bridge.name!r} brings messages from {', '.join(targets) or 'a remote broker'} into the OT-facing broker",
                        "remove the bridge: nothing flows toward OT; IT data leaves through the relay only")  # fmt: skip
            elif zone is Zone.OT and direction == "out":
                c.warn("flow.bridge_bypasses_relay", name, topic.line,
                       f"bridge {bridge.name!r} forwards OT traffic without the relay's identity, payload and audit checks",
                       "remove the bridge and let the relay forward")  # fmt: skip
            elif zone is Zone.IT and direction in ("out", "both"):
                if toward_ot_broker:
                    c.error("flow.bridge_toward_ot", name, topic.line,
                            f"bridge {bridge.name!r} on the IT-facing broker sends messages to the OT-facing broker",
                            "remove the bridge: nothing flows from IT toward OT")  # fmt: skip
                else:
                    c.warn("flow.bridge_out_of_it", name, topic.line,
                           f"bridge {bridge.name!r} sends IT-broker messages to {', '.join(targets) or 'a remote broker'}",
                           "confirm the target is not in or toward the OT zone, or remove the bridge")  # fmt: skip


def _check_acl(
    c: Findings, name: str, zone: Zone, text: str, relay_user: str | None,
    sparkplug: Mapping[str, frozenset[str]],
) -> None:  # fmt: skip
    """``sparkplug``: the exact OT topics the policy gives each identity outside its path (its
    Sparkplug node's, and the relay's STATE; ADR 0110)."""
    for e in parse_acl(text):
        if not e.writes:
            continue
        if "+" in e.topic or "#" in e.topic:
            c.error("acl.wildcard_write", name, e.line,
                    f"{e.kind} {e.access} {e.topic!r} for {e.user or 'every client'}: a wildcard publish right",
                    "grant exact topics only (`idmz policy render` writes them per identity)")  # fmt: skip
            continue
        if e.kind == "pattern":
            if not e.topic.startswith("%u/"):
                c.error("acl.write_outside_identity", name, e.line,
                        f"pattern {e.access} {e.topic!r} lets every client write outside its own identity path",
                        "use per-identity `user` blocks")  # fmt: skip
            continue
        if e.user is None:
            c.error("auth.anonymous", name, e.line, f"ACL grants anonymous clients write on {e.topic!r}",
                    "move the line under a `user` block or delete it")  # fmt: skip
        elif (
            zone is Zone.OT
            and not e.topic.startswith(e.user + "/")
            and e.topic not in sparkplug.get(e.user, ())
        ):
            c.error("acl.write_outside_identity", name, e.line,
                    f"user {e.user!r} may write {e.topic!r}, outside its own path (on OT only devices publish, under their own path)",
                    "grant each device its own <path>/<sub-topic> only")  # fmt: skip
        elif zone is Zone.IT and relay_user is not None and e.user != relay_user:
            c.error("acl.it_write_not_relay", name, e.line,
                    f"user {e.user!r} may publish on the IT-facing broker; only the relay ({relay_user}) may",
                    "IT consumers are read-only: use `topic read`")  # fmt: skip


def _ot_ports(configs: list[tuple[BrokerConfigFile, Zone, MosquittoConfig]]) -> set[str]:
    return {lst.name for _, zone, conf in configs if zone is Zone.OT for lst in conf.listeners}


def _kept_last_crl(config_text: str) -> str | None:
    """The crlfile the relay left out under on_stale_crl = keep-last (its marker comment)."""
    for raw in config_text.splitlines():
        if raw.startswith(KEPT_LAST_CRL_MARK):
            return raw.removeprefix(KEPT_LAST_CRL_MARK).strip() or None
    return None


def _check_without_crlfile(
    c: Findings,
    cfg: BrokerConfigFile,
    zone: Zone,
    lst: Section,
    policy: Policy | None,
    files: Mapping[str, bytes],
    now: datetime,
) -> None:
    """A listener without crlfile is an error, unless the relay left it out because the zone
    chose keep-last and the CRL named by the marker really is stale (ADR 0036): a warning."""
    where = f"listener {lst.name}"
    kept = _kept_last_crl(cfg.text)
    next_update = read_crl_next_update(files.get(kept)) if kept else None
    mode = policy.on_stale_crl.get(zone) if policy else None
    if kept and mode is StaleCrlMode.KEEP_LAST and next_update is not None and next_update <= now:
        c.warn("crl.kept_last", cfg.name, lst.line,
               f"{where} runs without crlfile: {kept} passed nextUpdate at {next_update:%Y-%m-%d %H:%M}Z "
               f"and zone {zone} chose on_stale_crl = keep-last; revocations published before then are "
               "enforced by the ACL and the revoke plugin, later ones only by the relay",
               "republish the CRL on the CA host (idmz ca crl); the relay restores crlfile by itself")  # fmt: skip
        return
    c.error("crl.not_configured", cfg.name, lst.line, f"{where} has no crlfile: revoked certificates are accepted",
            "set crlfile to the CA's crl.pem")  # fmt: skip


def check_deployment(
    deployment: Deployment, *, now: datetime, crl_warn_before: timedelta = CRL_WARN_BEFORE
) -> Report:
    """Run every rule over ``deployment`` as of ``now`` (timezone-aware); a CRL closer than
    ``crl_warn_before`` to its nextUpdate is a warning (``crl.expiring``)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (certificate and CRL times are UTC)")
    c = Findings()
    policy: Policy | None = None
    if deployment.policy_text is None:
        c.error("policy.missing", deployment.policy_name or "policy.toml", None,
                "the deployment has no policy document", "copy the policy in (`idmz policy render` does)")  # fmt: skip
    else:
        try:
            policy = load_policy(deployment.policy_text, source=deployment.policy_name or "")
        except PolicyConfigError as exc:
            c.error(
                "policy.invalid",
                deployment.policy_name or "policy",
                exc.line,
                str(exc),
                "fix the document",
            )
    cert_policy = policy.certificates if policy else CertificatePolicy()
    relay_user = policy.relay.identity.path if policy else None
    if not deployment.configs:
        c.error(
            "broker.missing",
            ".",
            None,
            "no broker configuration (*.conf) found",
            "run `idmz policy render`",
        )

    parsed = [(cfg, _zone_of(cfg), parse_config(cfg.text)) for cfg in deployment.configs]
    ot_ports = _ot_ports(parsed)
    seen_certs: set[str] = set()
    for cfg, zone, conf in parsed:
        for inc in conf.includes:
            c.warn("config.include_dir", cfg.name, inc.line, f"include_dir {inc.value} is not checked",
                   "render everything into one file")  # fmt: skip
        for lst in conf.listeners:
            _check_listener(c, cfg.name, zone, conf, lst)
            cafile = lst.get("cafile")
            ca_certs = (
                load_pem_certificates(deployment.files.get(cafile.value, b"")) if cafile else []
            )
            crl = lst.get("crlfile")
            if crl is not None:
                check_crl(
                    c, crl.value, deployment.files.get(crl.value), ca_certs, now, crl_warn_before
                )
            else:
                _check_without_crlfile(c, cfg, zone, lst, policy, deployment.files, now)
            for key in ("cafile", "certfile"):
                opt = lst.get(key)
                if opt is not None and opt.value not in seen_certs:
                    seen_certs.add(opt.value)
                    check_certificates(
                        c, opt.value, deployment.files.get(opt.value), cert_policy, now
                    )
        _check_bridges(c, cfg.name, zone, conf, ot_ports)
        acls = {o.value: o for lst in conf.listeners if (o := conf.security(lst, "acl_file"))}
        for acl in acls.values():
            text = deployment.files.get(acl.value)
            if text is None:
                c.error("acl.unreadable", cfg.name, acl.line, f"acl_file {acl.value} is missing",
                        "render it with `idmz policy render`")  # fmt: skip
            else:
                _check_acl(c, acl.value, zone, text.decode("utf-8", "replace"), relay_user,
                           sparkplug_ot_writes(policy) if policy else {})  # fmt: skip
    if deployment.release is not None:
        check_release_deployment(c, deployment.release.name, deployment.release.text)
    for fname, data in sorted(deployment.extra_certificates.items()):
        if fname not in seen_certs:
            check_certificates(c, fname, data, cert_policy, now)
    files = [
        deployment.policy_name or "",
        *(cfg.name for cfg in deployment.configs),
        deployment.release.name if deployment.release else "",
        *deployment.files,
        *deployment.extra_certificates,
    ]
    return Report(
        tuple(c.findings),
        policy.content_hash if policy else None,
        tuple(sorted({f for f in files if f})),
    )


REFERENCED_OPTIONS = ("acl_file", "cafile", "certfile", "crlfile")


def referenced_paths(config_text: str) -> list[str]:
    """The file paths a broker config names (``acl_file``, ``cafile``, ``certfile``,
    ``crlfile``), as written, for the caller to read into `Deployment.files`."""
    conf = parse_config(config_text)
    kept = _kept_last_crl(config_text)
    found: list[str] = [kept] if kept else []
    for section in (conf.global_section, *conf.listeners, *conf.bridges):
        for key in REFERENCED_OPTIONS:
            for opt in section.multi.get(key, []):
                if opt.value and opt.value not in found:
                    found.append(opt.value)
    return found
