"""Strict msgpack and the signing encoding every signed object of the protocol shares.

Two rules hold for every signed structure (envelope, receipt, evidence record, directory):

1. A signature covers exact bytes, never a re-encoding: the signed part travels as a msgpack
   ``bin`` whose content is itself msgpack, and it is decoded only after the signature verified.
2. The bytes signed are domain-separated by a *pre-authentication encoding* (PAE, as in DSSE),
   so a signature made for one kind of object can never be replayed as another kind.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from mla_node.errors import MlaError

# One domain string per kind of signed object. Changing one is a protocol version change.
DOMAIN_ENVELOPE = b"mla-node/v1/envelope"
DOMAIN_RECEIPT = b"mla-node/v1/receipt"
DOMAIN_EVIDENCE = b"mla-node/v1/evidence"
DOMAIN_DIRECTORY = b"mla-node/v1/directory"
DOMAIN_CHECKPOINT = b"mla-node/v1/checkpoint"
DOMAIN_HPKE_INFO = b"mla-node/v1/hpke-info"
DOMAIN_CONTENT = b"mla-node/v1/content"


def pae(domain: bytes, *parts: bytes) -> bytes:
    """Pre-authentication encoding: domain and every part, each prefixed by its 8-byte length.

    Length prefixes make the encoding injective: no two different lists of parts give the same
    bytes, so moving bytes from one part to the next cannot keep a signature valid.
    """
    out = [_u64(len(domain)), domain, _u64(len(parts))]
    for part in parts:
        out += (_u64(len(part)), part)
    return b"".join(out)


# A bound Struct.pack skips parsing the format string on each of the several calls per message.
_u64 = struct.Struct(">Q").pack


def pack(obj: Any) -> bytes:
    """Canonical-enough encoding: maps in the caller's key order, bin for bytes, no ext types.

    Verifiers never re-encode, so canonical form is a convenience for test vectors, not a rule.
    """
    data: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=False)
    return data


def unpack(
    data: bytes,
    *,
    error: type[MlaError],
    max_bytes: int,
    max_str: int = 1 << 20,
    max_items: int = 10_000,
    max_depth: int = 16,
) -> Any:
    """Decode untrusted msgpack with hard limits; any problem raises ``error``.

    msgpack's own limits bound each length header before allocation (so a 4 GiB array header
    costs nothing); depth is checked afterwards because msgpack-python has no depth limit of its
    own, and the size limits already bound the work that check can cost.
    """
    if len(data) > max_bytes:
        raise error(f"{len(data)} bytes is more than the limit of {max_bytes}")
    try:
        # unpackb takes no max_buffer_size (only Unpacker does): the length check above is it.
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_str,
            max_bin_len=max_bytes,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
            ext_hook=_refuse_ext,
            object_pairs_hook=_strict_map,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise error(f"not valid msgpack: {type(exc).__name__}") from exc
    except Exception as exc:  # msgpack raises a few undocumented types on hostile input
        raise error(f"not valid msgpack: {type(exc).__name__}") from exc
    _check_depth(obj, max_depth, error)
    return obj


def _refuse_ext(code: int, data: bytes) -> Any:
    # max_ext_len=0 still lets a zero-length ext 8 through; refuse every ext type here.
    raise ValueError(f"ext type {code} is not allowed")


def _strict_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Maps have text keys, each at most once: a duplicate key would let two decoders (first
    wins, last wins) read different values out of the same signed bytes."""
    # Every map of every message comes here, so check in C first: fewer keys than pairs is
    # exactly "some key came twice". strict_map_key has refused unhashable keys already.
    out: dict[str, Any] = dict(pairs)
    if len(out) == len(pairs) and _STR.issuperset(map(type, out)):
        return out
    return _strict_map_slowly(pairs)


def _strict_map_slowly(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise ValueError("map keys must be strings")
        if key in out:
            raise ValueError(f"duplicate map key {key!r}")
        out[key] = value
    return out


def _check_depth(obj: Any, max_depth: int, error: type[MlaError]) -> None:
    """Depth counts containers only: a flat map of scalars has depth 1, a scalar depth 0."""
    kind = type(obj)
    if kind in _SCALARS:
        return
    if (kind is dict or kind is list) and _SCALARS.issuperset(
        map(type, obj.values() if kind is dict else obj)
    ):
        # One flat container, the usual case (headers, outer arrays): no stack needed.
        if max_depth < 1:
            raise error(f"nesting deeper than {max_depth}")
        return
    # Only containers go on the stack: scalars cannot be too deep, and most items are scalars.
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (list, dict)):
            continue
        if depth > max_depth:
            raise error(f"nesting deeper than {max_depth}")
        children = item.values() if isinstance(item, dict) else item
        # Testing the set of types runs in C; the loop is for containers that hold containers.
        if _SCALARS.issuperset(map(type, children)):
            continue
        stack.extend((child, depth + 1) for child in children if type(child) not in _SCALARS)


# Exact types, so a subclass of anything (which msgpack never makes) takes the general path.
_STR = frozenset({str})
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


class Fields:
    """Typed access to a decoded msgpack map; a missing or mistyped field raises ``error``.

    Keeps the decoders of envelopes, receipts and the directory free of repeated isinstance
    checks, and makes every refusal name the field at fault.
    """

    def __init__(self, obj: Any, error: type[MlaError], where: str) -> None:
        if not isinstance(obj, dict):
            raise error(f"{where} must be a map")
        self._obj: dict[str, Any] = obj
        self._error = error
        self._where = where

    def _get(self, key: str, kind: type | tuple[type, ...], optional: bool) -> Any:
        if key not in self._obj:
            if optional:
                return None
            raise self._error(f"{self._where}.{key} is missing", field=f"{self._where}.{key}")
        value = self._obj[key]
        # bool is an int in Python; a protocol int field must not accept true/false.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise self._error(
                f"{self._where}.{key} has the wrong type", field=f"{self._where}.{key}"
            )
        return value

    # Each accessor takes the value straight when its type is exactly right (what msgpack
    # makes) and leaves everything else, missing keys included, to _get and its errors.

    def text(self, key: str, max_len: int = 256) -> str:
        value = self._obj.get(key)
        if type(value) is not str:
            value = self._get(key, str, False)
        if len(value) > max_len:
            raise self._error(f"{self._where}.{key} is too long", field=f"{self._where}.{key}")
        return value

    def opt_text(self, key: str, max_len: int = 256) -> str | None:
        return None if self._obj.get(key) is None else self.text(key, max_len)

    def integer(self, key: str) -> int:
        value = self._obj.get(key)
        if type(value) is int:
            return value
        checked: int = self._get(key, int, False)
        return checked

    def blob(self, key: str, length: int | None = None) -> bytes:
        value = self._obj.get(key)
        if type(value) is not bytes:
            value = self._get(key, bytes, False)
        if length is not None and len(value) != length:
            raise self._error(
                f"{self._where}.{key} must be {length} bytes", field=f"{self._where}.{key}"
            )
        return value

    def array(self, key: str) -> list[Any]:
        value = self._obj.get(key)
        if type(value) is list:
            return value
        checked: list[Any] = self._get(key, list, False)
        return checked

    def child(self, key: str) -> Fields:
        return Fields(self._get(key, dict, False), self._error, f"{self._where}.{key}")

    def children(self, key: str) -> list[Fields]:
        return [
            Fields(item, self._error, f"{self._where}.{key}[{i}]")
            for i, item in enumerate(self.array(key))
        ]

    def raw(self) -> dict[str, Any]:
        return self._obj

    def one_of(self, key: str, allowed: frozenset[str]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise self._error(
                f"{self._where}.{key} is not one of {sorted(allowed)}", field=f"{self._where}.{key}"
            )
        return value


def expect_array(obj: Any, length: int, error: type[MlaError], where: str) -> list[Any]:
    if not isinstance(obj, list) or len(obj) != length:
        raise error(f"{where} must be an array of {length} items")
    return obj
