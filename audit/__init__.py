"""audit: what happened? The append-only, tamper-evident log of every security decision."""
