"""Encrypted files on disk, named by the SHA-256 of their bytes (content-addressed).

```
<database folder>/blobs/<hex sha256>                 complete files, read-only once in place
<database folder>/blobs/tmp/<random>                 a clerk's upload being written
<database folder>/blobs/partial/<peer>/<hex sha256>  a peer's transfer, resumable
```

No name on disk ever comes from a user or a peer: a file is named by its digest (validated as
64 hex digits before it reaches a path) or by random bytes, and a peer's folder by its state code
from the directory. A file enters ``blobs/`` only whole: written, fsynced, renamed, and the
folder fsynced, so after a crash a digest names either nothing or the complete file.

Everything here blocks (file I/O); the service layer calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from mla_node.errors import StorageError

_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Written bytes are flushed to disk in the background every this many bytes, so the disk works
# while the network or the clerk still sends, and the fsync that makes a file durable at its end
# has little left to do (a 1 GiB file flushed only at the end costs seconds of waiting there).
FLUSH_EVERY = 32 << 20
_STATE = re.compile(r"^[A-Z]{2}$")
READ_SIZE = 1 << 20


def is_digest(text: str) -> bool:
    return bool(_HEX_DIGEST.match(text))


class _Flusher:
    """``fdatasync`` on a thread of its own, one at a time, every ``FLUSH_EVERY`` bytes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = 0
        self._thread: threading.Thread | None = None

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending >= FLUSH_EVERY and (self._thread is None or not self._thread.is_alive()):
            self._pending = 0
            self._thread = threading.Thread(target=self._flush, name="blob-flush", daemon=True)
            self._thread.start()

    def _flush(self) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports what matters
            os.fdatasync(self._fd)

    def join(self) -> None:
        """Before the file is closed: its descriptor must not be flushed after reuse."""
        if self._thread is not None:
            self._thread.join()


class BackgroundHash:
    """SHA-256 of pieces given in order, hashed on a thread of its own while the caller goes on
    (writes the piece, seals the next one). hashlib lets go of the GIL on large pieces, so on
    two cores the hash no longer adds its time to the write's. On this project's machine (no
    SHA instructions) SHA-256 runs at 200-370 MB/s, no faster than the disk: one after the
    other, a clerk's upload of 512 MiB ran at 70-77 MB/s, side by side at 117-122. One piece
    may wait for the hash (``LAG``): a second kept 2-3 MiB more at the peak for no speed. A
    piece must not change after it is given (``bytes``, not a buffer that is reused)."""

    LAG = 1

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-hash")
        self._waiting: deque[Future[None]] = deque()

    def update(self, piece: bytes) -> None:
        self.update_all((piece,))

    def update_all(self, pieces: Sequence[bytes]) -> None:
        """``pieces`` in order, as one of the ``LAG`` that may wait."""
        while len(self._waiting) >= self.LAG:
            self._waiting.popleft().result()
        self._waiting.append(self._pool.submit(self._hash_all, tuple(pieces)))

    def _hash_all(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self._hash.update(piece)

    def digest(self) -> bytes:
        """The digest of every piece given; ends the thread (nothing may be given after)."""
        self.close()
        while self._waiting:
            self._waiting.popleft().result()
        return self._hash.digest()

    def close(self) -> None:
        """Ends the thread once the pieces given are hashed (also when the file is dropped)."""
        self._pool.shutdown(wait=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _ensure(self, path: Path) -> Path:
        # 0700: the files are ciphertext, but who holds which files is nobody else's business.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def path(self, digest: bytes) -> Path:
        if len(digest) != 32:
            raise StorageError("a blob digest is 32 bytes")
        return self.root / digest.hex()

    def size(self, digest: bytes) -> int | None:
        """The size of the complete blob, or None when there is none."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def new_file(self) -> NewBlob:
        return NewBlob(self)

    def open(self, digest: bytes) -> BinaryIO:
        return self.path(digest).open("rb")

    # --- a peer's transfers ----------------------------------------------------------------

    def _partial_dir(self, peer: str) -> Path:
        if not _STATE.match(peer):
            raise StorageError(f"not a state code: {peer!r}")
        return self.root / "partial" / peer

    def partial_size(self, peer: str, digest: bytes) -> int:
        try:
            return (self._partial_dir(peer) / digest.hex()).stat().st_size
        except FileNotFoundError:
            return 0

    def partial_bytes(self, peer: str) -> int:
        """Bytes of ``peer``'s incomplete transfers (its quota counts these)."""
        folder = self._partial_dir(peer)
        if not folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def append_partial(self, peer: str, digest: bytes, offset: int) -> PartialBlob:
        return PartialBlob(
            self, self._ensure(self._partial_dir(peer)) / digest.hex(), digest, offset
        )


class NewBlob:
    """A file being written (a clerk's upload); named by its digest when committed."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._tmp = store._ensure(store.root / "tmp") / secrets.token_hex(16)
        self._file = self._tmp.open("xb")
        self._flusher = _Flusher(self._file.fileno())
        self._hash = BackgroundHash()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)
        self._flusher.wrote(len(data))

    def commit(self) -> bytes:
        """fsync, then move into place under its digest; returns the digest."""
        self._file.flush()
        self._flusher.join()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self._hash.digest()
        os.replace(self._tmp, self._store.path(digest))
        _fsync_dir(self._store.root)
        return digest

    def abort(self) -> None:
        self._flusher.join()
        self._hash.close()
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class PartialBlob:
    """A peer's transfer, appended to from ``offset`` on. The bytes already there are hashed
    first, so the digest check at the end covers the whole file however many tries it took."""

    def __init__(self, store: BlobStore, path: Path, digest: bytes, offset: int) -> None:
        self._store = store
        self._path = path
        self._digest = digest
        self._hash = BackgroundHash()
        self._file = path.open("ab")
        try:
            have = self._file.tell()
            if have != offset:
                raise StorageError(f"the partial file holds {have} bytes, not {offset}")
            with path.open("rb") as f:
                while piece := f.read(READ_SIZE):
                    self._hash.update(piece)
        except BaseException:
            self._file.close()
            self._hash.close()
            raise
        self._flusher = _Flusher(self._file.fileno())
        self.size = offset

    def write(self, pieces: Sequence[bytes]) -> None:
        """Append ``pieces`` in order (the body of a transfer as it arrived)."""
        self._hash.update_all(pieces)
        self._file.writelines(pieces)
        n = sum(len(piece) for piece in pieces)
        self.size += n
        self._flusher.wrote(n)

    def sync(self) -> None:
        """Make what was received durable: a cut transfer resumes from here after a crash."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._flusher.join()
        self._hash.close()
        with contextlib.suppress(OSError):
            self.sync()
        self._file.close()

    def complete(self) -> bool:
        """All bytes are here: move the file into place if its digest is its name; otherwise
        delete it (the sender starts over) and return False."""
        self.close()
        if self._hash.digest() != self._digest:
            self._path.unlink(missing_ok=True)
            return False
        os.replace(self._path, self._store.path(self._digest))
        _fsync_dir(self._store.root)
        return True
