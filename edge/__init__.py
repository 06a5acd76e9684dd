"""edge: the OT gateway: OPC UA / Modbus readers, featurizer, inference, outbox, uplink,
and the stamping-line simulator. Reference: docs/edge.md.

The gateway is wired by `idmz` (``idmz edge run --config gateway.toml``,
`idmz.gateway_runtime`); its readers and uplink are injected (`edge.ports`), so in-process::

    from edge.gateway import Gateway
    from edge.outbox import Outbox
    gw = Gateway(config, outbox=Outbox.open(config.outbox_path, config.outbox), scorer=scorer,
                 readers=lambda sink: [OpcUaReader(source, tags, sink)], uplink=uplink)
    await gw.run(stop_event)          # until stop_event is set
    gw.on_reading(reading)            # or feed it directly: windows, scores, alarms, outbox

Its jobs each have a module: `edge.windowing`, `edge.monitor` with `edge.anomaly`,
`edge.context`, `edge.envelope` and `edge.publisher`, `edge.status`, `edge.schedule`. The
simulator::

    from edge.simulator import SimulatorSettings, SimulatorThread
    sim = SimulatorThread(SimulatorSettings(opcua_port=4840, modbus_port=5020))
    sim.start(); sim.inject("bearing-outer-race"); sim.stop()
"""

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "activation": (
        "ConfigActivator",
        "ModelActivator",
        "released_config",
        "released_config_path",
        "released_model_paths",
    ),
    "alarms": ("AlarmCallback",),
    "anomaly_model": ("model_metadata",),
    "bearing": ("BEARINGS", "BearingGeometry", "SKF_6205"),
    "config": ("GatewayConfig", "VibrationChannel"),
    "credentials": ("load_credentials",),
    "errors": ("ConfigError",),
    "featurizer": ("FEATURE_NAMES", "Featurizer", "FeaturizerSettings", "IsoZones"),
    "gateway": ("Gateway",),
    "health": ("HealthSettings",),
    "inference": ("Scorer",),
    "model_release": ("admit_release", "read_accepted", "record_accepted", "release_state_path"),
    "modbus_reader": ("ModbusReader",),
    "model_signing": (
        "MAX_MODEL_BYTES",
        "ModelTrust",
        "load_trust",
        "load_verified_model",
        "sign_model",
    ),
    "opcua_reader": ("OpcUaReader",),
    "opcua_certs": ("make_application_certificate",),
    "outbox": ("Outbox", "OutboxLimits"),
    "plant": ("LineSettings",),
    "ports": ("Reader", "ReaderFactory", "ReadingSink"),
    "recordings": ("load_recording",),
    "run_recording": ("load_run_recording", "run_features"),
    "schedule": ("Service",),
    "simulator": ("PlantSimulator", "SimulatorSettings"),
    "sources": ("Backoff", "ModbusSource", "OpcUaSecurity", "OpcUaSource"),
    "tagmap": ("TagSpec",),
    "training": (
        "WindowPlan",
        "featurizer_settings_from_summary",
        "feature_matrix",
        "fit_run_to_failure",
        "simulator_recording",
        "train",
    ),
    "updates": ("Activator", "UpdateAgent", "UpdateSettings"),
    "uplink": ("SparkplugUplink", "Uplink", "UplinkSettings"),
}

__all__, __getattr__ = lazy_surface(__name__, _SURFACE)
