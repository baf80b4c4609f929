"""Attachments of a request: what the signed envelope says of each file, and its display name.

The file itself never travels in the envelope; the envelope body names it (``attachments``, a
list of maps, left out when there is none, so bodies without files are unchanged):

| key | type | meaning |
|---|---|---|
| ``name`` | str ≤ 255 UTF-8 bytes | the display name, sanitised (never used as a path) |
| ``size`` | int ≥ 0 | plaintext bytes |
| ``sha256`` | bin 32 | SHA-256 of the plaintext |
| ``blob`` | bin 32 | SHA-256 of the encrypted file (``protocol/stream.py``), its name on disk |
| ``blob_size`` | int | bytes of the encrypted file, = ``ciphertext_size(size, chunk)`` |
| ``chunk`` | int | chunk size of the encrypted file |
| ``key`` | bin 32 | the file's AES-256-GCM key |

So the sender's signature binds each file's digest, size and key, and only the recipient (who
alone can open the HPKE ciphertext) learns the key.

A name comes from a clerk's computer, or from a peer: it is only ever shown, never used to make
a path (stored files are named by their digest), and it is sanitised both where it is uploaded
and where it is received (:func:`sanitise_name`).
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Any

from mla_node.errors import EnvelopeMalformed
from mla_node.protocol import codec, stream

MAX_ATTACHMENTS = 100
MAX_NAME_BYTES = 255
MAX_NAME_HEADER = 4096  # characters of the X-File-Name header read at all
MAX_FILE_SIZE = 1 << 50  # far above any configured limit; keeps sizes inside SQLite's int64
DEFAULT_NAME = "attachment"
ATTACHMENT_FIELDS = ("name", "size", "sha256", "blob", "blob_size", "chunk", "key")

# Characters Windows refuses in names, and both path separators: replaced, so "a/b" stays
# readable as "a_b" instead of merging into "ab".
_REPLACED = frozenset('/\\:*?"<>|')
# Unicode categories removed outright: controls (NUL, CR, LF, ESC...), format characters (the
# bidi overrides and isolates U+202A-E and U+2066-9 that make "exe.pdf" look like "fdp.exe",
# zero-width characters, BOM), surrogates (a header that is not UTF-8 arrives holding them),
# and code points not assigned yet.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn"})
# Device names Windows opens instead of a file, whatever the extension ("NUL.txt" is NUL).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{p}{d}" for p in ("COM", "LPT") for d in "0123456789¹²³"}
)


def sanitise_name(raw: str) -> str:
    """A display name safe to show and to offer as a download name on any system.

    Removes controls, bidi and other format characters; replaces path separators and the other
    characters Windows forbids; strips leading and trailing dots and spaces (no ``..``, no
    hidden files, no names Windows would silently change); prefixes reserved device names; cuts
    to 255 UTF-8 bytes keeping the extension; an empty result becomes ``attachment``.
    """
    text = unicodedata.normalize("NFC", raw[: MAX_NAME_HEADER * 2])
    kept = []
    for char in text:
        if unicodedata.category(char) in _REMOVED_CATEGORIES:
            continue
        kept.append("_" if char in _REPLACED else char)
    # Other Unicode spaces and runs of them become one plain space; then no leading or trailing
    # dots or spaces.
    name = " ".join("".join(kept).split()).strip(" .") or DEFAULT_NAME
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _RESERVED:
        name = "_" + name
    return _cut(name)


def _cut(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 32:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    cut = stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .")
    return (cut or DEFAULT_NAME) + suffix


def decode_name_header(value: str | None) -> str:
    """The ``X-File-Name`` header: percent-encoded UTF-8, optionally as an RFC 8187 ext-value
    (``UTF-8''na%C3%AFve.pdf``). Decoded once (``%252e`` stays ``%2e``: nothing decodes it
    again), then sanitised. Malformed escapes and bytes that are not UTF-8 do not refuse the
    upload: the name is only ever for display."""
    if value is None:
        return DEFAULT_NAME
    value = value[:MAX_NAME_HEADER]
    charset, sep, rest = value.partition("''")
    if sep and charset.lower().split("'")[0] in ("utf-8", "utf8"):
        value = rest
    return sanitise_name(urllib.parse.unquote(value, encoding="utf-8", errors="replace"))


def content_disposition(name: str) -> str:
    """RFC 6266: an ASCII ``filename`` for old clients and the exact name as ``filename*``."""
    safe = sanitise_name(name)
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in safe)
    quoted = urllib.parse.quote(safe, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


@dataclass(frozen=True)
class AttachmentRef:
    """One file as the signed envelope body names it."""

    name: str
    size: int
    sha256: bytes
    blob: bytes
    blob_size: int
    chunk: int
    key: bytes

    def as_map(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "blob": self.blob,
            "blob_size": self.blob_size,
            "chunk": self.chunk,
            "key": self.key,
        }


def parse_refs(value: Any) -> list[AttachmentRef]:
    """The body's ``attachments`` (absent or nil: none), every field checked; a name from the
    peer is sanitised again here, whatever the peer did."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        raise EnvelopeMalformed(
            f"attachments must be a list of at most {MAX_ATTACHMENTS}", field="body.attachments"
        )
    refs = []
    for i, item in enumerate(value):
        where = f"body.attachments[{i}]"
        f = codec.Fields(item, EnvelopeMalformed, where)
        if set(f.raw()) != set(ATTACHMENT_FIELDS):
            raise EnvelopeMalformed(f"{where} must have exactly {ATTACHMENT_FIELDS}", field=where)
        ref = AttachmentRef(
            name=sanitise_name(f.text("name", MAX_NAME_BYTES)),
            size=f.integer("size"),
            sha256=f.blob("sha256", 32),
            blob=f.blob("blob", 32),
            blob_size=f.integer("blob_size"),
            chunk=f.integer("chunk"),
            key=f.blob("key", stream.KEY_LEN),
        )
        if not (
            0 <= ref.size <= MAX_FILE_SIZE
            and stream.MIN_CHUNK <= ref.chunk <= stream.MAX_CHUNK
            and ref.blob_size == stream.ciphertext_size(ref.size, ref.chunk)
        ):
            raise EnvelopeMalformed(f"{where}: size, chunk and blob_size disagree", field=where)
        refs.append(ref)
    return refs
