"""Merkle tree rules: RFC 6962 hashing, generated proofs verify, tampered proofs do not."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import ProofError
from audit.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The 8 reference leaves of RFC 6962 test suites (hex), and MTH of all 8 (V2 in the field note).
REFERENCE_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                    "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
REFERENCE_ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def _naive_mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 written as the recursion it is, to check the fast builder."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _naive_mth(hashes[:k]) + _naive_mth(hashes[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_reference_tree_of_eight_leaves_has_the_published_root() -> None:
    leaves = [leaf_hash(bytes.fromhex(h)) for h in REFERENCE_LEAVES]
    assert root_of(leaves).hex() == REFERENCE_ROOT_8


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=5))
def test_streaming_builder_matches_the_rfc_recursion(n: int, split: int) -> None:
    leaves = _leaves(n)
    tree = TreeBuilder()
    cut = n * split // 5
    tree.extend(leaves[:cut])
    for h in leaves[cut:]:
        tree.append(h)
    assert tree.size == n
    assert tree.root() == _naive_mth(leaves)


def test_every_generated_inclusion_proof_verifies_and_no_other_index_does() -> None:
    leaves = _leaves(37)
    for size in (1, 2, 3, 8, 13, 32, 37):
        root = root_of(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(index, size, leaves)
            verify_inclusion(index, size, leaves[index], proof, root)
            wrong = (index + 1) % size
            if wrong != index:
                with pytest.raises(ProofError):
                    verify_inclusion(wrong, size, leaves[index], proof, root)


def test_every_generated_consistency_proof_verifies() -> None:
    leaves = _leaves(40)
    for size2 in range(1, 41):
        root2 = root_of(leaves[:size2])
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, size2, leaves)
            verify_consistency(size1, size2, root_of(leaves[:size1]), root2, proof)


def test_consistency_proof_refuses_a_forked_history() -> None:
    leaves = _leaves(20)
    forked = [*leaves[:7], leaf_hash(b"rewritten"), *leaves[8:]]
    proof = consistency_proof(10, 20, forked)
    with pytest.raises(ProofError):
        verify_consistency(10, 20, root_of(leaves[:10]), root_of(forked), proof)


def test_rollback_is_refused_even_with_an_empty_proof() -> None:
    leaves = _leaves(8)
    with pytest.raises(ProofError, match="rollback"):
        verify_consistency(8, 4, root_of(leaves), root_of(leaves[:4]), [])
