"""The Merkle tree of RFC 9162 (Certificate Transparency 2.0), §2.1, written out by hand.

Leaves and interior nodes are hashed under different one-byte prefixes (0x00 and 0x01), so a leaf
can never be passed off as an interior node (second-preimage attacks on the tree), as in
sigstore-python's ``_internal/merkle.py``. Trees are given as the list of their *leaf hashes*;
the caller hashes each leaf once with :func:`leaf_hash`. Proof generation follows the recursive
definitions of §2.1.3.1 (PATH) and §2.1.4.1 (PROOF/SUBPROOF); verification is the iterative
algorithm of §2.1.3.2 and §2.1.4.2, step by step. Pure: bytes in, bytes or a typed error out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from mla_node.errors import LogProofInvalid

HASH_LEN = 32
_LEAF = b"\x00"
_NODE = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256 of the empty string
T = TypeVar("T")


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


class Proofs:
    """The RFC's roots and proofs over the perfect, aligned subtrees ``_perfect`` hands out.

    ``_perfect(h, i)`` is the hash of the 2**h leaves from i * 2**h. In the RFC's tree every
    subtree a proof needs is either such a perfect, aligned subtree (a lookup) or lies on the
    right edge, so a root of any earlier size, an audit path or a consistency proof costs
    O(log² n) hashes. :class:`Tree` keeps every such subtree; :class:`SparseTree` only those some
    questions need, gathered in one pass over the leaves (:func:`answer`).
    """

    size: int

    def _perfect(self, level: int, index: int) -> bytes:
        raise NotImplementedError

    def leaf(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        if not 0 <= index < self.size:
            raise LogProofInvalid(f"leaf index {index} is outside a tree of size {self.size}")
        return self._perfect(0, index)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0:  # a power of two: aligned in the RFC's tree, so already hashed
            return self._perfect(n.bit_length() - 1, lo // n)
        k = _split(n)
        return node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def _size(self, size: int | None) -> int:
        n = self.size if size is None else size
        if not 0 <= n <= self.size:
            raise LogProofInvalid(f"size {n} is outside a tree of {self.size} leaves")
        return n

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all of them by default)."""
        n = self._size(size)
        return EMPTY_ROOT if n == 0 else self._mth(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]): the audit path of leaf ``index`` in the tree of ``size``."""
        n = self._size(size)
        if not 0 <= index < n:
            raise LogProofInvalid(f"leaf index {index} is outside a tree of size {n}")
        return self._path(index, 0, n)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if m < k:
            return [*self._path(m, lo, lo + k), self._mth(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self._mth(lo, lo + k)]

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[size]): the first ``old_size`` leaves' tree is a prefix of this."""
        n = self._size(size)
        if not 0 <= old_size <= n:
            raise LogProofInvalid(f"old size {old_size} is outside 0..{n}")
        if old_size in (0, n):
            return []
        return self._subproof(old_size, 0, n, True)

    def _subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if b else [self._mth(lo, hi)]
        k = _split(hi - lo)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, b), self._mth(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._mth(lo, lo + k)]


class Tree(Proofs):
    """The tree over a list of leaf hashes, with every perfect subtree's hash kept
    (``levels[h][i]``): memory in proportion to the leaves, for a verifier that holds them all
    anyway. A node answers from its log with :func:`answer` instead."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    @property
    def size(self) -> int:  # type: ignore[override]
        return len(self.levels[0])

    def _perfect(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


class SparseTree(Proofs):
    """A tree of ``size`` leaves of which only the perfect subtrees in ``nodes`` are known."""

    def __init__(self, size: int, nodes: Mapping[tuple[int, int], bytes]) -> None:
        self.size = size
        self._nodes = nodes

    def _perfect(self, level: int, index: int) -> bytes:
        return self._nodes[(level, index)]  # a KeyError: a question that was not planned


class _Planner(Proofs):
    """Answers with placeholders and notes which subtrees the answers took: the algorithms
    look at positions only, never at hashes, so a real tree takes the very same ones."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.wanted: set[tuple[int, int]] = set()

    def _perfect(self, level: int, index: int) -> bytes:
        self.wanted.add((level, index))
        return EMPTY_ROOT


class SubtreeCollector:
    """One pass over the leaf hashes, in order, a batch at a time (:meth:`add`), keeping the
    perfect subtrees some questions need: memory O(log n) besides them, whatever n is."""

    def __init__(self, size: int, wanted: set[tuple[int, int]]) -> None:
        self.size = size
        self._wanted = wanted
        self._found: dict[tuple[int, int], bytes] = {}
        self._edge: list[bytes] = []  # the perfect subtrees of the leaves so far, left to right
        self._count = 0

    def add(self, leaves: Sequence[bytes]) -> None:
        wanted, found, edge = self._wanted, self._found, self._edge
        if self._count + len(leaves) > self.size:
            raise LogProofInvalid(f"more than {self.size} leaves")
        for h in leaves:
            index, level = self._count, 0
            if (0, index) in wanted:
                found[(0, index)] = h
            while index & 1:  # the left sibling is complete: merge, as a binary counter carries
                h = node_hash(edge.pop(), h)
                index >>= 1
                level += 1
                if (level, index) in wanted:
                    found[(level, index)] = h
            edge.append(h)
            self._count += 1

    def tree(self) -> SparseTree:
        if self._count != self.size:
            raise LogProofInvalid(f"{self._count} leaves of a tree of {self.size}")
        return SparseTree(self.size, self._found)


def plan(size: int, ask: Callable[[Proofs], object]) -> set[tuple[int, int]]:
    """The perfect subtrees ``ask`` needs of a tree of ``size`` leaves."""
    planner = _Planner(size)
    ask(planner)
    return planner.wanted


def answer(size: int, leaves: Iterable[Sequence[bytes]], ask: Callable[[Proofs], T]) -> T:
    """``ask`` answered over the tree of the ``size`` leaf hashes ``leaves`` yields in batches,
    keeping only what it needs (service/audit_log.py reads a node's log this way, a page at a
    time)."""
    collector = SubtreeCollector(size, plan(size, ask))
    for batch in leaves:
        collector.add(batch)
    return ask(collector.tree())


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over the leaf hashes ``leaves``."""
    return Tree(leaves).root()


def _check_hashes(proof: Sequence[bytes], *named: bytes) -> None:
    if any(len(h) != HASH_LEN for h in (*proof, *named)):
        raise LogProofInvalid("a hash is not 32 bytes")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: raise LogProofInvalid unless ``leaf`` (a leaf hash) is leaf ``index``
    of the tree of ``size`` leaves whose root is ``expected_root``."""
    _check_hashes(proof, leaf, expected_root)
    if not 0 <= index < size:
        raise LogProofInvalid(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise LogProofInvalid("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofInvalid("inclusion proof is shorter than the tree is deep")
    if r != expected_root:
        raise LogProofInvalid(f"leaf {index} is not in the tree of size {size} with this root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: raise LogProofInvalid unless the tree (old_size, old_root) is a prefix
    of the tree (new_size, new_root)."""
    _check_hashes(proof, old_root, new_root)
    if not 0 <= old_size <= new_size:
        raise LogProofInvalid(f"old size {old_size} is not within 0..{new_size}")
    if old_size == new_size or old_size == 0:
        # Every tree extends the empty one; a tree is consistent only with itself at its size.
        if proof:
            raise LogProofInvalid("a consistency proof for these sizes must be empty")
        if old_size == new_size and old_root != new_root:
            raise LogProofInvalid(f"two different roots for the tree of size {new_size}")
        return
    if not proof:
        raise LogProofInvalid("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node itself
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise LogProofInvalid("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofInvalid("consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise LogProofInvalid(
            f"the tree of size {old_size} is not a prefix of the tree of size {new_size}"
        )
