"""The relay appliance: managed (or external) brokers, N supervised worker processes, live
revocation and the health/metrics endpoint.

>>> appliance = Appliance(config, audit=audit_log)  # doctest: +SKIP
>>> appliance.start()                               # brokers up, workers connected
>>> appliance.stop()

Worker processes are started with the ``spawn`` method (no state inherited from this process
but the frozen `WorkerConfig`) and restarted when they die. Revocation: a `CrlWatcher` in this
process notices a changed CRL within ``crl_poll_interval_s``; for devices newly revoked the
appliance writes ``relay.device.cutoff``, re-renders the ACLs without them and the revoked-list
file of the managed OT broker's revoke plugin (`relay.revoke_plugin`), and sends SIGHUP: the
plugin disconnects exactly those devices, the broker keeps running and every other gateway
stays connected; their reconnects are refused at TLS (new CRL). Where the plugin cannot be
built (no compiler or Mosquitto headers; logged as a warning at start) the appliance restarts
the OT broker instead, which disconnects everyone once (ADR 0051, ADR 0057). Every worker
refuses their messages on its own from the moment it sees the CRL.

Sessions (ADR 0058): the workers dial the brokers' bound-id listeners with client ids derived
from the relay's secret, which the plugin admits only with the relay's certificate. The
appliance audits what the plugin reports (`relay.broker_refusals.RefusalTail`: refused
publishes and CONNECTs, with the certificate's identity) and each overflow of a broker queue
(`relay.broker_overflow.DroppedWatch`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from audit.errors import AuditError
from audit.events import AuditEvent, AuditSink, Outcome
from pki.ledger import LedgerEntry
from pki.publication import read_ledger
from policies import load_policy
from policies.broker_config import relay_client_id
from relay.broker_overflow import DroppedWatch
from relay.broker_refusals import BrokerRefusal, RefusalTail, broker_refusal_event
from relay.brokers import (
    REPORT_FILE,
    MosquittoProcess,
    free_port,
    registry_from_ledger,
    render_files,
)
from relay.config import ApplianceConfig, ManagedBroker, WorkerConfig
from relay.crl_alarm import CrlAlarm, brokers_without_crl, crlfile_change_event
from relay.errors import RelayConfigError, RevokePluginUnavailableError
from relay.health import HealthServer
from relay.records import cutoff_event
from relay.retention import bump_epoch
from relay.revocation import CrlStatus, CrlWatcher, RevocationState
from relay.revoke_plugin import build_plugin
from relay.share_secret import ensure_share_secret
from relay.sparkplug_state import StatePublisher, state_publisher
from relay.stats import read_snapshots

_log = logging.getLogger("relay.appliance")
_SPAWN = multiprocessing.get_context("spawn")
DROP_ALARM_S = 300.0  # health stays degraded this long after a broker dropped messages
RELOAD_AGAIN_S = 1.0  # a second SIGHUP after a revocation (see _on_revocation)


def run_worker_process(
    config: WorkerConfig, index: int, log_level: str, parent_pid: int | None = None
) -> None:
    """Entry point of a worker process: run until SIGTERM/SIGINT (or its appliance dies)."""
    from audit.log import AuditLog
    from relay.deathsig import die_with_parent
    from relay.links import broker_links
    from relay.worker import Worker

    if parent_pid is not None:
        die_with_parent(parent_pid)

    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fatal: list[str] = []

    def on_fatal(why: str) -> None:
        fatal.append(why)
        stop.set()

    audit = AuditLog.open(config.audit_dir, origin=config.audit_origin)
    worker = Worker(config, index, audit=audit, on_fatal=on_fatal, links=broker_links)
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop()
        audit.close()
    if fatal:
        logging.getLogger("relay.worker").error("worker-%d exits: %s", index, fatal[0])
        sys.exit(3)  # the appliance restarts it after worker_restart_backoff_s


class Appliance:
    def __init__(
        self, config: ApplianceConfig, *, audit: AuditSink, log_level: str = "warning"
    ) -> None:
        self.config = config
        self._audit = audit
        self._log_level = log_level
        wc = config.worker
        self.policy = load_policy(wc.policy_text, source=wc.policy_source)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[multiprocessing.context.SpawnProcess | None] = [None] * config.workers
        self.worker_restarts = 0
        self._broker_refused: Counter[tuple[str, str]] = Counter()
        self._brokers: dict[str, MosquittoProcess] = {}
        self._revoke_plugin: Path | None = None  # compiled at start; None: restart on revocation
        # Followers of the brokers' refusal reports and dropped-message counters.
        self._tails: list[RefusalTail | DroppedWatch] = []
        self._broker_dropped: Counter[str] = Counter()
        self._dropped_at = 0.0  # monotonic time of the last overflow (the alarm)
        self._managed: dict[str, ManagedBroker] = {}  # with their bound-id ports, once started
        self._revocation = RevocationState()
        self._registry_key: tuple[Any, ...] = ()
        self._crl: CrlWatcher | None = None
        # CRL freshness (ADR 0016/0036): alarm, and brokers whose zone keeps the last revocations.
        self._crl_alarm = CrlAlarm(self.policy, record=self._record)
        self._without_crl: frozenset[str] = frozenset()
        if wc.crl_path is not None:
            self._crl = CrlWatcher(
                wc.crl_path,
                wc.issuing_ca_path,
                wc.ledger_path,
                clock=lambda: datetime.now(UTC),
                on_change=self._on_revocation,
                poll_interval_s=wc.limits.crl_poll_interval_s,
                on_freshness=self._on_crl_freshness,
                warn_before=timedelta(seconds=wc.limits.crl_warn_before_s),
            )
        self._health = HealthServer(
            config.health_host, config.health_port, self.snapshots, self.status
        )
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._state: StatePublisher | None = None  # Sparkplug STATE on OT (ADR 0110)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        wc = self.config.worker
        wc.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in wc.state_dir.glob("worker-*.stats.json"):
            old.unlink()
        if self._crl is not None:
            self._revocation = self._crl.load()
            self._crl.check_freshness()  # so the brokers are first rendered for it
        if self.config.managed_ot is not None:
            self._start_brokers()
        for i in range(self.config.workers):
            self._start_worker(i)
        self._state = state_publisher(self.policy, self._bound_endpoints(wc), self._record)
        if self._state is not None:
            self._state.start()
        if self._crl is not None:
            self._crl.start()
        self._health.start()
        self._supervisor.start()
        self._record(
            AuditEvent(
                actor="idmz-relay",
                action="config.relay.started",
                resource="relay",
                outcome=Outcome.SUCCESS,
                after={"policy_sha256": self.policy.content_hash, "workers": self.config.workers},
            )
        )

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10)
        for proc in self._workers:
            if proc is not None and proc.is_alive():
                proc.terminate()
        for proc in self._workers:
            if proc is not None:
                proc.join(timeout=20)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=5)
        if self._crl is not None:
            self._crl.stop()
        if self._state is not None:
            self._state.stop()
        for tail in self._tails:
            tail.stop()
        for broker in self._brokers.values():
            broker.stop()
        it = self._brokers.get("it")
        if it is not None and not it.running():  # stopped cleanly: its state is on disk
            self._it_running_marker.unlink(missing_ok=True)
        self._health.stop()

    @property
    def health_port(self) -> int:
        return self._health.port

    def worker_pids(self) -> list[int | None]:
        with self._lock:
            return [p.pid if p is not None and p.is_alive() else None for p in self._workers]

    def broker(self, name: str) -> MosquittoProcess:
        """The managed ``"ot"`` or ``"it"`` broker (for operators and fault tests)."""
        return self._brokers[name]

    # -- brokers --------------------------------------------------------------------------

    def _ledger_entries(self) -> list[LedgerEntry]:
        path = self.config.worker.ledger_path
        if path is None or not path.exists():
            return []
        with read_ledger(path) as ledger:
            return ledger.entries()

    def _render(self) -> tuple[bool, bool]:
        cfg, wc, managed = self.config, self.config.worker, self.config.managed_brokers()
        registry = registry_from_ledger(self._ledger_entries(), self._revocation.revoked_devices)
        self._registry_key = (registry.devices, registry.consumers)
        _files, ot_changed, it_changed = render_files(
            self.policy,
            registry,
            ot=self._managed.get("ot", managed.ot),
            it=self._managed.get("it", managed.it),
            crl_path=managed.crl_path,
            directory=managed.directory,
            audit_denials=cfg.audit_broker_denials,
            run_as_user=cfg.broker_user or ("root" if os.geteuid() == 0 else None),
            policy_document=(wc.policy_source, wc.policy_text),
            revoke_plugin=self._revoke_plugin,
            revoked_devices=self._revocation.revoked_devices,
            without_crl=self._without_crl,
        )
        return ot_changed, it_changed

    def _bound_endpoints(self, worker: WorkerConfig) -> WorkerConfig:
        """Managed brokers with the plugin: the workers dial the bound-id listeners, where each
        keeps its own session under ``<relay identity>:<suffix>`` (ADR 0058)."""
        if self._revoke_plugin is None or not self._managed:
            return worker
        ot_port, it_port = self._managed["ot"].bound_port, self._managed["it"].bound_port
        return dataclasses.replace(
            worker,
            ot=worker.ot if ot_port is None else dataclasses.replace(worker.ot, port=ot_port),
            it=worker.it if it_port is None else dataclasses.replace(worker.it, port=it_port),
        )

    def _start_brokers(self) -> None:
        cfg, managed = self.config, self.config.managed_brokers()
        try:
            self._revoke_plugin = build_plugin()
        except RevokePluginUnavailableError as exc:
            if cfg.workers > 1:
                # Without the plugin the brokers force client id = certificate CN, and the
                # workers share one certificate: they would keep displacing each other.
                raise RelayConfigError(
                    f"{cfg.workers} workers need the idmz broker plugin (session binding, "
                    f"ADR 0058), which cannot be built: {exc}"
                ) from exc
            _log.warning(
                "revoke plugin unavailable, so the rendered acl_file decides, broker refusals are "
                "not audited, and a revoked device is disconnected by restarting the OT-facing "
                "broker (every gateway reconnects once): %s",
                exc,
            )
        if self._revoke_plugin is not None:
            # The bound-id listeners, on a free port unless configured (ADR 0058).
            self._managed = {
                name: b
                if b.bound_port is not None
                else dataclasses.replace(b, bound_port=free_port(b.bind_address))
                for name, b in (("ot", managed.ot), ("it", managed.it))
            }
        self._render()
        for name, b in (("ot", managed.ot), ("it", managed.it)):
            # A broker bound to every interface is dialled on loopback.
            wildcard = b.bind_address in ("0.0.0.0", "")  # noqa: S104 - comparing, not binding
            host = "127.0.0.1" if wildcard else b.bind_address
            proc = MosquittoProcess(
                name, managed.directory / f"{name}.conf", host, b.port, cfg.mosquitto_path,
                on_crash=self._on_it_crash if name == "it" else None,
            )  # fmt: skip
            if name == "it" and self._it_running_marker.exists():
                bump_epoch(self.config.worker.state_dir,
                           "the previous run ended without stopping the IT broker")  # fmt: skip
            proc.start()
            if name == "it":
                self._it_running_marker.touch(mode=0o600)
            self._brokers[name] = proc
            if self._revoke_plugin is not None and cfg.audit_broker_denials:
                tail = RefusalTail(
                    managed.directory / REPORT_FILE.format(zone=name),
                    functools.partial(self._on_broker_refusal, name),
                )
                tail.start()
                self._tails.append(tail)
        if self._revoke_plugin is not None:
            self._watch_overflow()

    @property
    def _it_running_marker(self) -> Path:
        """Present while the managed IT broker runs; removed once it is stopped cleanly."""
        return self.config.worker.state_dir / "it-broker.running"

    def _on_it_crash(self, returncode: int | None) -> None:
        # Before it is started again, so a worker's first connection to it already knows.
        bump_epoch(self.config.worker.state_dir, f"the IT broker exited with {returncode}")

    def _watch_overflow(self) -> None:
        """Each broker's dropped-message counter ($SYS), read on the bound-id listener with a
        client id of the relay's own (ADR 0058)."""
        wc = self._bound_endpoints(self.config.worker)
        secret = ensure_share_secret(wc.share_secret_file or wc.state_dir / "share-secret")
        for name, endpoint in (("ot", wc.ot), ("it", wc.it)):
            cid = relay_client_id(self.policy, secret, 0, "sys")
            watch = DroppedWatch(name, endpoint, cid, self._on_broker_dropped)
            watch.start()
            self._tails.append(watch)

    def _on_broker_dropped(self, broker: str, dropped: int, total: int) -> None:
        """A full client queue made the broker drop messages: audited, counted, alarmed."""
        _log.error(
            "ALARM: the %s-facing broker dropped %d message(s) (queue full, "
            "max_queued_messages); %d since it started",
            broker.upper(),
            dropped,
            total,
        )
        with self._lock:
            self._broker_dropped[broker] += dropped
            self._dropped_at = time.monotonic()
        self._record(
            AuditEvent(
                actor="idmz-relay",
                action="relay.broker.overflow",
                resource=f"{broker}-broker",
                outcome=Outcome.FAILURE,
                reason=(
                    f"queue_full: the {broker.upper()}-facing broker dropped messages past "
                    "max_queued_messages (a client's queue was full)"
                ),
                details={"code": "queue_full", "broker": broker, "count": dropped, "total": total},
            )
        )

    def _on_broker_refusal(self, broker: str, refusal: BrokerRefusal) -> None:
        """Audit what the broker plugin refused, with the certificate's identity (ADR 0058)."""
        with self._lock:
            self._broker_refused[(broker, refusal.identity)] += refusal.count
        self._record(broker_refusal_event(broker, refusal))

    def _on_revocation(self, old: RevocationState, new: RevocationState) -> None:
        self._revocation = new
        added = sorted(new.revoked_devices - old.revoked_devices)
        for device in added:
            self._record(cutoff_event(device, new.crl_number, "idmz-relay"))
        if self.config.managed_ot is not None and "ot" not in self._brokers:  # first load
            return
        if self.config.managed_ot is None:
            if added:
                _log.warning(
                    "external OT broker: %d device(s) revoked; the relay refuses their messages, "
                    "but disconnecting them is the broker operator's job (reload its CRL)",
                    len(added),
                )
            return
        self._render()  # ACLs without them; the plugin's revoked file with them
        if added and self._revoke_plugin is None:
            _log.warning(
                "revoked %s: restarting the OT-facing broker to close their sessions "
                "(no revoke plugin)",
                ", ".join(added),
            )
            self._brokers["ot"].restart()
            return
        if added:
            _log.warning(
                "revoked %s: the OT-facing broker's revoke plugin disconnects them (SIGHUP)",
                ", ".join(added),
            )
        # SIGHUP: the new CRL for new handshakes, the ACLs, and the plugin kicks the revoked.
        # Also for a re-issued CRL that revokes nobody new (fresh nextUpdate, Mosquitto #1826).
        self._brokers["ot"].reload()
        self._brokers["it"].reload()  # its crlfile is the same CRL (ADR 0016)
        if added and not self._stop.wait(RELOAD_AGAIN_S):
            # Mosquitto 2.0.11 drops a SIGHUP that arrives while it is still reloading (seen in
            # tests/relay/test_revoke_plugin.py). The plugin notices its file by itself, but the
            # CRL that refuses their reconnects at TLS is re-read only on SIGHUP: send another.
            self._brokers["ot"].reload()

    def _on_crl_freshness(self, old: CrlStatus, new: CrlStatus) -> None:
        self._crl_alarm.changed(old, new, crl_number=self._revocation.crl_number)
        without = brokers_without_crl(self.policy, new)
        if self.config.managed_ot is None or without == self._without_crl:
            return  # external brokers: the alarm only
        changed, self._without_crl = without ^ self._without_crl, without
        if self._brokers:  # else (at start) the first render uses it
            self._render()
        for name in sorted(changed):
            # Mosquitto does not re-read listener options on SIGHUP: a restart drops/restores it.
            if name in self._brokers:
                self._brokers[name].restart()
            self._record(
                crlfile_change_event(
                    name,
                    dropped=name in without,
                    status=new,
                    crl_path=str(self.config.worker.crl_path),
                )
            )

    # -- supervision ----------------------------------------------------------------------

    def _start_worker(self, index: int) -> None:
        worker = dataclasses.replace(
            self._bound_endpoints(self.config.worker),
            shared_subscription=self.config.workers > 1,
        )
        proc = _SPAWN.Process(
            target=run_worker_process,
            args=(worker, index, self._log_level, os.getpid()),
            name=f"idmz-relay-worker-{index}",
            daemon=False,
        )
        proc.start()
        with self._lock:
            self._workers[index] = proc

    def _supervise(self) -> None:
        last_registry = time.monotonic()
        while not self._stop.wait(0.2):
            for broker in self._brokers.values():
                try:
                    broker.supervise()
                except Exception:  # noqa: BLE001 - a supervisor keeps supervising; logged
                    _log.exception("restarting the %s broker failed", broker.name)
            for i, proc in enumerate(list(self._workers)):
                if proc is not None and not proc.is_alive() and not self._stop.is_set():
                    _log.error("worker %d exited with %s; restarting", i, proc.exitcode)
                    proc.join(timeout=1)
                    self.worker_restarts += 1
                    self._stop.wait(self.config.worker_restart_backoff_s)
                    if not self._stop.is_set():
                        self._start_worker(i)
            if self._brokers and time.monotonic() - last_registry > 2.0:
                last_registry = time.monotonic()
                try:
                    before = self._registry_key
                    ot_changed, it_changed = self._render()
                    if self._registry_key != before:
                        if ot_changed:
                            self._brokers["ot"].reload()
                        if it_changed:
                            self._brokers["it"].reload()
                except Exception:  # noqa: BLE001 - a supervisor keeps supervising; logged
                    _log.exception("re-rendering broker ACLs failed")

    # -- reporting ------------------------------------------------------------------------

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return read_snapshots(self.config.worker.state_dir)

    def status(self) -> dict[str, Any]:
        alive = sum(1 for pid in self.worker_pids() if pid is not None)
        problems = []
        if alive < self.config.workers:
            problems.append(f"{self.config.workers - alive} worker(s) down (restarting)")
        for b in self._brokers.values():
            if not b.running():
                problems.append(f"{b.name} broker down (restarting)")
        problems += self._crl_alarm.problems()
        with self._lock:
            refused = dict(self._broker_refused)
            dropped = dict(self._broker_dropped)
            recent_drop = self._dropped_at and time.monotonic() - self._dropped_at < DROP_ALARM_S
        if recent_drop:
            problems.append("a broker dropped messages: a client queue is full (see the audit log)")
        return {
            "broker_dropped": dropped,
            "workers_alive": alive,
            "worker_restarts": self.worker_restarts,
            "broker_restarts": {n: b.restarts for n, b in self._brokers.items()},
            "broker_refused": refused,
            "crl": self._crl_alarm.report(),
            "problems": problems,
        }

    def _record(self, event: AuditEvent) -> None:
        try:
            self._audit.record(event)
        except AuditError:
            _log.exception("ALARM: could not audit %s", event.action)
