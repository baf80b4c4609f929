"""What every use case needs: config, database, this node's keys, the directory, time, ids."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mla_node.config import NodeConfig
from mla_node.errors import MlaError
from mla_node.identity import NodeIdentity, load_identity
from mla_node.ids import new_ulid
from mla_node.protocol.directory import Directory
from mla_node.protocol.envelope import content_digest
from mla_node.protocol.evidence import MAX_ACTOR, sign_evidence
from mla_node.protocol.keys import SigningKey
from mla_node.protocol.merkle import leaf_hash
from mla_node.service.log_heads import LogHeads
from mla_node.service.trust import TrustKeeper
from mla_node.storage import repo
from mla_node.storage.blobs import BlobStore
from mla_node.storage.db import Database, Transaction

log = logging.getLogger(__name__)


class Role(StrEnum):
    CLERK = "clerk"
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling the local API: one token, one role."""

    token_id: str
    role: Role
    name: str

    @property
    def actor(self) -> str:
        """How evidence records name this user: role and the token holder's name."""
        return f"{self.role.value}:{self.name}"[:MAX_ACTOR]


@dataclass
class NodeContext:
    config: NodeConfig
    db: Database
    identity: NodeIdentity
    trust: TrustKeeper
    clock: Callable[[], int]  # ms since the epoch, UTC
    new_id: Callable[[int], str] = new_ulid
    rng: random.Random = field(default_factory=random.Random)
    # Set by the delivery loop so that a new outbox row is sent at once, not at the next poll.
    wake_sender: Callable[[str], None] = lambda peer: None
    # Set on SIGTERM: the clerk API refuses writes (503 shutting_down) while the node winds down.
    stopping: bool = False
    # (actor, message id, what was shown) -> when that view was last recorded (service/views.py)
    recent_views: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # This node's newest checkpoint (put in every receipt), the proofs served from it, and the
    # peers' heads witnessed: service/log_heads.py.
    heads: LogHeads = field(default_factory=LogHeads)
    # This process among the workers sharing the node's database: names its outbox claims.
    worker: str = field(default_factory=lambda: worker_name())

    def __post_init__(self) -> None:
        self.trust.on_change.append(self.refresh_identity)

    @property
    def state(self) -> str:
        return self.config.node.state

    @functools.cached_property
    def blobs(self) -> BlobStore:
        """The encrypted evidence files, beside the database (storage/blobs.py)."""
        return BlobStore(self.config.files_dir / "blobs")

    async def refresh_identity(self, directory: Directory) -> None:
        """Pick up keys rotated on disk (``keys/`` and ``keys/retired/``) without a restart.

        Run on each newly adopted directory. New encryption keys are loaded at once (holding a
        private key the peers do not use yet is harmless) and none is ever dropped, so envelopes
        sealed to a retired key still open. The new signing key is used only once the directory
        lists it as valid for this node now: until then peers would refuse what it signs, so the
        old key keeps signing (inside the overlap window the authority left it).
        """
        try:
            fresh = await asyncio.to_thread(
                load_identity, self.config.keys_dir, self.identity.passphrase
            )
        except MlaError as exc:
            log.error("keys folder not reloaded, the loaded keys stay in use: %s", exc)
            return
        signing = self._listed_signing_key(
            directory,
            [fresh.signing_key, self.identity.signing_key, *fresh.retired_signing_keys.values()],
        )
        if signing.kid != self.identity.signing_key.kid:
            log.info("signing with the key %s from now on", signing.kid)
        self.identity = dataclasses.replace(
            fresh,
            signing_key=signing,
            encryption_keys={**self.identity.encryption_keys, **fresh.encryption_keys},
        )

    def sign_with_listed_key(self, directory: Directory) -> None:
        """At start: sign with the key the directory lists, which after a rotation the authority
        has not published yet is the retired one (``keys/retired/``), not the new one."""
        loaded = self.identity
        keys = [loaded.signing_key, *loaded.retired_signing_keys.values()]
        signing = self._listed_signing_key(directory, keys)
        if signing.kid != loaded.signing_key.kid:
            log.warning(
                "the directory does not list the signing key %s yet: signing with %s, the key "
                "it replaced, until it does",
                loaded.signing_key.kid,
                signing.kid,
            )
            self.identity = dataclasses.replace(loaded, signing_key=signing)

    def _listed_signing_key(self, directory: Directory, keys: list[SigningKey]) -> SigningKey:
        """The first of ``keys`` the directory lists as valid for this node now. When none is,
        the one in use stays (there is nothing better to sign with). After a rotation the new
        key comes first, but until the authority lists it peers would refuse what it signs."""
        now = self.clock()
        for key in keys:
            _, problem = directory.check_key(self.state, key.kid, "sign", now, live=True)
            if problem is None:
                return key
        return self.identity.signing_key

    def directory(self) -> Directory:
        """The directory to use for traffic now; a TrustError (503) when there is none."""
        return self.trust.require(self.clock())

    async def record_evidence(
        self,
        tx: Transaction,
        *,
        event: str,
        message_id: str,
        case_id: str,
        at: int,
        envelope_digest: bytes | None = None,
        peer: str | None = None,
        detail: str | None = None,
        receipt_digest: bytes | None = None,
        actor: str | None = None,
        content_digest: bytes | None = None,
    ) -> bytes:
        """Sign an evidence record as this node and append it in the caller's transaction.

        Appending is the record's entry into the node's transparency log (service/audit_log.py):
        its seq is its place in the Merkle tree, covered by the next checkpoint."""
        return await append_evidence(
            tx,
            self.identity.signing_key,
            event=event,
            node=self.state,
            message_id=message_id,
            case_id=case_id,
            at=at,
            envelope_digest=envelope_digest,
            peer=peer,
            detail=detail,
            receipt_digest=receipt_digest,
            actor=actor,
            content_digest=content_digest,
        )

    async def record_about(
        self,
        tx: Transaction,
        event: str,
        message: repo.MessageRow,
        *,
        at: int,
        detail: str | None = None,
        actor: str | None = None,
    ) -> bytes:
        """``record_evidence`` about a message: its ids, envelope and the other party, and the
        commitment to its content when the row carries its body (a message being stored now)."""
        return await self.record_evidence(
            tx,
            event=event,
            message_id=message.id,
            case_id=message.case_id,
            at=at,
            envelope_digest=message.envelope_sha256,
            peer=message.peer,
            detail=detail,
            actor=actor,
            content_digest=content_digest(message.body) if message.body is not None else None,
        )


def worker_name() -> str:
    """Host, process and a random tag (a pid is reused after a restart; the tag is not)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def append_evidence(
    tx: Transaction,
    key: SigningKey,
    *,
    event: str,
    message_id: str,
    case_id: str,
    at: int,
    **optional: Any,
) -> bytes:
    """Sign a record and append it to the log in ``tx``; for callers without a running node
    (the ``token create`` command) as much as for ``NodeContext.record_evidence``."""
    record = sign_evidence(
        key, event=event, message_id=message_id, case_id=case_id, at=at, **optional
    )
    await repo.insert_evidence(
        tx,
        message_id=message_id,
        case_id=case_id,
        event=event,
        record=record,
        sha256=_sha256(record),
        at=at,
        leaf_hash=leaf_hash(record),
    )
    return record
