"""edge: the OT gateway: OPC UA / Modbus readers, featurizer, inference, outbox, uplink,
and the stamping-line simulator. Reference: docs/edge.md.

The gateway is wired by `idmz` (``idmz edge run --config gateway.toml``); in-process::

    from edge.gateway import Gateway
    from edge.outbox import Outbox
    gw = Gateway(config, outbox=Outbox.open(config.outbox_path, config.outbox), scorer=scorer)
    await gw.run(stop_event)          # until stop_event is set

    from edge.simulator import SimulatorSettings, SimulatorThread
    sim = SimulatorThread(SimulatorSettings(opcua_port=4840, modbus_port=5020))
    sim.start(); sim.inject("bearing-outer-race"); sim.stop()
"""

import importlib

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "bearing": ("BearingGeometry", "SKF_6205"),
    "config": ("GatewayConfig", "VibrationChannel"),
    "credentials": ("load_credentials",),
    "errors": ("ConfigError",),
    "featurizer": ("FEATURE_NAMES", "Featurizer", "FeaturizerSettings", "IsoZones"),
    "gateway": ("Gateway",),
    "inference": ("Scorer",),
    "model_release": ("admit_release", "read_accepted", "record_accepted", "release_state_path"),
    "model_signing": ("ModelTrust", "load_trust", "load_verified_model", "sign_model"),
    "opcua_certs": ("make_application_certificate",),
    "outbox": ("Outbox", "OutboxLimits"),
    "plant": ("LineSettings",),
    "recordings": ("load_recording",),
    "simulator": ("PlantSimulator", "SimulatorSettings"),
    "sources": ("Backoff", "ModbusSource", "OpcUaSecurity", "OpcUaSource"),
    "tagmap": ("TagSpec",),
    "training": ("WindowPlan", "feature_matrix", "simulator_recording", "train"),
    "uplink": ("UplinkSettings",),
}

__all__ = [name for names in _SURFACE.values() for name in names]


def __getattr__(name: str) -> object:
    home = next((module for module, names in _SURFACE.items() if name in names), None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{home}")
    return module if name == home else getattr(module, name)
