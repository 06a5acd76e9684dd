"""Every error idmz raises on purpose belongs to exactly one category of ``bedrock.errors``,
and its exit code and HTTP status follow from that category by ``isinstance`` (ADR 0007): a
renamed class keeps its exit code, and an error that is not ours is never given one."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import bedrock.errors as category
from bedrock.errors import CATEGORIES, IdmzError, category_of, exit_code_for, http_status_for
from tests.support.product import PACKAGES

ROOT = Path(__file__).resolve().parents[2]


def public_error_classes() -> list[type[BaseException]]:
    """Every public class named ``*Error`` defined in the product's modules."""
    found: list[type[BaseException]] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            names = [
                node.name
                for node in tree.body
                if isinstance(node, ast.ClassDef)
                and node.name.endswith("Error")
                and not node.name.startswith("_")
                and node.bases != []
            ]
            if not names:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            loaded = importlib.import_module(module)
            found += [
                cls
                for name in names
                if isinstance(cls := getattr(loaded, name), type) and issubclass(cls, BaseException)
            ]
    return found


ERRORS = public_error_classes()


def test_the_scan_sees_every_package_error_tree() -> None:
    roots = {cls.__name__ for cls in ERRORS}
    assert {"PKIError", "AuditError", "PolicyError", "ProvisioningError", "RelayError"} <= roots
    assert {"EdgeError", "SettingsError", "CAUsageError", "SessionEndedError"} <= roots


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_descends_from_the_floor(cls: type[BaseException]) -> None:
    assert issubclass(cls, IdmzError), f"{cls.__module__}.{cls.__name__} is not an IdmzError"


@pytest.mark.parametrize(
    "cls",
    [c for c in ERRORS if c is not IdmzError and c not in CATEGORIES and c.__name__ not in {
        "PKIError", "AuditError", "PolicyError", "ProvisioningError", "RelayError", "EdgeError",
        "ReleaseError"}],
    ids=lambda c: f"{c.__module__}.{c.__qualname__}",
)  # fmt: skip
def test_every_concrete_error_has_exactly_one_category(cls: type[BaseException]) -> None:
    mine = [c for c in CATEGORIES if issubclass(cls, c)]
    assert len(mine) == 1, f"{cls.__module__}.{cls.__name__} is in {mine}"


def test_exit_code_is_chosen_by_category_not_by_class_name() -> None:
    class Misnamed(category.UpstreamError):  # a name that once meant exit code 2
        pass

    Misnamed.__name__ = "LooksLikeAConfigError"
    assert exit_code_for(Misnamed("x")) == 3
    assert exit_code_for(category.UsageError("x")) == 2
    assert exit_code_for(category.ConfigError("x")) == 2
    for refusal in (
        category.VerificationError,
        category.AccessDeniedError,
        category.CapacityError,
        category.OperationError,
    ):
        assert exit_code_for(refusal("x")) == 1


def test_an_error_that_is_not_ours_gets_no_exit_code_and_a_500() -> None:
    class ConfigError(Exception):  # a foreign class that merely shares a name
        pass

    assert exit_code_for(ConfigError("x")) is None
    assert category_of(ConfigError("x")) is None
    assert http_status_for(ValueError("x")) == 500


def test_package_errors_keep_the_exit_codes_they_had() -> None:
    from audit.errors import AuditUnavailableError, InvalidEventError
    from edge.errors import PeerUnavailableError
    from idmz.commands.ca_context import CAUsageError
    from idmz.home import SettingsError
    from pki.errors import KeyStoreError, RevokedCertificateError
    from policies.errors import PolicyConfigError
    from provisioning.errors import TokenError
    from relay.errors import BrokerStartUpstreamError, RevokePluginUnavailableError

    expected = {
        SettingsError("x"): 2,
        CAUsageError("x"): 2,
        PolicyConfigError("x"): 2,
        InvalidEventError("x"): 2,
        KeyStoreError("x"): 3,
        AuditUnavailableError("x"): 3,
        PeerUnavailableError("x"): 3,
        BrokerStartUpstreamError("x"): 3,
        RevokePluginUnavailableError("x"): 3,
        RevokedCertificateError("x"): 1,
        TokenError("x"): 1,
    }
    assert {type(e).__name__: exit_code_for(e) for e in expected} == {
        type(e).__name__: code for e, code in expected.items()
    }


def test_http_status_follows_the_category() -> None:
    from policies.decision import Decision, ReasonCode
    from policies.errors import AccessDeniedError
    from provisioning.errors import RateLimitedError, RequestError, UpstreamError, UsageError

    assert http_status_for(RequestError("bad csr")) == 400
    assert http_status_for(UsageError("no such device")) == 400
    assert http_status_for(RateLimitedError("slow down", retry_after_s=1)) == 429
    assert http_status_for(UpstreamError("registry down")) == 503
    denied = AccessDeniedError(Decision.deny(ReasonCode.NO_CONDUIT, "no conduit allows it"))
    assert http_status_for(denied) == 403
