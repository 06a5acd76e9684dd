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

With ``audit_denials`` the broker logs at debug level and `LogTail` turns each
``Denied PUBLISH`` line into a refusal the appliance audits and counts (Mosquitto itself has
already answered the MQTT 5 client with PUBACK reason 0x87, not authorized).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pki.errors import MalformedIdentityError
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.ledger import LedgerEntry
from policies import Policy
from policies.broker_config import BrokerSettings, Registry, TlsFiles, render_brokers
from relay.config import ManagedBroker
from relay.deathsig import preexec_die_with_parent
from relay.errors import BrokerStartUpstreamError, RelayConfigError

_log = logging.getLogger("relay.brokers")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
REVOKED_FILE = "revoked.txt"  # read by the revoke plugin (relay/native/idmz_revoke.c)


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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)
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
) -> tuple[RenderedFiles, bool, bool]:
    """Render both brokers into ``directory``; return the paths and whether each changed.

    With ``revoke_plugin`` (the compiled `relay.revoke_plugin`) the OT broker loads it and
    ``revoked_devices`` are written, one per line, to ``revoked.txt`` (atomically: the plugin
    reads it on SIGHUP). The OT ACL is reported as changed when that file changed.

    With ``policy_document`` (the source name and text ``policy`` was loaded from) a copy is
    written next to the configs as ``policy.toml`` (``policy.yaml`` for a YAML source), so the
    directory is a complete deployment that ``idmz policy check --deployment`` can judge: it
    needs the policy the configs were rendered from.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = RenderedFiles(
        directory / "ot.conf", directory / "it.conf", directory / "ot.acl", directory / "it.acl"
    )

    def settings(b: ManagedBroker, name: str, acl: Path) -> BrokerSettings:
        (directory / f"{name}-data").mkdir(exist_ok=True, mode=0o700)
        return BrokerSettings(
            port=b.port,
            tls=TlsFiles(str(b.cafile), str(b.certfile), str(b.keyfile), str(crl_path)),
            acl_file=str(acl),
            bind_address=b.bind_address,
            persistence_dir=str(directory / f"{name}-data"),
            log_dest=(f"file {directory / f'{name}.log'}",),
            run_as_user=run_as_user,
        )

    rendered = render_brokers(
        policy,
        registry,
        ot=settings(ot, "ot", files.ot_acl),
        it=settings(it, "it", files.it_acl),
    )
    # The relay keeps many QoS 1 messages in flight and the OT broker must hold a backlog for
    # the relay's persistent session while the relay is down (nothing dropped silently).
    extra = [
        "",
        "# added by the relay appliance",
        "max_inflight_messages 1000",
        "max_queued_messages 0",
        "persistent_client_expiration 14d",
        "autosave_interval 30",
    ]
    if audit_denials:
        extra.append("log_type debug")
    ot_extra = list(extra)
    revoked_changed = False
    if revoke_plugin is not None:
        revoked_file = directory / REVOKED_FILE
        ot_extra += [
            "# evicts revoked devices on SIGHUP; defers every other decision to acl_file",
            f"plugin {_conf_path(revoke_plugin)}",
            f"plugin_opt_revoked_file {_conf_path(revoked_file)}",
        ]
        revoked_changed = _write(revoked_file, "".join(f"{d}\n" for d in sorted(revoked_devices)))
    ot_conf = rendered.ot.config + "\n".join(ot_extra) + "\n"
    it_conf = rendered.it.config + "\n".join(extra) + "\n"
    acl_changed = _write(files.ot_acl, rendered.ot.acl) or revoked_changed
    it_changed = _write(files.it_acl, rendered.it.acl)
    _write(files.ot_config, ot_conf)
    _write(files.it_config, it_conf)
    if policy_document is not None:
        source, text = policy_document
        yaml = Path(source).suffix.lower() in (".yaml", ".yml")
        _write(directory / ("policy.yaml" if yaml else "policy.toml"), text)
    return files, acl_changed, it_changed


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


_CONNECTED = re.compile(r"New client connected from \S+ as (\S+) \(.*u'([^']*)'\)")
_DENIED = re.compile(r"Denied PUBLISH from (\S+) \(d\d, q\d, r\d, m\d+, '([^']*)'")


class LogTail:
    """Follows a broker log and reports ``Denied PUBLISH`` lines as (username, topic)."""

    def __init__(self, path: Path, on_denied: Callable[[str, str], None]) -> None:
        self._path = path
        self._on_denied = on_denied
        self._users: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tail-{path.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        offset = self._path.stat().st_size if self._path.exists() else 0
        pending = b""
        while not self._stop.wait(0.2):
            try:
                size = self._path.stat().st_size
                if size < offset:
                    offset = 0
                if size == offset:
                    continue
                with self._path.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read(min(size - offset, 8 << 20))
            except OSError:
                continue
            offset += len(data)
            chunk = pending + data
            lines = chunk.split(b"\n")
            pending = lines.pop()
            for raw in lines:
                if b"New client connected" not in raw and b"Denied PUBLISH" not in raw:
                    continue
                line = raw.decode("utf-8", "replace")
                m = _CONNECTED.search(line)
                if m:
                    if len(self._users) > 100_000:
                        self._users.clear()
                    self._users[m.group(1)] = m.group(2)
                    continue
                m = _DENIED.search(line)
                if m:
                    self._on_denied(
                        self._users.get(m.group(1), f"client-id:{m.group(1)}"), m.group(2)
                    )
