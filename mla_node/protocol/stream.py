"""Chunked authenticated encryption of evidence files (STREAM, Hoang–Reyhanitabar–Rogaway–Vizár).

A file is encrypted once, when a clerk uploads it, under a fresh random 256-bit key, and those
ciphertext bytes are what the node stores and what travels to the recipient node: one
encryption at rest and on the wire. The key travels inside the HPKE-encrypted, signed envelope.

```
blob   = header || chunk_0 || chunk_1 || ... || chunk_{n-1}
header = "mla-blob" || u8 version (1) || u32be chunk size || nonce prefix (7) || file id (16)
chunk_i = AES-256-GCM(key, nonce_i, plaintext_i, aad = header)      (|plaintext_i| + 16 bytes)
nonce_i = nonce prefix (7) || u32be i || u8 (1 for the last chunk, else 0)
```

Every chunk but the last holds exactly ``chunk size`` plaintext bytes; the last holds 1 to
``chunk size`` bytes, or 0 for an empty file (which is one empty, final chunk). Why each part:

- the counter in the nonce stops chunks being reordered or dropped from the middle;
- the last-chunk flag stops truncation at a chunk boundary (a shortened file's new last chunk
  was sealed with flag 0, so it fails as a last chunk) and extension (nothing may follow a
  chunk sealed with flag 1);
- the header as associated data binds version, chunk size, nonce prefix and file id to every
  chunk, so none of them can be changed without every tag failing.

Pure: key, nonce prefix and file id are arguments (the shell draws them from ``os.urandom``).
Decryption failures of any kind are one ``AttachmentInvalid``, like HPKE's in the envelope.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mla_node.errors import AttachmentInvalid

MAGIC = b"mla-blob"
VERSION = 1
KEY_LEN = 32
NONCE_PREFIX_LEN = 7
FILE_ID_LEN = 16
TAG_LEN = 16
_HEADER = struct.Struct(">8sBI7s16s")
HEADER_LEN = _HEADER.size  # 36
DEFAULT_CHUNK = 1 << 20
# A receiver holds one chunk in memory at a time; the bounds keep a hostile sender's choice of
# chunk size from costing it gigabytes, or a million AES calls per MiB.
MIN_CHUNK = 1 << 12
MAX_CHUNK = 1 << 24
MAX_CHUNKS = 1 << 32  # the counter's range


@dataclass(frozen=True)
class StreamHeader:
    chunk_size: int
    nonce_prefix: bytes
    file_id: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.chunk_size, self.nonce_prefix, self.file_id)


def parse_header(data: bytes) -> StreamHeader:
    if len(data) != HEADER_LEN:
        raise AttachmentInvalid("the file's stream header is truncated")
    magic, version, chunk_size, prefix, file_id = _HEADER.unpack(data)
    if magic != MAGIC or version != VERSION:
        raise AttachmentInvalid("not an mla-node encrypted file of a known version")
    check_chunk_size(chunk_size)
    return StreamHeader(chunk_size, prefix, file_id)


def check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise AttachmentInvalid(f"chunk size {chunk_size} is outside {MIN_CHUNK}..{MAX_CHUNK}")


def chunk_count(plaintext_size: int, chunk_size: int) -> int:
    """An empty file is one (empty) chunk: there is always a last chunk to carry the flag."""
    return max(1, -(-plaintext_size // chunk_size))


def ciphertext_size(plaintext_size: int, chunk_size: int) -> int:
    return HEADER_LEN + plaintext_size + TAG_LEN * chunk_count(plaintext_size, chunk_size)


def chunk_plaintext_sizes(plaintext_size: int, chunk_size: int) -> tuple[int, int]:
    """(number of chunks, plaintext bytes in the last one)."""
    n = chunk_count(plaintext_size, chunk_size)
    return n, plaintext_size - (n - 1) * chunk_size


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class StreamSealer:
    """Encrypts one file chunk by chunk, in order; ``seal(..., last=True)`` ends it."""

    def __init__(self, key: bytes, nonce_prefix: bytes, file_id: bytes, chunk_size: int) -> None:
        if len(key) != KEY_LEN or len(nonce_prefix) != NONCE_PREFIX_LEN:
            raise ValueError("key must be 32 bytes and the nonce prefix 7")
        if len(file_id) != FILE_ID_LEN:
            raise ValueError("file id must be 16 bytes")
        check_chunk_size(chunk_size)
        self.header = StreamHeader(chunk_size, nonce_prefix, file_id).pack()
        self._aead = AESGCM(key)
        self._prefix = nonce_prefix
        self._chunk = chunk_size
        self._index = 0
        self._done = False

    def seal(self, plaintext: bytes, *, last: bool) -> bytes:
        if self._done:
            raise ValueError("the stream already ended with its last chunk")
        if len(plaintext) > self._chunk or (not last and len(plaintext) != self._chunk):
            raise ValueError("every chunk but the last must be exactly the chunk size")
        if self._index >= MAX_CHUNKS:
            raise ValueError("too many chunks for the 32-bit counter")
        nonce = _nonce(self._prefix, self._index, last)
        self._index += 1
        self._done = last
        return self._aead.encrypt(nonce, plaintext, self.header)


class StreamOpener:
    """Decrypts one file chunk by chunk, in order. The caller says which chunk is the last (it
    knows the file's size); a wrong claim fails that chunk's tag."""

    def __init__(self, key: bytes, header: bytes, *, chunk_size: int | None = None) -> None:
        if len(key) != KEY_LEN:
            raise AttachmentInvalid("the file key must be 32 bytes")
        parsed = parse_header(header)
        if chunk_size is not None and parsed.chunk_size != chunk_size:
            raise AttachmentInvalid("the file's chunk size is not the one the envelope names")
        self.header = parsed
        self._raw_header = header
        self._aead = AESGCM(key)
        self._index = 0
        self._done = False

    def open(self, chunk: bytes, *, last: bool) -> bytes:
        if self._done or self._index >= MAX_CHUNKS:
            raise AttachmentInvalid("data after the file's last chunk")
        if len(chunk) < TAG_LEN or len(chunk) > self.header.chunk_size + TAG_LEN:
            raise AttachmentInvalid("a chunk has an impossible length")
        nonce = _nonce(self.header.nonce_prefix, self._index, last)
        try:
            plaintext = self._aead.decrypt(nonce, chunk, self._raw_header)
        except InvalidTag:
            raise AttachmentInvalid(f"chunk {self._index} does not authenticate") from None
        if not last and len(plaintext) != self.header.chunk_size:
            raise AttachmentInvalid("a chunk before the last is not full")
        self._index += 1
        self._done = last
        return plaintext
