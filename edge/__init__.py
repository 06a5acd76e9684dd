"""edge: the OT gateway: OPC UA / Modbus readers, featurizer, inference, outbox, uplink."""
