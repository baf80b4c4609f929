"""RFC 9162 Merkle tree: known answers, an independent naive oracle, and corrupted proofs.

The oracle below is the RFC's recursive definitions (§2.1.1, §2.1.3.1, §2.1.4.1) transcribed
literally, on slices, with no shared code: our tree, proofs and verifiers must agree with it.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mla_node.errors import LogProofInvalid
from mla_node.protocol import merkle
from mla_node.protocol.merkle import Tree, leaf_hash, verify_consistency, verify_inclusion


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:]))


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


def data(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def tree(n: int) -> Tree:
    return Tree([leaf_hash(x) for x in data(n)])


# --- known answers ----------------------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") == _h(b"\x00")
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == _h(b"\x01" + b"a" * 32 + b"b" * 32)
    # one leaf's root is its leaf hash, never the bare data's hash
    assert merkle.root([leaf_hash(b"x")]) == _h(b"\x00x") != _h(b"x")


def test_rfc6962_reference_roots() -> None:
    """The Certificate Transparency reference tree (certificate-transparency-go's and Trillian's
    test data: 8 leaves, the first one empty); RFC 9162 keeps RFC 6962's hashing."""
    leaves = [
        bytes.fromhex(x)
        for x in [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
    ]
    expected = {
        1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    }
    t = Tree([leaf_hash(x) for x in leaves])
    for size, root in expected.items():
        assert t.root(size).hex() == root
        assert naive_mth(leaves[:size]).hex() == root


# --- against the naive oracle -------------------------------------------------------------------


@pytest.mark.parametrize("n", range(65))
def test_roots_and_proofs_match_the_oracle(n: int) -> None:
    d = data(n)
    t = tree(n)
    assert t.root() == merkle.root(t.levels[0]) == naive_mth(d)
    for size in range(n + 1):
        assert t.root(size) == naive_mth(d[:size])
    for m in range(n):
        proof = t.inclusion_proof(m)
        assert proof == naive_path(m, d)
        verify_inclusion(leaf_hash(d[m]), m, n, proof, t.root())
    for m in range(1, n):
        proof = t.consistency_proof(m)
        assert proof == naive_subproof(m, d, True)
        verify_consistency(m, n, naive_mth(d[:m]), t.root(), proof)


@pytest.mark.parametrize("n", range(1, 65))
def test_a_sparse_tree_answers_as_the_oracle_from_one_pass_over_the_leaves(n: int) -> None:
    """What a node asks of its log (roots of two sizes, an audit path, a consistency proof),
    answered from the few subtrees one pass kept, with the leaves fed in uneven batches."""
    d = data(n)
    hashes = [leaf_hash(x) for x in d]
    batches = [hashes[i : i + 7] for i in range(0, n, 7)]
    for size in range(1, n + 1):
        for m in sorted({0, size // 2, size - 1}):

            def ask(t: merkle.Proofs, m: int = m, size: int = size) -> object:
                return (
                    t.root(),
                    t.root(size),
                    t.leaf(m),
                    t.inclusion_proof(m, size),
                    t.consistency_proof(m + 1, size) if m + 1 <= size else None,
                )

            kept = merkle.plan(n, ask)
            assert len(kept) <= 4 * n.bit_length() ** 2  # O(log² n), not O(n)
            assert merkle.answer(n, batches, ask) == (
                naive_mth(d),
                naive_mth(d[:size]),
                hashes[m],
                naive_path(m, d[:size]),
                naive_subproof(m + 1, d[:size], True) if m + 1 < size else [],
            )


def test_a_sparse_tree_refuses_the_wrong_number_of_leaves() -> None:
    hashes = [leaf_hash(x) for x in data(5)]
    with pytest.raises(LogProofInvalid):
        merkle.answer(4, [hashes], lambda t: t.root())
    with pytest.raises(LogProofInvalid):
        merkle.answer(6, [hashes], lambda t: t.root())


def test_trivial_consistency() -> None:
    t = tree(5)
    verify_consistency(0, 5, merkle.EMPTY_ROOT, t.root(), [])
    verify_consistency(5, 5, t.root(), t.root(), [])
    with pytest.raises(LogProofInvalid):
        verify_consistency(5, 5, t.root(), tree(4).root(), [])
    with pytest.raises(LogProofInvalid):
        verify_consistency(3, 5, t.root(3), t.root(), [])


# --- properties: every proof verifies, every corruption is refused -----------------------------

_TREES: dict[int, Tree] = {}


def big(n: int) -> Tree:
    if n not in _TREES:
        _TREES.clear()  # keep one tree at a time
        _TREES[n] = tree(n)
    return _TREES[n]


def _corruptions(proof: list[bytes]) -> list[list[bytes]]:
    out = [[*proof, b"\x00" * 32], [b"\x11" * 32, *proof]]  # extended
    if proof:
        out.append(proof[:-1])  # truncated
        out.append(proof[1:])
        for i in {0, len(proof) // 2, len(proof) - 1}:
            flipped = bytearray(proof[i])
            flipped[i % 32] ^= 1
            out.append([*proof[:i], bytes(flipped), *proof[i + 1 :]])
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_inclusion_proofs_verify_and_corruptions_are_refused(draw: st.DataObject) -> None:
    n = draw.draw(st.integers(1, 2000), label="size")
    m = draw.draw(st.integers(0, n - 1), label="index")
    t = big(n + 1)  # one leaf more, for the true root of the next size
    root, leaf = t.root(n), t.levels[0][m]
    proof = t.inclusion_proof(m, n)
    verify_inclusion(leaf, m, n, proof, root)
    bad_calls = [(leaf, m, n, p, root) for p in _corruptions(proof)]
    bad_calls += [
        (leaf_hash(b"another leaf"), m, n, proof, root),  # wrong leaf
        (t.levels[0][(m + 1) % (n + 1)], m, n, proof, root),  # a neighbour's leaf
        (leaf, m, n, proof, leaf_hash(b"x")),  # wrong root
        # wrong size, each checked against that size's true root (a signed head binds both)
        (leaf, m, n + 1, proof, t.root(n + 1)),
        (leaf, m + 1, n, proof, root),  # wrong index
        (leaf, n, n, proof, root),
        (leaf, -1, n, proof, root),
    ]
    if m < n - 1:
        bad_calls.append((leaf, m, n - 1, proof, t.root(n - 1)))
    if m > 0:
        bad_calls.append((leaf, m - 1, n, proof, root))
    for args in bad_calls:
        with pytest.raises(LogProofInvalid):
            verify_inclusion(*args)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_consistency_proofs_verify_and_corruptions_are_refused(draw: st.DataObject) -> None:
    n = draw.draw(st.integers(2, 2000), label="size")
    m = draw.draw(st.integers(1, n - 1), label="old size")
    t = big(n + 1)
    old, new = t.root(m), t.root(n)
    proof = t.consistency_proof(m, n)
    verify_consistency(m, n, old, new, proof)
    bad_calls = [(m, n, old, new, p) for p in _corruptions(proof)]
    bad_calls += [
        (m, n, leaf_hash(b"x"), new, proof),  # wrong old root (a forked prefix)
        (m, n, old, leaf_hash(b"x"), proof),  # wrong new root
        # wrong sizes, each with that size's true root
        (m, n + 1, old, t.root(n + 1), proof),
        (m + 1, n, t.root(m + 1), new, proof),
        (m - 1, n, t.root(m - 1), new, proof),
        (m, n - 1, old, t.root(n - 1), proof),
        (n, m, new, old, proof),
    ]
    for args in bad_calls:
        with pytest.raises(LogProofInvalid):
            verify_consistency(*args)


def test_hashes_of_the_wrong_length_are_refused() -> None:
    t = tree(4)
    with pytest.raises(LogProofInvalid):
        verify_inclusion(b"short", 0, 4, t.inclusion_proof(0), t.root())
    with pytest.raises(LogProofInvalid):
        verify_consistency(2, 4, t.root(2), t.root(), [b"short"])
    with pytest.raises(LogProofInvalid):
        t.inclusion_proof(4)
    with pytest.raises(LogProofInvalid):
        t.consistency_proof(5)
