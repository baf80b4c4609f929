"""What every use case needs: config, database, this node's keys, the directory, time, ids."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from mla_node.config import NodeConfig
from mla_node.identity import NodeIdentity
from mla_node.ids import new_ulid
from mla_node.protocol.directory import Directory
from mla_node.protocol.evidence import sign_evidence
from mla_node.service.trust import TrustKeeper
from mla_node.storage import repo
from mla_node.storage.db import Database, Transaction


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

    @property
    def state(self) -> str:
        return self.config.node.state

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
    ) -> bytes:
        """Sign an evidence record as this node and append it in the caller's transaction."""
        record = sign_evidence(
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
        )
        await repo.insert_evidence(
            tx,
            message_id=message_id,
            case_id=case_id,
            event=event,
            record=record,
            sha256=_sha256(record),
            at=at,
        )
        return record


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
