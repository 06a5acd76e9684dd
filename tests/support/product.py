"""The product's source as the structural tests read it: packages, modules and their imports.

Read from the files with `ast` (never imported), so a test over the whole product costs a parse,
not an import of onnxruntime, asyncua or hvac.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The product packages, the folders pyproject.toml installs (ARCHITECTURE.md section 2).
PACKAGES = tuple(
    ["bedrock", "pki", "audit", "policies", "provisioning", "relay", "edge", "release", "idmz"]
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "pki.identity"; a package's __init__ is the package name
    path: Path

    @property
    def package(self) -> str:
        return self.name.split(".")[0]

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def tree(self) -> ast.Module:
        return _parse(self.path)


@dataclass(frozen=True)
class Import:
    """One imported name: `from <module> import <name>`, or `import <module>` (name is None)."""

    importer: Module
    line: int
    module: str
    name: str | None
    top_level: bool  # at module level (runs on import), not inside a function or class


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def modules(roots: tuple[str, ...] = PACKAGES) -> list[Module]:
    """Every Python module under the given top-level folders, sorted by name."""
    found = []
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append(Module(".".join(parts), path))
    return found


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a `from` import names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: Module) -> Iterator[Import]:
    """Every import statement of a module, with whether it runs when the module is imported."""
    top = {id(node) for node in _module_level(module.tree.body)}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, alias.name, None, id(node) in top)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                yield Import(module, node.lineno, source, alias.name, id(node) in top)


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run on import: the body, and inside module-level if/try/with blocks
    (`if TYPE_CHECKING:` blocks excluded: they never run)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
            for handler in node.handlers:
                yield from _module_level(handler.body)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)
