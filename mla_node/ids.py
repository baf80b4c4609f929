"""ULIDs: 48-bit millisecond time and 80 random bits in Crockford base32.

Sortable by creation time, so ``ORDER BY id`` is the order things happened in and ids serve as
pagination cursors; unguessable, so knowing one request's id tells nothing about another's.
"""

from __future__ import annotations

import os
import re

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def encode_ulid(ms: int, randomness: bytes) -> str:
    if not 0 <= ms < 1 << 48 or len(randomness) != 10:
        raise ValueError("a ULID needs a 48-bit time and 10 random bytes")
    value = (ms << 80) | int.from_bytes(randomness, "big")
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


_last: tuple[int, int] = (-1, 0)


def new_ulid(ms: int) -> str:
    """Monotonic within the process: a second id in the same millisecond is the first plus one,
    so ids made one after the other also sort one after the other."""
    global _last
    last_ms, last_random = _last
    if ms <= last_ms and last_random < (1 << 80) - 1:
        ms, randomness = last_ms, last_random + 1
    else:
        randomness = int.from_bytes(os.urandom(10), "big")
    _last = (ms, randomness)
    return encode_ulid(ms, randomness.to_bytes(10, "big"))


def is_ulid(value: str) -> bool:
    return bool(ULID_PATTERN.match(value))


def ulid_ms(value: str) -> int:
    """The creation time (ms since the epoch) a ULID carries in its first 10 characters."""
    ms = 0
    for char in value[:10]:
        ms = ms * 32 + _ALPHABET.index(char)
    return ms
