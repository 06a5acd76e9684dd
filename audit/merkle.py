"""RFC 6962 section 2.1 Merkle tree hashing, proof generation and RFC 9162 verification.

    >>> from audit.merkle import leaf_hash, TreeBuilder, inclusion_proof, verify_inclusion
    >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
    >>> tree = TreeBuilder(); tree.extend(leaves)
    >>> verify_inclusion(2, 5, leaves[2], inclusion_proof(2, 5, leaves), tree.root())

Hashing is exactly RFC 6962 section 2.1: ``leaf = SHA-256(0x00 || data)``,
``node = SHA-256(0x01 || left || right)``, split at the largest power of two below n.
Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2, with the edge cases pinned as the
transparency-dev reference does (hashes are 32 bytes, ``index >= size`` fails, a consistency
proof from size 0 fails, ``size1 == size2`` needs an empty proof and equal roots).
Verifiers raise `ProofError`; they never return a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from audit.errors import ProofError

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) (RFC 6962 section 2.1)
_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256
# Largest perfect subtree hashed level-by-level in one go by TreeBuilder.extend.
_MAX_CHUNK = 1 << 14


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k in RFC 6962 section 2.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree (len is a power of two), hashed level by level."""
    level = list(hashes)
    sha = _sha256
    while len(level) > 1:
        it = iter(level)
        level = [sha(_NODE + left + right).digest() for left, right in zip(it, it, strict=True)]
    return level[0]


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (RFC 6962 section 2.1)."""
    tree = TreeBuilder()
    tree.extend(hashes)
    return tree.root()


class TreeBuilder:
    """A streaming tree: keeps only the roots of the perfect subtrees that make up the tree
    (one per set bit of ``size``), so appending is O(1) amortized and memory is O(log n)."""

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def _push(self, subtree_root: bytes, height: int) -> None:
        # The new perfect subtree of 2**height leaves starts at a multiple of 2**height, so
        # merging it is binary carry propagation over the bits of size >> height.
        h = subtree_root
        s = self._size >> height
        stack = self._stack
        while s & 1:
            h = _sha256(_NODE + stack.pop() + h).digest()
            s >>= 1
        stack.append(h)
        self._size += 1 << height

    def append(self, leaf: bytes) -> None:
        self._push(leaf, 0)

    def extend(self, leaves: Sequence[bytes]) -> None:
        i, n = 0, len(leaves)
        while i < n:
            # The largest aligned perfect subtree that fits in what is left.
            height = (self._size & -self._size).bit_length() - 1 if self._size else 62
            height = min(height, (n - i).bit_length() - 1, _MAX_CHUNK.bit_length() - 1)
            width = 1 << height
            root = leaves[i] if width == 1 else _perfect_root(leaves[i : i + width])
            self._push(root, height)
            i += width

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        stack = self._stack
        r = stack[-1]
        for h in reversed(stack[:-1]):
            r = _sha256(_NODE + h + r).digest()
        return r


def _subtree(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    return root_of(leaves[start:end])


def inclusion_proof(index: int, size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 section 2.1.1, from leaf hashes ``leaves[:size]``."""
    if not 0 <= index < size <= len(leaves):
        raise ProofError(f"no inclusion proof for index {index} in a tree of size {size}")
    path: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if m < k:
            path.append(_subtree(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()  # leaf's sibling first (RFC 6962 section 2.1.1 order)
    return path


def consistency_proof(size1: int, size2: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 section 2.1.2, from leaf hashes ``leaves[:size2]``."""
    if not 0 < size1 <= size2 <= len(leaves):
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete)
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            proof.append(_subtree(leaves, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree(leaves, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(_subtree(leaves, lo, hi))
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_BYTES:
        raise ProofError(f"{what} must be {HASH_BYTES} bytes, found {len(value)}")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2. Raises `ProofError` unless ``leaf`` is at ``index`` of the
    tree of ``size`` leaves whose root is ``root``."""
    if index < 0 or index >= size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError(f"inclusion proof for index {index} is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof for index {index} is too short")
    if r != root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2. Raises `ProofError` unless the tree of ``size2`` leaves with
    ``root2`` extends the tree of ``size1`` leaves with ``root1``."""
    if size1 < 0 or size2 < size1:
        raise ProofError(f"size {size2} is smaller than the old size {size1} (rollback)")
    if size1 == 0:
        # Nothing to be consistent with; callers with no previous state skip the proof.
        raise ProofError("a consistency proof from an empty tree is meaningless")
    if size1 == size2:
        if proof:
            raise ProofError(f"sizes are equal ({size1}) but the proof is not empty")
        if root1 != root2:
            raise ProofError(f"two different roots for the same size {size1} (a fork)")
        return
    _check_hash(root1, "old root hash")
    _check_hash(root2, "new root hash")
    if not proof:
        raise ProofError(f"empty consistency proof from size {size1} to {size2}")
    for c in proof:
        _check_hash(c, "proof hash")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is an exact power of two
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from {size1} to {size2} is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the old root at size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the new root at size {size2}")
