"""What "portable" means for a JSON document the relay accepted: every string (keys too) is
valid Unicode, every number finite as a double; `portable_depth` checks that and returns the
nesting depth of arrays and objects (shared by the property tests and the fuzz harness)."""

from __future__ import annotations

import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def portable_depth(value: Any) -> int:
    """The nesting depth of ``value``; AssertionError on a lone surrogate or an infinity."""
    if isinstance(value, str):
        assert not _SURROGATE.search(value), "a lone surrogate"
    elif isinstance(value, float):
        assert math.isfinite(value), "an infinite number"
    elif isinstance(value, int) and not isinstance(value, bool):
        assert math.isfinite(float(value)), "an integer beyond the double range"
    elif isinstance(value, dict):
        for key in value:
            portable_depth(key)
        return 1 + max((portable_depth(v) for v in value.values()), default=0)
    elif isinstance(value, list):
        return 1 + max((portable_depth(v) for v in value), default=0)
    return 0
