"""The audit action catalogue: every action the product records, with its IEC 62443-3-3
SR 2.8 category and, for certificate lifecycle actions, what the action does to a certificate.
The writers record these names; the compliance report (`audit.report`) reads them here, so
the report knows no feature by name (ADR 0007; docs/contracts.md section 6).

Names are dotted, ``<area>.<object>.<verb>``. An action that is not in the catalogue (a
manual ``operator.<what>`` action, or an entry from an older release) is categorized by its
area (`AREAS`); `tests/audit/test_actions.py` checks that every action the product's code
records is in the catalogue.

>>> ACTIONS["provisioning.renew.accepted"].certificate
<CertificateEvent.RENEWED: 'renewed'>
>>> category_for("operator.ca.rotated")
<Category.CONFIGURATION: 'configuration changes'>
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Category(StrEnum):
    """IEC 62443-3-3 SR 2.8 (audit log events) categories, in report order."""

    ACCESS_CONTROL = "access control"
    REQUEST_ERRORS = "request errors"
    CONTROL_SYSTEM = "control system events"
    BACKUP_RESTORE = "backup/restore events"
    CONFIGURATION = "configuration changes"
    AUDIT_LOG = "audit log events"


CATEGORIES = tuple(Category)


class CertificateEvent(StrEnum):
    """What a certificate lifecycle action did (the report's lifecycle table)."""

    ISSUED = "issued"
    RENEWED = "renewed"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    category: Category
    meaning: str
    certificate: CertificateEvent | None = None
    resource_is_subject: bool = False  # resource names the device; serials are in details
    actor_is_subject: bool = False  # the device itself acted (enrolled, renewed)
    change_control: bool = False  # a change to what runs in the plant (the report's section)


_A, _C = Category.ACCESS_CONTROL, Category.CONTROL_SYSTEM
_CATALOGUE = (
    Action("pki.ca.created", _A, "a new CA (resource: root serial; never the passphrase)"),
    Action("pki.cert.issued", _A, "a certificate was issued (resource: serial)",
           CertificateEvent.ISSUED),
    Action("pki.cert.revoked", _A, "a certificate was revoked (reason: RFC 5280 reason)",
           CertificateEvent.REVOKED),
    Action("pki.crl.published", _A, "a CRL was generated (crl_number, entries, next_update)"),
    Action("provisioning.enroll.accepted", _A, "a device enrolled",
           CertificateEvent.ISSUED, actor_is_subject=True),
    Action("provisioning.enroll.refused", _A, "an enrollment was refused"),
    Action("provisioning.renew.accepted", _A, "a device renewed its certificate",
           CertificateEvent.RENEWED, actor_is_subject=True),
    Action("provisioning.renew.refused", _A, "a renewal was refused"),
    Action("provisioning.token.created", _A, "an enrollment token was created"),
    Action("provisioning.token.refused", _A, "a token was refused (replayed, expired, forged)"),
    Action("provisioning.token.revoked", _A, "an operator token was revoked"),
    Action("provisioning.device.added", _A, "a device was registered"),
    Action("provisioning.device.revoked", _A, "a device and its certificates were revoked",
           CertificateEvent.REVOKED, resource_is_subject=True),
    Action("provisioning.device.expiring", _A, "a device certificate expires soon"),
    Action("provisioning.group.added", _A, "an enrollment group was created"),
    Action("provisioning.ca.expiring", _A, "the issuing CA expires before a new certificate"),
    Action("relay.message.refused", _A, "a message was refused (reason: the decision)"),
    Action("relay.message.refused_by_it", _A, "IT refused an accepted message for good (dead letter)"),
    Action("relay.message.forwarded", _A, "a message was forwarded (per message)"),
    Action("relay.device.cutoff", _A, "a revoked device was disconnected"),
    Action("relay.batch.forwarded", _C, "accepted traffic, per batch (count, hash)"),
    Action("relay.session.refused", _C, "a broker refused a CONNECT (client id not the cert's)"),
    Action("relay.broker.overflow", _C, "a broker dropped messages: a client queue was full"),
    Action("relay.sparkplug.birth", _C, "a Sparkplug edge node was born (NBIRTH; bdSeq)"),
    Action("relay.sparkplug.death", _C, "a Sparkplug edge node died (NDEATH; bdSeq)"),
    Action("relay.sparkplug.gap", _C, "a Sparkplug sequence gap: possible loss before the relay"),
    Action("relay.sparkplug.state", _C, "the Sparkplug STATE the OT side shows changed"),
    Action("relay.crl.stale", _C, "the brokers' CRL passed nextUpdate"),
    Action("config.relay.started", Category.CONFIGURATION, "the relay started with a policy"),
    Action("config.broker.changed", Category.CONFIGURATION, "a broker's configuration changed"),
    Action("operator.plant.commissioned", Category.CONFIGURATION, "the demo plant is set up"),
    Action("release.change.published", Category.CONFIGURATION,
           "a model or config was offered to gateways (resource: kind/prefix; release, sha256, stage)",
           change_control=True),
    Action("release.change.promoted", Category.CONFIGURATION,
           "a canary was given to every gateway of its prefix", change_control=True),
    Action("release.change.rolled_back", Category.CONFIGURATION,
           "an earlier artifact was offered again under a new release (rollback_of)",
           change_control=True),
    Action("release.change.refused", Category.CONFIGURATION,
           "a release change was refused (nothing changed)", change_control=True),
    Action("release.signers.changed", Category.CONFIGURATION,
           "the release signers changed (new root)", change_control=True),
    Action("release.artifact.fetched", _A, "a gateway downloaded a release artifact",
           actor_is_subject=True),
    Action("release.fetch.refused", _A, "the release repository refused a request (TLS, prefix, method)"),
    Action("edge.release.activated", _C, "a gateway put a release into service (its status report)",
           actor_is_subject=True, change_control=True),
    Action("edge.release.refused", _C, "a gateway refused a release (its status report: why)",
           actor_is_subject=True, change_control=True),
)  # fmt: skip
ACTIONS: Mapping[str, Action] = MappingProxyType({a.name: a for a in _CATALOGUE})
CERTIFICATE_ACTIONS = tuple(a.name for a in _CATALOGUE if a.certificate is not None)
CHANGE_ACTIONS = frozenset(a.name for a in _CATALOGUE if a.change_control)

# Actions outside the catalogue, by area (the first dotted part). Manual actions are always
# ``operator.<what>`` (`idmz audit record` refuses other names).
OPERATOR_AREA = "operator"
AREAS: Mapping[str, Category] = MappingProxyType(
    {
        "pki": Category.ACCESS_CONTROL,
        "provisioning": Category.ACCESS_CONTROL,
        "relay": Category.CONTROL_SYSTEM,
        "edge": Category.CONTROL_SYSTEM,
        "policy": Category.CONFIGURATION,
        "config": Category.CONFIGURATION,
        OPERATOR_AREA: Category.CONFIGURATION,
        "backup": Category.BACKUP_RESTORE,
        "restore": Category.BACKUP_RESTORE,
        "audit": Category.AUDIT_LOG,
        "release": Category.CONFIGURATION,
    }
)


def category_for(action: str) -> Category:
    """The catalogue's category for ``action``, else its area's, else audit log events."""
    known = ACTIONS.get(action)
    if known is not None:
        return known.category
    return AREAS.get(action.partition(".")[0], Category.AUDIT_LOG)


def is_manual(action: str) -> bool:
    """An operator's manual action (``operator.<what>``)."""
    return action.partition(".")[0] == OPERATOR_AREA
