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
