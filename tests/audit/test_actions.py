"""The audit vocabulary has one owner, `audit.actions` (ADR 0007): every action the product's
code records is in the catalogue, with its SR 2.8 category, and the catalogue lists nothing that
no code records (the report once counted `pki.cert.renewed`, which nothing emits)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from audit.actions import ACTIONS, AREAS, CERTIFICATE_ACTIONS, Category, category_for, is_manual
from audit.report import category_of
from tests.support.product import PACKAGES

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = PACKAGES  # the product packages (tests.support.product)
CATALOGUE_FILE = ROOT / "audit" / "actions.py"
ACTION_NAME = re.compile(rf"({'|'.join(AREAS)})\.[a-z_]+\.[a-z_]+")


def recorded_actions() -> dict[str, list[str]]:
    """Every string in the product's code that is an action: an ``action=`` argument, or a
    constant shaped ``<area>.<object>.<verb>`` (passed positionally or through a variable)."""
    found: dict[str, list[str]] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == CATALOGUE_FILE:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.keyword) and node.arg == "action":
                    value = node.value
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        names.append(value.value)
                    elif isinstance(value, ast.IfExp):
                        names += [
                            v.value
                            for v in (value.body, value.orelse)
                            if isinstance(v, ast.Constant) and isinstance(v.value, str)
                        ]
                elif (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and ACTION_NAME.fullmatch(node.value)
                ):
                    names.append(node.value)
                for name in names:
                    if name.startswith("store_") or name == "append":
                        continue  # argparse's action=, not an audit action
                    where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
                    found.setdefault(name, []).append(where)
    return found


RECORDED = recorded_actions()


def test_every_action_the_product_records_is_in_the_catalogue() -> None:
    missing = {name: where for name, where in RECORDED.items() if name not in ACTIONS}
    assert missing == {}


def test_the_catalogue_lists_only_actions_the_product_records() -> None:
    assert sorted(set(ACTIONS) - set(RECORDED)) == []


def test_the_scan_sees_the_writers_of_each_area() -> None:
    areas = {name.partition(".")[0] for name in RECORDED}
    assert {"pki", "provisioning", "relay", "config", "operator"} <= areas


def test_certificate_lifecycle_actions_come_from_the_catalogue() -> None:
    assert set(CERTIFICATE_ACTIONS) == {
        "pki.cert.issued",
        "pki.cert.revoked",
        "provisioning.enroll.accepted",
        "provisioning.renew.accepted",
        "provisioning.device.revoked",
    }
    assert "pki.cert.renewed" not in ACTIONS


def test_an_action_outside_the_catalogue_is_categorized_by_its_area() -> None:
    assert category_for("operator.ca.rotated") is Category.CONFIGURATION and is_manual(
        "operator.ca.rotated"
    )
    assert category_for("edge.model.loaded") is Category.CONTROL_SYSTEM
    assert category_for("something.else.entirely") is Category.AUDIT_LOG
    assert category_of("relay.message.refused", "failure") is Category.REQUEST_ERRORS
