"""Server-side sessions of the web interface: a random id in a cookie, the principal in memory.

The API token is checked once, at sign-in, and never stored: the session keeps only who signed in.
Sessions live in this process (a restart signs everybody out) and end after ``IDLE_MS`` without a
request or ``MAX_MS`` after sign-in, whichever comes first.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from mla_node.service.context import Principal

IDLE_MS = 30 * 60 * 1000
MAX_MS = 10 * 60 * 60 * 1000
MAX_SESSIONS = 10_000
COOKIE = "mla_session"
PRE_COOKIE = "mla_presession"  # the sign-in form's own CSRF secret (double submit)


@dataclass
class Session:
    id: str
    principal: Principal
    csrf: str
    created_at: int
    seen_at: int


@dataclass
class SessionStore:
    sessions: dict[str, Session] = field(default_factory=dict)

    def create(self, principal: Principal, now: int) -> Session:
        self.expire(now)
        if len(self.sessions) >= MAX_SESSIONS:  # evict the oldest rather than grow without end
            oldest = min(self.sessions.values(), key=lambda s: s.seen_at)
            del self.sessions[oldest.id]
        session = Session(
            id=secrets.token_urlsafe(32),
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            seen_at=now,
        )
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str | None, now: int) -> Session | None:
        if not session_id:
            return None
        session = self.sessions.get(session_id)
        if session is None:
            return None
        if now - session.seen_at > IDLE_MS or now - session.created_at > MAX_MS:
            del self.sessions[session_id]
            return None
        session.seen_at = now
        return session

    def end(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def expire(self, now: int) -> None:
        for s in [s for s in self.sessions.values() if now - s.seen_at > IDLE_MS]:
            del self.sessions[s.id]


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens; a missing one never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())
