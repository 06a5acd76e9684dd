"""idmz: composition root: the CLI, settings, wiring, process supervision and the demo."""

import importlib

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "cli": ("main",),
}

__all__ = [name for names in _SURFACE.values() for name in names]


def __getattr__(name: str) -> object:
    home = next((module for module, names in _SURFACE.items() if name in names), None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{home}")
    return module if name == home else getattr(module, name)
