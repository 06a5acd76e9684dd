"""Group commit for issuance (ADR 0136): the registry writes and audit records of concurrent
enrollments and renewals, batched.

Each request still makes every decision of ADR 0045/0049; what is shared is the transaction
and the fsync. One committer thread per process takes every job queued since its last round
and, for the whole batch:

1. one registry unit: per job, in its own savepoint, the job's own step (consume the token,
   lock the device row and check it again, issue, record the certificate ``pending``). A job
   that refuses rolls back only its savepoint: its token survives, the others go on;
2. one durable audit append (`AuditSink.record_batch`, one fsync) for the jobs that issued;
   if it fails, each of their certificates is revoked and each job fails (no identity without
   its record, ADR 0024);
3. one registry unit activating them, each under its device lock in its own savepoint; a device
   revoked meanwhile refuses that job alone (its certificate is revoked).

Jobs are taken in device-path order within a unit, so two processes' batches lock device rows
in the same order (PostgreSQL) and cannot deadlock on them. A failure of a unit itself (the
database) fails every job of it, as it failed the one request before.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from audit.events import AuditEvent, AuditSink
from pki.authority import IssuedCertificate
from provisioning.errors import DeviceStateError, ProvisioningError, UpstreamError
from provisioning.registry import Registry, Unit

_log = logging.getLogger("provisioning.committer")
Withdraw = Callable[[IssuedCertificate, datetime], None]


@dataclass(eq=False)
class IssuanceJob:
    """One enrollment or renewal past its checks outside the registry: ``step`` runs inside
    the first unit (and may refuse), ``event`` is its audit record once issued."""

    device: str
    now: datetime
    step: Callable[[Unit], IssuedCertificate]
    event: Callable[[IssuedCertificate], AuditEvent]
    issued: IssuedCertificate | None = None
    error: BaseException | None = None
    superseded: bool = False
    ready: threading.Lock = field(default_factory=threading.Lock)


class IssuanceCommitter:
    """Runs `IssuanceJob`s in batches on one thread (started in the process that first submits
    one: a forked worker gets its own)."""

    def __init__(
        self,
        *,
        registry: Registry,
        audit: AuditSink,
        withdraw: Withdraw,
        after_supersession: Callable[[datetime], None],
        max_batch: int = 256,
    ) -> None:
        self._registry = registry
        self._audit = audit
        self._withdraw = withdraw
        self._after_supersession = after_supersession
        self._max_batch = max_batch
        self._queue: list[IssuanceJob] = []
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self.rounds = 0  # batches run in this process (tests and the benchmark read it)
        self._pending = 0  # submitted and not yet finished

    def run(self, job: IssuanceJob) -> IssuedCertificate:
        """Queue ``job``, wait for its batch; its certificate, or its exception raised."""
        job.ready.acquire()  # released by the committer when the job is finished
        with self._wake:
            if self._closed:
                raise UpstreamError("the provisioning service is closing")
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="issuance-committer", daemon=True
                )
                self._thread.start()
            self._queue.append(job)
            self._pending += 1
            self._wake.notify()
        job.ready.acquire()
        if job.error is not None:
            raise job.error
        if job.issued is None:  # never hand out a certificate the committer did not finish
            raise UpstreamError("the issuance committer released a job without a result")
        return job.issued

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished."""
        return self._pending

    def close(self) -> None:
        """Stop the thread once the queued jobs are done; later submissions fail (503)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            try:
                self._commit(sorted(batch, key=lambda j: j.device))
            except BaseException as exc:  # noqa: BLE001 - every waiter must be released
                _log.exception("the issuance committer failed a batch of %d", len(batch))
                for job in batch:
                    if job.error is None:
                        job.error = UpstreamError(f"issuance failed ({type(exc).__name__})")
            finally:
                with self._wake:
                    self.rounds += 1
                    self._pending -= len(batch)
                for job in batch:
                    job.ready.release()

    def _commit(self, batch: list[IssuanceJob]) -> None:
        try:
            with self._registry.unit() as unit:
                for job in batch:
                    try:
                        with unit.savepoint():
                            job.issued = job.step(unit)
                    except ProvisioningError as exc:  # this job refused or failed alone
                        job.error = exc
        except UpstreamError as exc:  # the unit did not commit: nothing of it exists
            for job in batch:
                job.issued, job.error = None, job.error or exc
            return
        issued = [job for job in batch if job.issued is not None]
        if issued:
            self._record(issued)
            self._activate([job for job in issued if job.error is None])

    def _record(self, jobs: list[IssuanceJob]) -> None:
        try:
            self._audit.record_batch([job.event(job.issued) for job in jobs if job.issued])
        except Exception as exc:  # noqa: BLE001 - any failure: none of these may be used
            for job in jobs:
                job.error = self._withdrawn(
                    job,
                    UpstreamError(
                        f"the audit log could not record the issuance of "
                        f"{_serial(job)} for {job.device}; the certificate was revoked"
                    ),
                )
                job.error.__cause__ = exc

    def _activate(self, jobs: list[IssuanceJob]) -> None:
        if not jobs:
            return
        try:
            with self._registry.unit() as unit:
                for job in jobs:
                    try:
                        with unit.savepoint():
                            serial = _serial(job)
                            job.superseded = bool(
                                unit.activate_certificate(
                                    serial, device_path=job.device, now=job.now
                                )
                            )
                    except DeviceStateError as exc:  # revoked while it was being issued
                        job.error = exc
        except UpstreamError as exc:  # still pending: the stale-pending sweep withdraws them
            for job in jobs:
                job.error = job.error or exc
            return
        for job in jobs:
            if isinstance(job.error, DeviceStateError):  # the revocation revoked it; make sure
                job.error = self._withdrawn(job, job.error)
        superseded = [job.now for job in jobs if job.superseded and job.error is None]
        if superseded:
            self._after_supersession(max(superseded))

    def _withdrawn(self, job: IssuanceJob, error: BaseException) -> BaseException:
        """Revoke the job's certificate; the error the job then fails with."""
        if job.issued is None:
            return error
        try:
            self._withdraw(job.issued, job.now)
        except ProvisioningError as exc:
            return exc
        return error


def _serial(job: IssuanceJob) -> str:
    return job.issued.serial_hex if job.issued is not None else "-"


__all__ = ["IssuanceCommitter", "IssuanceJob"]
