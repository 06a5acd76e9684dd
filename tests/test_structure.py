"""The product's shape, checked from its source (ARCHITECTURE.md section 5, docs/architecture.md).

- No `assert` in product code. `python -O` removes `assert` statements, so a check written as one
  vanishes in an optimized deployment. Product code raises its package's error instead, or
  narrows the type so the check is not needed (`relay.config.ApplianceConfig.managed_brokers`).
  Tests and benchmarks assert freely (ruff's S101 is ignored for them only, pyproject.toml).
- No import cycle among product modules, counting the imports that run when a module is imported
  (module level, `if TYPE_CHECKING:` excluded; an import inside a function is how a module reaches
  a heavy or optional library on demand, and does not order module initialization).
- No product module over `MAX_LINES` lines unless ADR 0002 names it and says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.product import ROOT, imports, modules

MAX_LINES = 400
# Modules that stay over MAX_LINES for now, each named with its reason and its way down in this ADR.
SIZE_ADR = ROOT / "docs" / "adr" / "0002-modules-over-400-lines.md"
ALLOWED_OVER = frozenset(
    {
        "idmz.demo.plant",
        "policies.broker_config",
        "relay.appliance",
    }
)


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_product_code_has_no_assert_statement() -> None:
    found = [
        f"{module.name}:{node.lineno}"
        for module in modules()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Assert)
    ]
    assert not found, "assert in product code (stripped by python -O): " + ", ".join(found)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the product modules its module-level imports load."""
    by_name = {module.name: module for module in modules()}
    graph: dict[str, set[str]] = {}
    for module in by_name.values():
        targets = set()
        for imp in imports(module):
            if not imp.top_level:
                continue
            submodule = f"{imp.module}.{imp.name}" if imp.name else imp.module
            if submodule in by_name:  # `from pkg import module` or `import pkg.module`
                targets.add(submodule)
            elif imp.module in by_name:
                targets.add(imp.module)
        targets.discard(module.name)
        graph[module.name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_product_modules_import_without_a_cycle() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_no_product_module_is_over_the_size_limit_unless_the_adr_names_it() -> None:
    sizes = {module.name: _lines(module.path) for module in modules()}
    over = sorted(name for name, n in sizes.items() if n > MAX_LINES and name not in ALLOWED_OVER)
    assert not over, (
        f"modules over {MAX_LINES} lines: "
        + ", ".join(f"{name} ({sizes[name]})" for name in over)
        + f"; split them by concern, or say why not in {SIZE_ADR.name} and ALLOWED_OVER"
    )


def test_the_size_exceptions_are_current_and_each_is_in_the_adr() -> None:
    sizes = {module.name: _lines(module.path) for module in modules()}
    adr = SIZE_ADR.read_text(encoding="utf-8")
    gone = sorted(name for name in ALLOWED_OVER if sizes.get(name, 0) <= MAX_LINES)
    assert not gone, (
        f"now at most {MAX_LINES} lines (or gone): remove from ALLOWED_OVER and {SIZE_ADR.name}: {gone}"
    )
    unnamed = sorted(name for name in ALLOWED_OVER if f"`{name}`" not in adr)
    assert not unnamed, f"{SIZE_ADR.name} does not name {unnamed}"
