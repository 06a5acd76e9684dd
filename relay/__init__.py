"""relay: the IDMZ data path from the OT-facing broker to the IT-facing broker, one way."""
