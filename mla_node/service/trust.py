"""Keeps the newest valid directory: from the database at start, then live from the directory file
and, when one is configured, from the network authority's directory service.

A node never goes back to an older directory, not even across a restart (the accepted version is
in the database), and stops sending when the only directory it has expired: better a clear
"directory expired" status than traffic to keys nobody vouches for any more.

Both sources are only ways for bytes to arrive: whatever they bring is verified against the trust
root by :meth:`TrustKeeper.offer`, and persisted only once accepted (fetch, verify, then persist).
The service is a :class:`DirectorySource` (the HTTPS one is in
:mod:`mla_node.directory_client`), so this module stays free of HTTP. When the service cannot be
reached the node keeps the directory it has, and :class:`StaleAlarm` logs ``ALERT
directory_stale`` as its expiry approaches, whichever source was supposed to renew it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from mla_node import pki
from mla_node.crashpoints import crash_point
from mla_node.errors import DirectoryExpired, DirectoryUnavailable, KeyFileError, TrustError
from mla_node.protocol.directory import Directory, TrustRoot, verify_directory
from mla_node.storage import repo
from mla_node.storage.db import Database, Transaction

log = logging.getLogger(__name__)

DEFAULT_ALERT_FRACTION = 0.2
# A stale directory is a slow emergency (days): once an hour keeps it in the logs without
# drowning them, and a change of level (stale -> expired) is logged at once.
ALERT_REPEAT_MS = 3_600_000


class DirectorySource(Protocol):
    """Somewhere newer directories come from, besides the file (the authority's service)."""

    @property
    def location(self) -> str:
        """Where it fetches from, for log lines."""
        ...

    async def fetch(self, have: bytes | None) -> bytes | None:
        """The latest signed directory, or None when it is the one whose SHA-256 is ``have``.

        Raises :class:`DirectoryUnavailable` when the source cannot be reached or answers badly.
        """
        ...

    async def close(self) -> None: ...


class Staleness(StrEnum):
    FRESH = "fresh"
    STALE = "stale"  # less than the alert fraction of its lifetime left
    EXPIRED = "expired"


def staleness(directory: Directory, now: int, fraction: float) -> Staleness:
    if now >= directory.expires_at:
        return Staleness.EXPIRED
    lifetime = max(directory.expires_at - directory.issued_at, 1)
    if directory.expires_at - now <= lifetime * fraction:
        return Staleness.STALE
    return Staleness.FRESH


class StaleAlarm:
    """Logs ``ALERT directory_stale`` for a directory near or past its expiry, rate-limited.

    Shared by the nodes (the directory they use) and the authority's service (the directory it
    publishes), so the alert reads the same wherever it is raised.
    """

    def __init__(
        self,
        fraction: float = DEFAULT_ALERT_FRACTION,
        *,
        who: str = "node",
        repeat_ms: int = ALERT_REPEAT_MS,
    ) -> None:
        self.fraction = fraction
        self.who = who
        self.repeat_ms = repeat_ms
        self._level = Staleness.FRESH
        self._logged_at: int | None = None

    def check(self, directory: Directory | None, now: int, hint: str) -> Staleness:
        """The directory's staleness at ``now``, alerting when due; ``hint`` says what to do."""
        if directory is None:
            return Staleness.FRESH  # nothing accepted yet: readiness and directory_expired say so
        level = staleness(directory, now, self.fraction)
        if level is Staleness.FRESH:
            self._level, self._logged_at = level, None
            return level
        repeat_due = self._logged_at is None or now - self._logged_at >= self.repeat_ms
        if level is not self._level or repeat_due:
            self._level, self._logged_at = level, now
            left_h = (directory.expires_at - now) / 3_600_000
            expires = _iso(directory.expires_at)
            if level is Staleness.EXPIRED:
                log.error(
                    "ALERT directory_stale %s version=%d expired_at=%s: the directory has "
                    "expired; traffic that needs it has stopped. %s",
                    self.who, directory.version, expires, hint,
                )  # fmt: skip
            else:
                log.warning(
                    "ALERT directory_stale %s version=%d expires_at=%s hours_left=%.1f: %s",
                    self.who, directory.version, expires, left_h, hint,
                )  # fmt: skip
        return level


def _iso(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat(timespec="seconds")


class TrustKeeper:
    def __init__(
        self,
        trust_root: TrustRoot,
        directory_path: Path,
        db: Database,
        clock: Callable[[], int],
        *,
        source: DirectorySource | None = None,
        alert_fraction: float = DEFAULT_ALERT_FRACTION,
    ) -> None:
        self.trust_root = trust_root
        self.directory_path = directory_path
        self.source = source
        self._db = db
        self._clock = clock
        self._current: Directory | None = None
        self._digest: bytes | None = None
        # What each source last brought, once judged: the same bytes are not judged (and a
        # refusal not logged) again at every poll.
        self._file_digest: bytes | None = None
        self._refused_digest: bytes | None = None
        self.last_error: TrustError | None = None
        self.fetch_error: DirectoryUnavailable | None = None
        self.last_fetch_at: int | None = None  # ms of the last answer from the source
        self.alarm = StaleAlarm(alert_fraction)
        # Called after each newly adopted directory (a node picks up its own rotated keys here).
        self.on_change: list[Callable[[Directory], Awaitable[None]]] = []

    @property
    def current(self) -> Directory | None:
        return self._current

    async def start(self) -> None:
        """Load the accepted directory from the database, then look for a newer file.

        The directory service is first asked by :meth:`poll`, not here: an unreachable authority
        must not hold up the start of a node that has a valid directory.
        """
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
        if digest in (self._digest, self._file_digest):
            return False
        adopted = await self.offer(data)
        self._file_digest = digest  # judged: an older file is refused once, not at every poll
        return adopted

    async def fetch(self) -> bool:
        """Ask the directory service for a newer directory and apply it. True when it changed.

        An unreachable service is logged once when it starts failing and once when it answers
        again; meanwhile the node works on what it has (the stale alarm watches the expiry).
        """
        if self.source is None:
            return False
        try:
            data = await self.source.fetch(self._digest)
        except DirectoryUnavailable as exc:
            if self.fetch_error is None:
                log.warning(
                    "directory service unreachable: %s; working on directory version %s",
                    exc.detail, self._version_text(),
                )  # fmt: skip
            else:
                log.debug("directory service still unreachable: %s", exc.detail)
            self.fetch_error = exc
            return False
        if self.fetch_error is not None:
            log.info("directory service %s answers again", self.source.location)
            self.fetch_error = None
        self.last_fetch_at = self._clock()
        if data is None:
            return False
        digest = hashlib.sha256(data).digest()
        if digest in (self._digest, self._refused_digest):
            return False
        if not await self.offer(data):
            self._refused_digest = digest
            return False
        await self._write_file(data, digest)
        return True

    async def _write_file(self, data: bytes, digest: bytes) -> None:
        # The file follows the database, so that tools reading keys.directory see what the node
        # uses, and the file's older version is not offered (and refused) again at every poll.
        try:
            await asyncio.to_thread(pki.write_public_file, self.directory_path, data)
        except KeyFileError as exc:
            log.warning("directory accepted but not written to its file: %s", exc.detail)
        self._file_digest = digest

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

    def check_freshness(self) -> Staleness:
        """Raise the stale alert when due, with what the operator should look at."""
        if self.source is None:
            hint = f"install a newer directory from the network authority as {self.directory_path}"
        elif self.fetch_error is not None:
            hint = (
                f"the directory service is unreachable ({self.fetch_error.detail}); last answer "
                f"at {_iso(self.last_fetch_at) if self.last_fetch_at else 'never'}"
            )
        else:
            hint = (
                f"the directory service {self.source.location} has nothing newer: the network "
                "authority must publish (mla-node authority publish)"
            )
        return self.alarm.check(self._current, self._clock(), hint)

    async def poll(self, interval_s: float, fetch_interval_s: float | None = None) -> None:
        """Check the file every ``interval_s``, the service every ``fetch_interval_s``, and the
        expiry every time, until cancelled. The first round runs at once."""
        loop = asyncio.get_running_loop()
        fetch_every = fetch_interval_s or interval_s
        next_fetch = loop.time()
        while True:
            try:
                await self.refresh()
                if self.source is not None and loop.time() >= next_fetch:
                    next_fetch = loop.time() + fetch_every
                    await self.fetch()
                self.check_freshness()
            except Exception:  # keep polling whatever one attempt did
                log.exception("directory refresh failed")
            await asyncio.sleep(min(interval_s, fetch_every))

    async def close(self) -> None:
        if self.source is not None:
            await self.source.close()

    def _version_text(self) -> str:
        return str(self._current.version) if self._current else "none"
