"""The IDMZ data path: OT-facing broker -> checks -> audit -> IT-facing broker, one way only.

>>> from relay.appliance import Appliance
>>> appliance = Appliance(config, audit=audit_log)  # config: relay.config.ApplianceConfig  # doctest: +SKIP
>>> appliance.start()  # managed brokers up, N workers connected  # doctest: +SKIP
>>> appliance.stop()  # doctest: +SKIP

See docs/relay.md for the data path, configuration, failure behaviour and metrics.
"""

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "appliance": ("Appliance",),
    "config": (
        "AcceptedAudit",
        "ApplianceConfig",
        "BrokerEndpoint",
        "ManagedBroker",
        "RelayLimits",
        "TLSFiles",
        "WorkerConfig",
    ),
    "errors": ("RelayConfigError", "UpstreamError"),
}

__all__, __getattr__ = lazy_surface(__name__, _SURFACE)
