"""The codec's fast paths decide exactly what the straightforward code they replaced decided.

The references below are the earlier implementations, kept here verbatim in behaviour: the
fast paths skip work for the common case (msgpack's own exact types, flat containers, no
duplicate keys), and anything else must fall through to the same refusal with the same error.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mla_node.errors import CheckpointInvalid, MlaError, ReceiptError
from mla_node.protocol import codec
from mla_node.protocol.checkpoint import sign_checkpoint, verify_checkpoint
from mla_node.protocol.codec import Fields
from mla_node.protocol.receipts import DELIVERED, sign_receipt, verify_receipt
from tests.factory import NOW, make_network

E = ReceiptError


def _reference_check_depth(obj: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            children: Any = item
        elif isinstance(item, dict):
            children = item.values()
        else:
            continue
        if depth > max_depth:
            raise E(f"nesting deeper than {max_depth}")
        stack.extend((child, depth + 1) for child in children)


def _outcome(action: Any) -> tuple[str, Any]:
    try:
        return ("ok", action())
    except (MlaError, ValueError) as exc:
        return (type(exc).__name__, str(exc))


class _List(list[Any]):
    pass


class _Dict(dict[str, Any]):
    pass


class _Str(str):
    pass


class _Int(enum.IntEnum):
    ONE = 1


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
_odd_scalars = st.sampled_from([_Str("s"), _Int.ONE, bytearray(b"x")])
_nested = st.recursive(
    _scalars | _odd_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=3), children, max_size=4)
        | st.lists(children, max_size=3).map(_List)
        | st.dictionaries(st.text(max_size=3), children, max_size=3).map(_Dict)
    ),
    max_leaves=25,
)


@given(value=_nested, max_depth=st.integers(min_value=0, max_value=6))
def test_depth_check_refuses_exactly_what_the_reference_refuses(value: Any, max_depth: int) -> None:
    assert _outcome(lambda: codec._check_depth(value, max_depth, E)) == _outcome(
        lambda: _reference_check_depth(value, max_depth)
    )


def _reference_strict_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise ValueError("map keys must be strings")
        if key in out:
            raise ValueError(f"duplicate map key {key!r}")
        out[key] = value
    return out


_keys = st.sampled_from(["a", "b", "c", _Str("a"), b"a", b"b"])


@given(pairs=st.lists(st.tuples(_keys, st.integers(0, 3)), max_size=6))
def test_map_check_refuses_exactly_what_the_reference_refuses(
    pairs: list[tuple[Any, Any]],
) -> None:
    assert _outcome(lambda: codec._strict_map(pairs)) == _outcome(
        lambda: _reference_strict_map(pairs)
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x82\xa1k\x01\xa1k\x02", id="duplicate"),
        pytest.param(b"\x83\xa1a\x01\xa1k\x01\xa1k\x02", id="duplicate after another key"),
        pytest.param(b"\x82\xc4\x01k\x01\xa1k\x02", id="bin key then text key"),
        pytest.param(b"\x81\x91\x82\xa1k\x01\xa1k\x02", id="nested duplicate"),
    ],
)
def test_bad_maps_are_refused_as_before(data: bytes) -> None:
    with pytest.raises(E, match="not valid msgpack: ValueError"):
        codec.unpack(data, error=E, max_bytes=100)


def _reference_get(obj: dict[str, Any], key: str, kind: type) -> tuple[str, Any]:
    if key not in obj:
        return ("missing", f"obj.{key}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        return ("wrong type", f"obj.{key}")
    return ("ok", value)


_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    7,
    _Int.ONE,
    1.0,
    "text",
    _Str("text"),
    b"bytes",
    bytearray(b"bytes"),
    [1],
    _List([1]),
    {"a": 1},
]


_ABSENT = object()


@pytest.mark.parametrize("value", [*_VALUES, _ABSENT], ids=repr)
@pytest.mark.parametrize(
    ("accessor", "kind"),
    [("integer", int), ("text", str), ("blob", bytes), ("array", list)],
)
def test_field_accessors_take_and_refuse_what_they_did(
    accessor: str, kind: type, value: Any
) -> None:
    obj = {} if value is _ABSENT else {"k": value}
    expected = _reference_get(obj, "k", kind)
    with_error: tuple[str, Any]
    try:
        got = getattr(Fields(obj, E, "obj"), accessor)("k")
        with_error = ("ok", got)
        assert got is obj["k"]
    except E as exc:
        with_error = ("missing" if "missing" in exc.detail else "wrong type", exc.field)
    assert with_error == expected


def test_a_container_whose_format_is_a_float_is_refused() -> None:
    """1.0 equals 1 and a float64 re-encodes as itself, so before this was refused the same
    signed receipt (or checkpoint) verified under a second digest."""
    net = make_network(("AR", "BR"), now=NOW)
    receipt = sign_receipt(
        net.nodes["BR"].signing,
        message_id="M",
        sender="AR",
        recipient="BR",
        envelope_digest=bytes(32),
        status=DELIVERED,
        code=None,
        at=NOW,
    )
    float_one = msgpack.packb(1.0)
    assert receipt[:2] == b"\x94\x01" and float_one[:1] == b"\xcb"
    verify_receipt(receipt, net.directory)
    with pytest.raises(ReceiptError, match="unsupported container format"):
        verify_receipt(b"\x94" + float_one + receipt[2:], net.directory)

    head = sign_checkpoint(net.nodes["BR"].signing, node="BR", size=1, root=bytes(32), at=NOW)
    verify_checkpoint(head, net.directory, node="BR")
    with pytest.raises(CheckpointInvalid, match="unsupported container format"):
        verify_checkpoint(b"\x94" + float_one + head[2:], net.directory, node="BR")
