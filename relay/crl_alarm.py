"""What the appliance does about the age of the CRL its brokers load (review M6, ADR 0016/0036).

`CrlAlarm` receives `relay.revocation.CrlWatcher`'s freshness verdicts. Expiring (less than
``crl_warn_before_s`` left) or stale: an error log line, a health problem and the gauge
``idmz_relay_crl_seconds_to_next_update``. Crossing into stale also writes ``relay.crl.stale``
naming each zone's ``on_stale_crl`` choice. `brokers_without_crl` says which managed brokers must
be rendered without ``crlfile`` (their zone chose ``keep-last``); `crlfile_change_event` records
that change when it takes effect (``config.broker.changed``).

>>> alarm = CrlAlarm(policy, record=audit.record)        # doctest: +SKIP
>>> alarm.changed(old_status, new_status, crl_number=7)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from audit.events import AuditEvent, Outcome
from policies.document import Policy, StaleCrlMode, Zone
from relay.revocation import CrlFreshness, CrlStatus

_log = logging.getLogger("relay.crl")
ACTOR = "idmz-relay"
# The managed broker that serves each zone's clients.
BROKER_OF_ZONE = {Zone.OT: "ot", Zone.IT: "it"}


def brokers_without_crl(policy: Policy, status: CrlStatus) -> frozenset[str]:
    """The managed brokers to run without ``crlfile`` now: those whose zone chose keep-last,
    while the CRL is stale. Empty whenever the CRL is not stale."""
    if status.freshness is not CrlFreshness.STALE:
        return frozenset()
    return frozenset(
        BROKER_OF_ZONE[zone]
        for zone, mode in policy.on_stale_crl.items()
        if mode is StaleCrlMode.KEEP_LAST and zone in BROKER_OF_ZONE
    )


def crlfile_change_event(
    broker: str, *, dropped: bool, status: CrlStatus, crl_path: str
) -> AuditEvent:
    """``config.broker.changed`` when keep-last takes effect (crlfile left out) or ends."""
    zone = next(z for z, b in BROKER_OF_ZONE.items() if b == broker)
    with_crl, without = f"crlfile {crl_path}", f"no crlfile (on_stale_crl=keep-last, {crl_path})"
    return AuditEvent(
        actor=ACTOR,
        action="config.broker.changed",
        resource=f"broker/{broker}",
        outcome=Outcome.SUCCESS,
        reason=(
            f"{status.describe()}; zone {zone} chose keep-last: the broker runs on the last known "
            "revocations (ACLs and revoke plugin) until a fresh CRL arrives"
            if dropped
            else f"a fresh CRL arrived ({status.describe()}); crlfile restored"
        ),
        zone="idmz",
        before={"tls": without if not dropped else with_crl},
        after={"tls": without if dropped else with_crl},
    )


class CrlAlarm:
    """The appliance's view of CRL freshness; thread-safe."""

    def __init__(self, policy: Policy, *, record: Callable[[AuditEvent], None]) -> None:
        self._policy = policy
        self._record = record
        self._lock = threading.Lock()
        self._status = CrlStatus(CrlFreshness.UNKNOWN)

    def changed(self, old: CrlStatus, new: CrlStatus, *, crl_number: int | None) -> None:
        with self._lock:
            self._status = new
        modes = {str(z): str(m) for z, m in self._policy.on_stale_crl.items()}
        if new.freshness is CrlFreshness.STALE:
            _log.error(
                "ALARM: %s (CRL #%s); Mosquitto refuses handshakes with it; on_stale_crl: %s. "
                "Republish it on the CA host (idmz ca crl; the provisioning service or "
                "idmz-crl.service should have done so)",
                new.describe(),
                crl_number,
                modes,
            )
            self._record(
                AuditEvent(
                    actor=ACTOR,
                    action="relay.crl.stale",
                    resource=f"crl/{crl_number}",
                    outcome=Outcome.FAILURE,
                    reason=f"{new.describe()}; the CA host did not republish it",
                    zone="idmz",
                    details={
                        "crl_number": crl_number,
                        "next_update": new.next_update.isoformat() if new.next_update else None,
                        **{f"on_stale_crl_{z}": m for z, m in modes.items()},
                    },
                )
            )
        elif new.freshness is CrlFreshness.EXPIRING:
            _log.error(
                "ALARM: %s (CRL #%s): the CA host has not republished it; brokers refuse every "
                "handshake once it passes (on_stale_crl: %s)",
                new.describe(),
                crl_number,
                modes,
            )
        elif new.freshness is CrlFreshness.FRESH and old.freshness is not CrlFreshness.UNKNOWN:
            _log.warning("CRL #%s is fresh again: %s", crl_number, new.describe())

    def problems(self) -> list[str]:
        with self._lock:
            status = self._status
        if status.freshness in (CrlFreshness.EXPIRING, CrlFreshness.STALE):
            return [status.describe()]
        return []

    def report(self) -> dict[str, Any]:
        with self._lock:
            status = self._status
        return {
            "freshness": str(status.freshness),
            "next_update": status.next_update.isoformat() if status.next_update else None,
            "seconds_to_next_update": status.seconds_to_next_update,
        }
