"""Strict msgpack decoding, the PAE signing encoding, typed field access and key ids."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mla_node.errors import MlaError, ReceiptError
from mla_node.protocol import codec
from mla_node.protocol.codec import Fields, expect_array, pae, unpack
from mla_node.protocol.keys import SIGNING_ALG, Suite, key_id
from tests.factory import fixed_encryption_key, fixed_signing_key

E = ReceiptError  # any MlaError subclass: the decoder raises exactly the class it is given

# --- PAE ------------------------------------------------------------------------------------------


def _un_pae(data: bytes) -> tuple[bytes, list[bytes]]:
    """The inverse of pae(): that it exists (and consumes every byte) proves pae is injective."""

    def take(n: int) -> bytes:
        nonlocal data
        assert len(data) >= n
        out, data = data[:n], data[n:]
        return out

    def length() -> int:
        value: int = struct.unpack(">Q", take(8))[0]
        return value

    domain = take(length())
    parts = [take(length()) for _ in range(length())]
    assert data == b""
    return domain, parts


def test_pae_known_answer() -> None:
    assert pae(b"d", b"ab", b"") == (
        b"\x00\x00\x00\x00\x00\x00\x00\x01d"
        b"\x00\x00\x00\x00\x00\x00\x00\x02"
        b"\x00\x00\x00\x00\x00\x00\x00\x02ab"
        b"\x00\x00\x00\x00\x00\x00\x00\x00"
    )


def test_pae_moving_bytes_between_parts_changes_the_encoding() -> None:
    assert pae(b"d", b"ab", b"c") != pae(b"d", b"a", b"bc")
    assert pae(b"d", b"abc") != pae(b"d", b"ab", b"c")
    assert pae(b"d") != pae(b"d", b"")
    assert pae(b"d", b"x") != pae(b"dx")
    assert pae(codec.DOMAIN_RECEIPT, b"x") != pae(codec.DOMAIN_EVIDENCE, b"x")


def test_domains_are_distinct() -> None:
    domains = [
        codec.DOMAIN_ENVELOPE,
        codec.DOMAIN_RECEIPT,
        codec.DOMAIN_EVIDENCE,
        codec.DOMAIN_DIRECTORY,
        codec.DOMAIN_HPKE_INFO,
    ]
    assert len(set(domains)) == len(domains)


@given(domain=st.binary(max_size=40), parts=st.lists(st.binary(max_size=40), max_size=6))
def test_pae_is_decodable_hence_injective(domain: bytes, parts: list[bytes]) -> None:
    assert _un_pae(pae(domain, *parts)) == (domain, parts)


@given(
    a=st.tuples(st.binary(max_size=8), st.lists(st.binary(max_size=8), max_size=4)),
    b=st.tuples(st.binary(max_size=8), st.lists(st.binary(max_size=8), max_size=4)),
)
def test_pae_equal_only_for_equal_inputs(
    a: tuple[bytes, list[bytes]], b: tuple[bytes, list[bytes]]
) -> None:
    assert (pae(a[0], *a[1]) == pae(b[0], *b[1])) == (a == b)


# --- strict unpack --------------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@given(value=msgpack_values)
def test_pack_unpack_round_trip(value: Any) -> None:
    assert unpack(codec.pack(value), error=E, max_bytes=1 << 16, max_depth=64) == value


def _refused(data: bytes, **limits: Any) -> MlaError:
    with pytest.raises(E) as info:
        unpack(data, error=E, **{"max_bytes": 1 << 20, **limits})
    assert type(info.value) is E
    return info.value


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used byte"),
        pytest.param(b"\x92\x01", id="truncated array"),
        pytest.param(b"\x01\x02", id="trailing data"),
        pytest.param(b"\xa2\xff\xfe", id="invalid utf-8"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array of 2^32"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map of 2^32"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin of 4 GiB"),
        pytest.param(b"\x91" * 10_000 + b"\x01", id="10,000 deep"),
        pytest.param(msgpack.packb(msgpack.ExtType(1, b"x")), id="ext"),
        pytest.param(b"\xc7\x00\x01", id="zero-length ext"),
        pytest.param(b"\xd6\xff\x00\x00\x00\x00", id="timestamp ext"),
        pytest.param(msgpack.packb({1: "a"}), id="int key"),
        pytest.param(b"\x81\xc4\x01k\x01", id="bin key"),
        pytest.param(b"\x81\xc0\x01", id="nil key"),
        pytest.param(b"\x82\xa1k\x01\xa1k\x02", id="duplicate key"),
        pytest.param(b"\x91\x82\xa1k\x01\xa1k\x02", id="nested duplicate key"),
    ],
)
def test_hostile_input_is_refused_with_the_given_error(data: bytes) -> None:
    _refused(data)


def test_limits() -> None:
    _refused(bytes(11), max_bytes=10)
    _refused(codec.pack("x" * 11), max_str=10)
    assert unpack(codec.pack("x" * 10), error=E, max_bytes=100, max_str=10) == "x" * 10
    _refused(codec.pack(list(range(11))), max_items=10)
    _refused(codec.pack({str(i): i for i in range(11)}), max_items=10)


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ([], 1), ({"a": 1}, 1), ([[1]], 2), ({"a": [{"b": 1}]}, 3), ([[[[]]]], 4)],
)
def test_depth_counts_containers(value: Any, depth: int) -> None:
    data = codec.pack(value)
    assert unpack(data, error=E, max_bytes=100, max_depth=max(depth, 1)) == value
    if depth > 1:
        _refused(data, max_depth=depth - 1)


def test_expect_array() -> None:
    assert expect_array([1, 2], 2, E, "x") == [1, 2]
    for bad in ([1], [1, 2, 3], {"a": 1}, "ab", None):
        with pytest.raises(E):
            expect_array(bad, 2, E, "x")


# --- Fields ---------------------------------------------------------------------------------------

SAMPLE: dict[str, Any] = {
    "n": 5,
    "b": True,
    "s": "hello",
    "bin": b"\x01\x02",
    "arr": [1, {"x": 1}],
    "m": {"k": "v"},
    "list_of_maps": [{"a": 1}, {"a": 2}],
    "null": None,
    "f": 1.0,
}


def fields() -> Fields:
    return Fields(SAMPLE, E, "obj")


def test_fields_read_each_type() -> None:
    f = fields()
    assert f.integer("n") == 5
    assert f.text("s") == "hello"
    assert f.blob("bin") == b"\x01\x02"
    assert f.blob("bin", 2) == b"\x01\x02"
    assert f.array("arr") == [1, {"x": 1}]
    assert f.child("m").text("k") == "v"
    assert [c.integer("a") for c in f.children("list_of_maps")] == [1, 2]
    assert f.opt_text("null") is None
    assert f.opt_text("absent") is None
    assert f.opt_text("s") == "hello"
    assert f.one_of("s", frozenset({"hello", "bye"})) == "hello"
    assert f.raw() is SAMPLE


def _bad(action: Any, field: str) -> None:
    with pytest.raises(E) as info:
        action()
    assert info.value.field == field


def test_bool_is_not_an_int() -> None:
    _bad(lambda: fields().integer("b"), "obj.b")


def test_fields_refuse_wrong_types_and_name_the_field() -> None:
    f = fields()
    _bad(lambda: f.integer("s"), "obj.s")
    _bad(lambda: f.integer("f"), "obj.f")
    _bad(lambda: f.integer("null"), "obj.null")
    _bad(lambda: f.integer("missing"), "obj.missing")
    _bad(lambda: f.text("n"), "obj.n")
    _bad(lambda: f.text("bin"), "obj.bin")
    _bad(lambda: f.text("s", max_len=4), "obj.s")
    _bad(lambda: f.opt_text("n"), "obj.n")
    _bad(lambda: f.blob("s"), "obj.s")
    _bad(lambda: f.blob("bin", 3), "obj.bin")
    _bad(lambda: f.array("m"), "obj.m")
    _bad(lambda: f.child("arr"), "obj.arr")
    _bad(lambda: f.one_of("s", frozenset({"bye"})), "obj.s")
    with pytest.raises(E):
        f.children("arr")  # an item that is not a map
    with pytest.raises(E):
        Fields([1], E, "obj")
    with pytest.raises(E):
        f.child("m").integer("k")


# --- key ids --------------------------------------------------------------------------------------


def test_key_id_is_bound_to_algorithm_and_key() -> None:
    sign = fixed_signing_key("kid-test")
    assert sign.kid == key_id(SIGNING_ALG, sign.public)
    assert len(sign.kid) == 24
    assert int(sign.kid, 16) >= 0
    x = fixed_encryption_key("kid-test", Suite.X25519)
    assert x.kid == key_id(Suite.X25519.value, x.public)
    # the same 32 bytes named as another algorithm get another id
    assert key_id(SIGNING_ALG, x.public) != key_id(Suite.X25519.value, x.public)


def test_key_id_known_answer() -> None:
    # SHA-256("mla-node/v1/kid" 0x00 "ed25519" 0x00 public)[:12 bytes], hex
    assert key_id("ed25519", bytes(32)) == "617bba48f6b342d1acd1c1d4"
