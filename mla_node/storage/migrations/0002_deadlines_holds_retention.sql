-- Delivery deadlines, resends, legal holds and retention (issue 3, items 6 and 7).

-- When the sender gives up on an envelope (ms since the epoch), and when it warns that the
-- envelope is still queued (NULL once the warning was logged: it is logged once). Rows queued
-- before this migration get both from the node's settings when its sender starts.
ALTER TABLE outbox ADD COLUMN deadline_at INTEGER;
ALTER TABLE outbox ADD COLUMN warn_at INTEGER;
CREATE INDEX outbox_deadline ON outbox (peer, deadline_at);

-- A message re-sealed by an admin's resend names the message it replaces (inside its signed body
-- too, so the receiver sees the link). No foreign key: the receiver may never have received the
-- replaced message.
ALTER TABLE messages ADD COLUMN replaces TEXT;
CREATE INDEX messages_replaces ON messages (replaces) WHERE replaces IS NOT NULL;

-- When a purge removed the message's contents (form and envelope bytes); NULL while they are kept.
-- Digests, receipts and evidence records are never purged.
ALTER TABLE messages ADD COLUMN purged_at INTEGER;

-- Messages whose delivery deadline passed, per peer, since the node was created (a counter for
-- admins and monitoring; it never goes down, also when a message is resent).
ALTER TABLE peer_status ADD COLUMN deadlines_passed INTEGER NOT NULL DEFAULT 0;

-- Legal holds, per case thread: a purge never touches a held case.
CREATE TABLE legal_holds (
    case_id         TEXT PRIMARY KEY,
    reason          TEXT,
    set_by          TEXT NOT NULL,
    set_at          INTEGER NOT NULL
);
