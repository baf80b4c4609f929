"""API tokens: 256-bit random secrets, shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets

from mla_node.errors import InvalidParameter, Unauthenticated
from mla_node.protocol.evidence import MAX_DETAIL, Event
from mla_node.protocol.keys import SigningKey
from mla_node.service.context import Principal, Role, append_evidence
from mla_node.storage import repo
from mla_node.storage.db import Database, Transaction

COMMAND_LINE_ADMIN = "admin:command line"  # whoever ran `mla-node token create` on the host
TOKEN_PREFIX = "mla_"  # noqa: S105 (a prefix that makes leaked tokens greppable)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    db: Database,
    role: str,
    name: str,
    now: int,
    *,
    signer: SigningKey,
    state: str,
    actor: str = COMMAND_LINE_ADMIN,
) -> tuple[str, str]:
    """Returns (token id, secret). The secret is not stored and cannot be shown again.

    The creation is an evidence record in the node's log, signed with ``signer`` (the node's
    key) in the same transaction: who may act on the node is itself auditable."""
    try:
        checked = Role(role)
    except ValueError:
        raise InvalidParameter(
            f"role must be one of {', '.join(r.value for r in Role)}", field="role"
        ) from None
    token_id = "tok_" + secrets.token_hex(8)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)

    async def job(tx: Transaction) -> None:
        await repo.insert_token(tx, token_id, _hash(secret), checked.value, name, now)
        await append_evidence(
            tx,
            signer,
            event=Event.TOKEN_CREATED,
            node=state,
            message_id=token_id,
            case_id="",
            at=now,
            detail=f"{checked.value}:{name}"[:MAX_DETAIL],
            actor=actor,
        )

    await db.write(job)
    return token_id, secret


async def authenticate(db: Database, authorization: str | None) -> Principal:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("send the token as 'Authorization: Bearer <token>'")
    token = authorization.removeprefix("Bearer ").strip()
    if not token.isascii():
        raise Unauthenticated("the token is unknown or revoked")
    row = await repo.token_by_hash(db, _hash(token))
    if row is None:
        raise Unauthenticated("the token is unknown or revoked")
    return Principal(row.id, Role(row.role), row.name)
