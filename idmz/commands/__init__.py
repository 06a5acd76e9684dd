"""Command groups of the idmz CLI, one module each."""
