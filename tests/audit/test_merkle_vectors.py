"""RFC 6962 / RFC 9162 conformance: every transparency-dev vector, read at test time.

A verifier must succeed exactly when a vector's ``wantErr`` is false.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from audit.errors import ProofError
from audit.merkle import verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "rfc6962-merkle"


def _vector_files(kind: str) -> list[Path]:
    folder = VECTORS / kind
    if not folder.is_dir():
        # Collected at import time: a missing directory must fail loudly, never skip.
        return [folder / "MISSING"]
    return sorted(folder.rglob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        pytest.fail(
            f"conformance vectors not found at {path.parent} (expected ../shared/vectors/"
            "rfc6962-merkle relative to the repository root)"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS)) if path.is_relative_to(VECTORS) else str(path)


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=_id)
def test_inclusion_vector_verifies_exactly_when_no_error_is_expected(path: Path) -> None:
    v = _load(path)
    proof = [_b64(p) for p in v["proof"] or []]
    try:
        verify_inclusion(v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), proof, _b64(v["root"]))
    except ProofError:
        assert v["wantErr"], f"{v['desc']}: valid proof was refused"
    else:
        assert not v["wantErr"], f"{v['desc']}: invalid proof was accepted"


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=_id)
def test_consistency_vector_verifies_exactly_when_no_error_is_expected(path: Path) -> None:
    v = _load(path)
    proof = [_b64(p) for p in v["proof"] or []]
    try:
        verify_consistency(v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)
    except ProofError:
        assert v["wantErr"], f"{v['desc']}: valid proof was refused"
    else:
        assert not v["wantErr"], f"{v['desc']}: invalid proof was accepted"


def test_vector_directory_holds_both_proof_kinds() -> None:
    assert len(_vector_files("inclusion")) > 50
    assert len(_vector_files("consistency")) > 50
