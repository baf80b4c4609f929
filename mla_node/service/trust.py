"""Keeps the newest valid directory: from the database at start, from the directory file live.

A node never goes back to an older directory, not even across a restart (the accepted version is
in the database), and stops sending when the only directory it has expired: better a clear
"directory expired" status than traffic to keys nobody vouches for any more.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from mla_node.crashpoints import crash_point
from mla_node.errors import DirectoryExpired, TrustError
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.storage import repo
from mla_node.storage.db import Database, Transaction

log = logging.getLogger(__name__)


class TrustKeeper:
    def __init__(
        self, trust_root: TrustRoot, directory_path: Path, db: Database, clock: Callable[[], int]
    ) -> None:
        self.trust_root = trust_root
        self.directory_path = directory_path
        self._db = db
        self._clock = clock
        self._current: Directory | None = None
        self._digest: bytes | None = None
        self.last_error: TrustError | None = None
        # Called after each newly adopted directory (a node picks up its own rotated keys here).
        self.on_change: list[Callable[[Directory], Awaitable[None]]] = []

    @property
    def current(self) -> Directory | None:
        return self._current

    async def start(self) -> None:
        """Load the accepted directory from the database, then look for a newer file."""
        stored = await repo.accepted_directory(self._db)
        if stored is not None:
            version, digest, data = stored
            try:
                # An expired stored directory is still loaded (far-future ``now``) so that its
                # version guards against rollback; ``require`` refuses to use it for traffic.
                self._current = verify_directory(data, self.trust_root, now=0)
                self._digest = digest
            except TrustError as exc:
                log.error("stored directory version %s no longer verifies: %s", version, exc)
        await self.refresh()

    async def refresh(self) -> bool:
        """Apply a newer directory file if there is one. True when the directory changed."""
        try:
            data = await asyncio.to_thread(self.directory_path.read_bytes)
        except OSError as exc:
            log.warning("cannot read directory file %s: %s", self.directory_path, exc.strerror)
            return False
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        return await self.offer(data)

    async def offer(self, data: bytes) -> bool:
        """Verify a directory from any source (file, authority service) and adopt it if newer."""
        now = self._clock()
        digest = hashlib.sha256(data).digest()
        try:
            directory = verify_directory(
                data,
                self.trust_root,
                now=now,
                current_version=self._current.version if self._current else None,
                current_digest=self._digest,
            )
        except TrustError as exc:
            self.last_error = exc
            log.warning("directory refused: %s (%s)", exc.detail, exc.code)
            return False
        if digest == self._digest:
            return False

        async def persist(tx: Transaction) -> None:
            await repo.accept_directory(tx, directory.version, digest, data, now)

        crash_point("directory.before_accept")
        await self._db.write(persist)
        self._current, self._digest, self.last_error = directory, digest, None
        log.info("directory version %s accepted", directory.version)
        for hook in self.on_change:
            try:
                await hook(directory)
            except Exception:  # the directory is adopted whatever a listener does
                log.exception("directory listener failed")
        return True

    def require(self, now: int) -> Directory:
        """The directory to use for traffic at ``now``, or a TrustError saying why there is none."""
        if self._current is None:
            raise self.last_error or DirectoryExpired("no valid directory has been accepted yet")
        if now >= self._current.expires_at:
            raise DirectoryExpired(
                f"directory version {self._current.version} expired; sending has stopped until "
                "a newer one arrives"
            )
        return self._current

    async def poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # keep polling whatever one attempt did
                log.exception("directory refresh failed")
