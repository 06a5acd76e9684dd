"""release: the IDMZ release repository: signed models and gateway configuration (ADR 0100).

The Update Framework's repository side (python-tuf's Metadata API): an offline root, targets
signed by the release signers (model-signer certificates), snapshot and timestamp signed
online with a short expiry (`release.repository`); the repository served read-only over HTTPS
with mutual TLS to gateways with device certificates (`release.server`); which gateway fetched
which release (`release.fetchlog`). The contract with the gateways (target names, custom
metadata, who a target is for) is `policies.release`; the gateway's side is `edge.updates`.
Operator guide: docs/release.md.

>>> from release.repository import ReleaseRepository
>>> repo = ReleaseRepository(Path("idmz-data/release/repository"))        # doctest: +SKIP
>>> [r.release for r in repo.history()]                                    # doctest: +SKIP
[1, 2, 3]
"""

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"), by home module.
_SURFACE: dict[str, tuple[str, ...]] = {
    "errors": ("ReleaseConfigError", "ReleaseError", "ReleaseRefusedError", "ReleaseStateError"),
    "fetchlog": ("FetchLog", "fleet_status"),
    "keys": ("load_signer",),
    "reports": ("Reports", "read_reports"),
    "records": ("Expiry", "ReleaseRecord"),
    "repository": ("ReleaseRepository",),
    "server": ("Fetch", "RepositoryServer", "ServerTLS"),
}

__all__, __getattr__ = lazy_surface(__name__, _SURFACE)
