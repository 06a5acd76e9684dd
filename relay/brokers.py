"""Managed Mosquitto brokers: render from the policy, start, supervise, reload, restart.

Configuration and ACLs come from `policies.render_brokers` (the one renderer), with the device
and consumer registry taken from the CA ledger: every identity the CA issued a certificate to
and that is not fully revoked. The appliance calls `MosquittoProcess.reload` (SIGHUP: ACL file
and CRL re-read, for new connections) when the registry changes. Mosquitto 2.0 does not
re-check connected clients against a new CRL, so the OT broker (only it) loads the revoke plugin
(`relay.revoke_plugin`, relay/native/idmz_revoke.c) with ``revoked.txt`` rendered here: on
SIGHUP it disconnects exactly the listed devices and refuses them on every ACL check, deferring
every other decision to the rendered acl_file. Without the plugin the appliance calls `restart`
instead (docs/adr/0051-live-revocation.md, docs/adr/0057-revoke-plugin.md).

Both brokers load the plugin when it could be built: it binds every session to its certificate
(client id = identity or ``<identity>:<suffix>``), decides the ACLs from the rendered rules and,
with ``audit_denials``, appends every refusal to ``<zone>-refusals.log``, which the appliance
reads with `relay.broker_refusals.RefusalTail` (ADR 0058). Without the plugin the rendered
acl_file decides and ``use_username_as_clientid`` binds the client id.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bedrock.files import write_atomic
from pki.errors import MalformedIdentityError
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.ledger import LedgerEntry
from policies import Policy
from policies.broker_config import (
    BrokerPlugin,
    BrokerSettings,
    Registry,
    TlsFiles,
    render_brokers,
)
from relay.config import ManagedBroker
from relay.deathsig import preexec_die_with_parent
from relay.errors import BrokerStartUpstreamError, RelayConfigError

_log = logging.getLogger("relay.brokers")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
REVOKED_FILE = "revoked.txt"  # read by the revoke plugin (relay/native/idmz_revoke.c)
REPORT_FILE = "{zone}-refusals.log"  # appended by the plugin, read by relay.broker_refusals


def registry_from_ledger(
    entries: Iterable[LedgerEntry], revoked_devices: frozenset[str]
) -> Registry:
    devices: set[DeviceIdentity] = set()
    consumers: set[ConsumerIdentity] = set()
    for e in entries:
        try:
            if e.profile == "device" and e.subject not in revoked_devices:
                devices.add(DeviceIdentity.parse(e.subject))
            elif e.profile == "consumer" and e.revoked_at is None:
                consumers.add(ConsumerIdentity.parse(e.subject))
        except MalformedIdentityError:
            _log.warning("ledger subject %r is not an identity path; ignored", e.subject)
    return Registry(tuple(sorted(devices)), tuple(sorted(consumers, key=str)))


@dataclass(frozen=True, slots=True)
class RenderedFiles:
    ot_config: Path
    it_config: Path
    ot_acl: Path
    it_acl: Path


def _write(path: Path, text: str) -> bool:
    """Write atomically; return True when the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    # Not durable: the broker configuration is rendered again at every start.
    write_atomic(path, text.encode(), 0o640, durable=False)
    return True


def _conf_path(path: Path) -> str:
    # Mosquitto splits option values at whitespace: such a path would load something else.
    text = str(path)
    if any(c.isspace() for c in text):
        raise RelayConfigError(f"Mosquitto cannot take a path with whitespace; found {text!r}")
    return text


def render_files(
    policy: Policy,
    registry: Registry,
    *,
    ot: ManagedBroker,
    it: ManagedBroker,
    crl_path: Path,
    directory: Path,
    audit_denials: bool,
    run_as_user: str | None,
    policy_document: tuple[str, str] | None = None,
    revoke_plugin: Path | None = None,
    revoked_devices: frozenset[str] = frozenset(),
    without_crl: frozenset[str] = frozenset(),
) -> tuple[RenderedFiles, bool, bool]:
    """Render both brokers into ``directory``; return the paths and whether each changed.

    With ``revoke_plugin`` (the compiled `relay.revoke_plugin`) both brokers load it (ADR
    0058): ``revoked_devices`` are written, one per line, to the OT broker's ``revoked.txt``
    (atomically: the plugin reads it on SIGHUP; the IT broker's ``it-revoked.txt`` is empty),
    the ACL grants to ``<zone>.rules``, and with ``audit_denials`` the plugin reports refusals
    to ``<zone>-refusals.log``. A broker's ACL is reported as changed when any of its files
    changed.

    With ``policy_document`` (the source name and text ``policy`` was loaded from) a copy is
    written next to the configs as ``policy.toml`` (``policy.yaml`` for a YAML source), so the
    directory is a complete deployment that ``idmz policy check --deployment`` can judge: it
    needs the policy the configs were rendered from.

    The brokers named in ``without_crl`` (``"ot"``, ``"it"``) are rendered without ``crlfile``:
    their zone's ``on_stale_crl = "keep-last"`` is in effect (ADR 0036).
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = RenderedFiles(
        directory / "ot.conf", directory / "it.conf", directory / "ot.acl", directory / "it.acl"
    )
    revoked = {"ot": directory / REVOKED_FILE, "it": directory / f"it-{REVOKED_FILE}"}

    def plugin(name: str) -> BrokerPlugin | None:
        if revoke_plugin is None:
            return None
        report = directory / REPORT_FILE.format(zone=name)
        return BrokerPlugin(
            path=_conf_path(revoke_plugin),
            revoked_file=_conf_path(revoked[name]),
            rules_file=_conf_path(directory / f"{name}.rules"),
            report_file=_conf_path(report) if audit_denials else None,
            bound_port=(ot if name == "ot" else it).bound_port,
        )

    def settings(b: ManagedBroker, name: str, acl: Path) -> BrokerSettings:
        (directory / f"{name}-data").mkdir(exist_ok=True, mode=0o700)
        return BrokerSettings(
            port=b.port,
            tls=TlsFiles(
                str(b.cafile),
                str(b.certfile),
                str(b.keyfile),
                str(crl_path),
                unsafe_without_crl=name in without_crl,
            ),
            acl_file=str(acl),
            bind_address=b.bind_address,
            persistence_dir=str(directory / f"{name}-data"),
            log_dest=(f"file {directory / f'{name}.log'}",),
            run_as_user=run_as_user,
            max_queued_messages=b.max_queued_messages,
            plugin=plugin(name),
        )

    rendered = render_brokers(
        policy,
        registry,
        ot=settings(ot, "ot", files.ot_acl),
        it=settings(it, "it", files.it_acl),
    )
    # The relay keeps many QoS 1 messages in flight and the OT broker holds a backlog for the
    # relay's persistent session while the relay is down, up to max_queued_messages (rendered
    # above); beyond it Mosquitto drops and counts ($SYS), which the appliance alarms on.
    # No debug log: it would show every client's SUBSCRIBE, the relay's secret share group
    # included (review S5); refusals come from the plugin's report instead.
    extra = [
        "",
        "# added by the relay appliance",
        "max_inflight_messages 1000",
        "persistent_client_expiration 14d",
        "autosave_interval 30",
        # $SYS/broker/publish/messages/dropped, which the appliance watches, every 5 s.
        "sys_interval 5",
    ]
    changed = {"ot": False, "it": False}
    if revoke_plugin is not None:
        for name, zone in (("ot", rendered.ot), ("it", rendered.it)):
            listed = revoked_devices if name == "ot" else frozenset()
            changed[name] |= _write(revoked[name], "".join(f"{d}\n" for d in sorted(listed)))
            changed[name] |= _write(directory / f"{name}.rules", zone.rules)
    conf_tail = "\n".join(extra) + "\n"
    acl_changed = _write(files.ot_acl, rendered.ot.acl) or changed["ot"]
    it_changed = _write(files.it_acl, rendered.it.acl) or changed["it"]
    _write(files.ot_config, rendered.ot.config + conf_tail)
    _write(files.it_config, rendered.it.config + conf_tail)
    if policy_document is not None:
        source, text = policy_document
        yaml = Path(source).suffix.lower() in (".yaml", ".yml")
        _write(directory / ("policy.yaml" if yaml else "policy.toml"), text)
    return files, acl_changed, it_changed


def free_port(bind_address: str) -> int:
    """A port the kernel considers free on ``bind_address`` now (for a listener the appliance
    renders without a configured port; Mosquitto binds it moments later)."""
    host = "127.0.0.1" if bind_address in ("", "0.0.0.0") else bind_address  # noqa: S104
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoProcess:
    """One supervised Mosquitto. Restarted when it exits unexpectedly."""

    def __init__(
        self,
        name: str,
        config: Path,
        host: str,
        port: int,
        mosquitto: str,
        *,
        on_crash: Callable[[int | None], None] | None = None,
    ) -> None:
        """``on_crash(returncode)`` runs when it exited without being asked to, before it is
        started again (the appliance tells the workers what the broker may have lost)."""
        self.name, self.config, self.host, self.port = name, config, host, port
        self._on_crash = on_crash
        self._mosquitto = mosquitto
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self._paused = False
        self.log_path = config.with_suffix(".log")
        self.stderr_path = config.with_suffix(".stderr")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        with self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                [self._mosquitto, "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # a ^C to the appliance's group is not a broker stop
                # The kernel stops it (SIGTERM) if the appliance dies without stopping it.
                preexec_fn=functools.partial(preexec_die_with_parent, os.getpid()),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _port_open(self.host, self.port):
                _log.info(
                    "%s broker up on %s:%d (pid %d)",
                    self.name,
                    self.host,
                    self.port,
                    self._proc.pid,
                )
                return
            time.sleep(0.05)
        tail = self.stderr_path.read_text(errors="replace")[-2000:]
        raise BrokerStartUpstreamError(
            f"{self.name} broker did not start on {self.host}:{self.port}; mosquitto said:\n{tail}"
        )

    def reload(self) -> None:
        """SIGHUP: re-read the ACL file and (for new TLS handshakes) the CRL."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        """Stop cleanly (persistence is written) and start again with the same config."""
        with self._lock:
            self._stop_locked()
            self.restarts += 1
            self._start_locked()

    def pause(self) -> None:
        """Stop it and do not restart it until `resume` (maintenance; fault tests)."""
        with self._lock:
            self._paused = True
            self._stop_locked()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            if self._proc is None or self._proc.poll() is not None:
                self._start_locked()

    def supervise(self) -> bool:
        """Restart if it died; return True when it had to."""
        with self._lock:
            if self._paused or self._proc is None or self._proc.poll() is None:
                return False
            _log.error("%s broker exited with %s; restarting", self.name, self._proc.returncode)
            if self._on_crash is not None:
                self._on_crash(self._proc.returncode)
            self.restarts += 1
            self._start_locked()
            return True

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
