"""The product's shape, checked from its source: no `assert` in product code.

`python -O` removes `assert` statements, so a check written as one vanishes in an optimized
deployment. Product code raises its package's error instead, or narrows the type so the
check is not needed (`relay.config.ApplianceConfig.managed_brokers`). Tests and benchmarks
assert freely (ruff's S101 is ignored for them only, pyproject.toml).
"""

from __future__ import annotations

import ast

from tests.support.product import modules


def test_product_code_has_no_assert_statement() -> None:
    found = [
        f"{module.name}:{node.lineno}"
        for module in modules()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Assert)
    ]
    assert not found, "assert in product code (stripped by python -O): " + ", ".join(found)
