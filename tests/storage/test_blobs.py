"""The file store's hashing beside its writes (storage/blobs.py): the digest is the one of the
bytes in order, the hash never falls more than ``LAG`` pieces behind, and no thread is left."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from mla_node.storage.blobs import BackgroundHash, BlobStore


def test_the_digest_is_that_of_the_pieces_in_order() -> None:
    pieces = [os.urandom(n) for n in (0, 1, 4096, 1 << 20, 3, 70_000) * 5]
    background = BackgroundHash()
    for piece in pieces:
        background.update(piece)
    assert background.digest() == hashlib.sha256(b"".join(pieces)).digest()


class _HeldHash:
    """Stands in for the hash object: each update waits until the test lets it go."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.done: list[bytes] = []

    def update(self, piece: bytes) -> None:
        self.go.wait(10)
        self.done.append(piece)

    def digest(self) -> bytes:
        return b"".join(self.done)


def test_a_slow_hash_holds_the_writer_back_after_lag_pieces() -> None:
    background = BackgroundHash()
    held = _HeldHash()
    background._hash = held  # type: ignore[assignment]
    for i in range(BackgroundHash.LAG):
        background.update(bytes([i]))  # waiting pieces up to the bound: the writer goes on
    one_more = threading.Thread(target=background.update, args=(b"\x09",))
    one_more.start()
    one_more.join(0.3)
    assert one_more.is_alive()  # one more would pass the bound: it waits for the hash
    held.go.set()
    one_more.join(10)
    assert not one_more.is_alive()
    assert background.digest() == bytes(range(BackgroundHash.LAG)) + b"\x09"


def test_committed_and_aborted_files_leave_no_thread(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    before = threading.active_count()
    data = os.urandom(3 << 20)
    kept = store.new_file()
    for i in range(0, len(data), 1 << 20):
        kept.write(data[i : i + (1 << 20)])
    digest = kept.commit()
    assert digest == hashlib.sha256(data).digest()
    assert store.path(digest).read_bytes() == data
    dropped = store.new_file()
    dropped.write(data)
    dropped.abort()
    assert threading.active_count() == before
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
