"""Each package declares its public surface, and the other parts use only that.

The rule (docs/architecture.md, "Public surface"):

- Each product package lists in `__all__` (in its `__init__.py`) the names that other packages
  and the CLI may import from it. Everything else is the package's own business, and may change
  without telling anyone.
- A production module imports a name of another package only if that package declares it, either
  from the package (`from policies import evaluate`) or from its home module
  (`from pki.identity import DeviceIdentity`); both must give the very object the package
  declares. The home-module form is the usual one: it keeps an import light (the package does
  not import hvac or onnxruntime for a caller that wants an identity) and mypy sees the real type.
  A bare `import pki.identity` across packages is not used: name what you take. The one
  exception is the bottom floor's error module, `import bedrock.errors as category` (ADR
  0007): every package names its own `ConfigError`, `UpstreamError`, ... after the floor's
  categories, so the floor's are reached through the module to keep the two apart.
- Nobody outside a package, the tests and benchmarks included, imports a `_private` module or
  name of it. Tests and benchmarks may otherwise import any public module: they test the parts
  from inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from tests.support.product import PACKAGES, Import, imports, modules

FLOOR_MODULES_IMPORTED_WHOLE = frozenset({"bedrock.errors"})


def _cross_package(roots: tuple[str, ...]) -> list[Import]:
    found = []
    for module in modules(roots):
        for imp in imports(module):
            target = imp.module.split(".")[0]
            if target in PACKAGES and target != module.package:
                found.append(imp)
    return found


def _where(imp: Import) -> str:
    name = f"import {imp.name}" if imp.name else "import"
    return f"{imp.importer.path.relative_to(imp.importer.path.parents[1])}:{imp.line} from {imp.module} {name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_declared_name_exists(package: str) -> None:
    pkg = importlib.import_module(package)
    declared = list(pkg.__all__)
    assert declared, f"{package} declares no public surface"
    assert len(declared) == len(set(declared)), f"{package}.__all__ repeats a name"
    assert not [n for n in declared if n.startswith("_")], f"{package}.__all__ names a private"
    missing = [name for name in declared if not hasattr(pkg, name)]
    assert not missing, f"{package}.__all__ declares names it does not have: {missing}"


def test_undeclared_name_is_not_resolved() -> None:
    import pki

    with pytest.raises(AttributeError, match="no attribute 'build_certificate'"):
        _ = pki.build_certificate  # a pki.builder function, not part of the surface


def test_no_module_imports_another_packages_private_name() -> None:
    private = [
        _where(imp)
        for imp in _cross_package((*PACKAGES, "tests", "bench"))
        if any(part.startswith("_") for part in imp.module.split("."))
        or (imp.name or "").startswith("_")
    ]
    assert not private, "imports of another package's private module or name:\n" + "\n".join(
        private
    )


def test_production_imports_only_what_the_other_package_declares() -> None:
    undeclared = []
    for imp in _cross_package(PACKAGES):
        target: ModuleType = importlib.import_module(imp.module.split(".")[0])
        if imp.name is None and imp.module in FLOOR_MODULES_IMPORTED_WHOLE:
            continue
        if imp.name is None:
            undeclared.append(f"{_where(imp)} (a bare module import: name what you take)")
        elif imp.name not in target.__all__:
            undeclared.append(f"{_where(imp)} ({imp.name} is not in {target.__name__}.__all__)")
        elif getattr(importlib.import_module(imp.module), imp.name) is not getattr(
            target, imp.name
        ):
            undeclared.append(f"{_where(imp)} (not the {imp.name} that {target.__name__} declares)")
    assert not undeclared, "cross-package imports outside the declared surface:\n" + "\n".join(
        undeclared
    )
