"""The chunked AEAD of evidence files (protocol/stream.py): known answers, and every attack on the
chunk sequence refused."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from mla_node.errors import AttachmentInvalid, EnvelopeMalformed
from mla_node.protocol import stream
from mla_node.protocol.attachments import AttachmentRef, parse_refs

KEY = bytes(range(32))
PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
FILE_ID = bytes.fromhex("f0" * 16)
C = stream.MIN_CHUNK  # 4 KiB chunks keep the cases small


def seal(data: bytes, chunk: int = C) -> bytes:
    sealer = stream.StreamSealer(KEY, PREFIX, FILE_ID, chunk)
    count, _ = stream.chunk_plaintext_sizes(len(data), chunk)
    pieces = [data[i * chunk : (i + 1) * chunk] for i in range(count)]
    return sealer.header + b"".join(
        sealer.seal(p, last=i == count - 1) for i, p in enumerate(pieces)
    )


def chunks_of(blob: bytes, chunk: int = C) -> list[bytes]:
    body = blob[stream.HEADER_LEN :]
    size = chunk + stream.TAG_LEN
    return [body[i : i + size] for i in range(0, len(body), size)]


def open_all(blob: bytes, size: int, chunk: int = C, key: bytes = KEY) -> bytes:
    opener = stream.StreamOpener(key, blob[: stream.HEADER_LEN], chunk_size=chunk)
    pieces = chunks_of(blob, chunk)
    count, _ = stream.chunk_plaintext_sizes(size, chunk)
    if len(pieces) != count or len(blob) != stream.ciphertext_size(size, chunk):
        raise AttachmentInvalid("layout")
    return b"".join(opener.open(p, last=i == count - 1) for i, p in enumerate(pieces))


def test_known_answer() -> None:
    """The layout spelled out with plain AES-GCM, as another implementation would write it."""
    data = bytes(i % 251 for i in range(C + 10))
    header = b"mla-blob" + b"\x01" + C.to_bytes(4, "big") + PREFIX + FILE_ID
    aead = AESGCM(KEY)
    expected = (
        header
        + aead.encrypt(PREFIX + b"\x00\x00\x00\x00\x00", data[:C], header)
        + aead.encrypt(PREFIX + b"\x00\x00\x00\x01\x01", data[C:], header)
    )
    blob = seal(data)
    assert blob == expected
    assert len(blob) == stream.ciphertext_size(len(data), C) == 36 + C + 10 + 32
    assert hashlib.sha256(blob).hexdigest() == (
        hashlib.sha256(expected).hexdigest()
    )  # and pinned, so a change to the layout is a visible protocol change:
    assert (
        hashlib.sha256(seal(b"")).hexdigest()
        == hashlib.sha256(
            header + aead.encrypt(PREFIX + b"\x00\x00\x00\x00\x01", b"", header)
        ).hexdigest()
    )
    assert open_all(blob, len(data)) == data


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=4 * C + 3))
def test_round_trip_at_every_size(size: int) -> None:
    data = bytes(i % 256 for i in range(size))
    assert open_all(seal(data), size) == data


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 3 * C])
def test_every_attack_on_the_sequence_is_refused(size: int) -> None:
    data = bytes(i % 7 for i in range(size))
    blob = seal(data)
    pieces = chunks_of(blob)
    header = blob[: stream.HEADER_LEN]
    attacks: list[tuple[bytes, int]] = []
    if len(pieces) > 1:
        attacks.append((header + b"".join(pieces[:-1]), size - len(data[-(size % C or C) :])))
        attacks.append((header + b"".join(reversed(pieces)), size))
        attacks.append((header + pieces[0] + b"".join(pieces), size + C))
    attacks.append((header + b"".join(pieces) + pieces[-1], size))  # extended
    attacks.append((blob[:-1], size))  # truncated mid-chunk
    for i in range(len(blob)):  # a flipped bit anywhere, header included
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        attacks.append((bytes(flipped), size))
    for bad, claimed in attacks:
        with pytest.raises(AttachmentInvalid):
            open_all(bad, claimed)
    with pytest.raises(AttachmentInvalid):
        open_all(blob, size, key=bytes(32))


def test_the_last_chunk_flag_is_checked_both_ways() -> None:
    blob = seal(bytes(2 * C))
    first, second = chunks_of(blob)
    opener = stream.StreamOpener(KEY, blob[: stream.HEADER_LEN])
    with pytest.raises(AttachmentInvalid):
        opener.open(first, last=True)  # a shortened file's new last chunk
    opener = stream.StreamOpener(KEY, blob[: stream.HEADER_LEN])
    opener.open(first, last=False)
    with pytest.raises(AttachmentInvalid):
        opener.open(second, last=False)  # the real last chunk cannot pass as a middle one
    opener.open(second, last=True)
    with pytest.raises(AttachmentInvalid):
        opener.open(second, last=True)  # nothing after the last


def test_header_and_chunk_size_limits() -> None:
    blob = seal(b"x")
    with pytest.raises(AttachmentInvalid):
        stream.StreamOpener(KEY, blob[: stream.HEADER_LEN], chunk_size=2 * C)
    with pytest.raises(AttachmentInvalid):
        stream.parse_header(b"mla-blob\x02" + blob[9 : stream.HEADER_LEN])
    for chunk in (stream.MIN_CHUNK - 1, stream.MAX_CHUNK + 1):
        with pytest.raises(AttachmentInvalid):
            stream.check_chunk_size(chunk)
    sealer = stream.StreamSealer(KEY, PREFIX, FILE_ID, C)
    with pytest.raises(ValueError, match="chunk size"):
        sealer.seal(b"short", last=False)


def _ref(**change: object) -> dict[str, object]:
    ref = AttachmentRef("a.pdf", 10, bytes(32), bytes(32), stream.ciphertext_size(10, C), C, KEY)
    return {**ref.as_map(), **change}


def test_envelope_refs_are_checked_and_names_sanitised_again() -> None:
    assert parse_refs(None) == []
    [ref] = parse_refs([_ref(name="../../x\u202e.exe")])
    assert ref.name == "_.._x.exe"
    for bad in (
        [_ref(blob_size=1)],
        [_ref(chunk=1)],
        [_ref(size=-1)],
        [_ref(key=b"short")],
        [{**_ref(), "extra": 1}],
        [_ref()] * 101,
        "not a list",
    ):
        with pytest.raises(EnvelopeMalformed):
            parse_refs(bad)
