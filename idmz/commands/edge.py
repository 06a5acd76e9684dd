"""`idmz edge`: not wired yet (in progress)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `edge` command group to the top-level parser."""
