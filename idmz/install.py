"""Whether idmz's seven import names all answer from this install (ADR 0003).

The names are generic (`audit`, `edge`, `relay` and `policies` are distributions on PyPI too),
so a package of someone else's earlier on `sys.path` (a `PYTHONPATH` entry, a shared
environment) would silently answer "who is this?" for `pki`. Every command checks, before it
imports anything else of ours, that each name resolves next to `idmz` itself. `find_spec` locates
a package without running it, so foreign code never runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The top-level packages one idmz install provides (pyproject.toml, ADR 0003).
PACKAGES = tuple(
    ["idmz", "pki", "audit", "policies", "provisioning", "relay", "edge", "bedrock", "release"]
)


def _location(name: str) -> Path | None:
    """The directory that holds package ``name`` (site-packages, or the checkout)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:  # missing, or a namespace package of no one
        return None
    return Path(spec.origin).resolve().parent.parent


def foreign_packages() -> dict[str, str]:
    """Each of our import names that does not resolve next to `idmz`, with where it does."""
    home = _location("idmz")
    found = {}
    for name in PACKAGES[1:]:
        where = _location(name)
        if where != home:
            found[name] = str(where) if where is not None else "nowhere (not installed)"
    return found


def install_problem() -> str | None:
    """One line for the operator when the install is not whole; None when it is."""
    foreign = foreign_packages()
    if not foreign:
        return None
    names = ", ".join(f"{name} from {where}" for name, where in sorted(foreign.items()))
    return (
        f"idmz: refusing to run: {names}, not from this idmz install at {_location('idmz')}; "
        "install idmz into a virtualenv of its own (docs/adr/0003) and unset PYTHONPATH"
    )
