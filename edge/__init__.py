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
