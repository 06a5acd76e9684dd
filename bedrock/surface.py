"""A package's declared public surface, loaded on first use (PEP 562; ADR 0004).

A package lists, per home module, the names other packages may import from it; the package then
resolves each name on first use instead of importing every module up front, so importing one
module stays light (``import pki.identity`` must not pull in hvac)::

    _SURFACE = {"identity": ("DeviceIdentity",), "vault": ("VaultCA",)}
    __all__, __getattr__ = lazy_surface(__name__, _SURFACE)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_surface(
    package: str, surface: Mapping[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], object]]:
    """``__all__`` and a module ``__getattr__`` for ``package`` declaring ``surface``."""
    home_of = {name: module for module, names in surface.items() for name in names}

    def __getattr__(name: str) -> object:  # noqa: N807 - the PEP 562 hook's own name
        home = home_of.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{home}")
        return module if name == home else getattr(module, name)

    return list(home_of), __getattr__
