"""The CA host republishes its CRL by itself, well before nextUpdate (ADR 0016).

Two runners share this step: the provisioning service's background loop
(`idmz.provisioning_serve`) and ``idmz ca crl --watch`` (the systemd service in
``deploy/systemd/``), so a plant where nothing renews or revokes for days never serves a CRL
past its nextUpdate (review M6: Mosquitto then refuses every TLS handshake).

>>> bundle = republish_crl(ca, now=datetime.now(UTC))  # doctest: +SKIP
>>> if bundle is not None:                              # doctest: +SKIP
...     audit.record(crl_published_event(bundle, actor="service:provisioning"))
"""

from __future__ import annotations

from datetime import datetime

from audit.events import AuditEvent, Outcome
from pki.authority import CertificateAuthority, CRLBundle
from pki.health import crl_number
from pki.local import LocalCA


def republish_crl(
    ca: CertificateAuthority, *, now: datetime, force: bool = False
) -> CRLBundle | None:
    """Publish a new CRL when the current one is due (less than the CA's refresh margin, by
    default half its lifetime, is left) or when ``force``; return it, or None when nothing was
    published. A Vault mount rebuilds its own CRL (``auto_rebuild``): it is only read and
    checked, which raises `KeyStoreError` when Vault's CRL is stale."""
    if isinstance(ca, LocalCA):
        return ca.publish_crl(now=now) if force else ca.republish_crl_if_due(now=now)
    bundle = ca.current_crl(now=now)
    return bundle if force else None


def crl_published_event(bundle: CRLBundle, *, actor: str) -> AuditEvent:
    """``pki.crl.published`` naming the CRL number and its nextUpdate."""
    number = crl_number(bundle.crl)
    return AuditEvent(
        actor=actor,
        action="pki.crl.published",
        resource=f"crl/{number}",
        outcome=Outcome.SUCCESS,
        zone="idmz",
        details={
            "crl_number": number,
            "entries": len(bundle.crl),
            "next_update": bundle.next_update.isoformat(),
        },
    )
