"""idmz: composition root: the CLI, settings, wiring, process supervision and the demo."""
