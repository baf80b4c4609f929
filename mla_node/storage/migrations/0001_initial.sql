-- Messages this node sent ("out") or received ("in"). The id is the envelope's message id, the same
-- on both nodes, so the two sides' records can be reconciled.
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    direction       TEXT NOT NULL CHECK (direction IN ('out', 'in')),
    sender          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    in_reply_to     TEXT,
    form_type       TEXT NOT NULL,
    form_version    INTEGER NOT NULL,
    form            TEXT NOT NULL,            -- the validated form, JSON
    status          TEXT NOT NULL,            -- out: queued|delivered|rejected; in: received|retrieved
    envelope        BLOB NOT NULL,            -- exact bytes sent or received
    envelope_sha256 BLOB NOT NULL,
    created_at      INTEGER NOT NULL,         -- ms since the epoch, UTC
    updated_at      INTEGER NOT NULL,
    created_by      TEXT                      -- name of the clerk token that submitted it
);
CREATE INDEX messages_box ON messages (direction, id);
CREATE INDEX messages_case ON messages (case_id, id);

-- Envelopes still to be delivered. A row leaves only in the transaction that records a verified
-- receipt (delivered or a signed rejection), so nothing is forgotten and nothing is sent twice.
CREATE TABLE outbox (
    message_id      TEXT PRIMARY KEY REFERENCES messages (id),
    peer            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (peer, next_attempt_at);

-- Receipts: those we signed as recipient ('issued') and those peers signed for us ('received').
CREATE TABLE receipts (
    message_id      TEXT PRIMARY KEY REFERENCES messages (id),
    role            TEXT NOT NULL CHECK (role IN ('issued', 'received')),
    status          TEXT NOT NULL,
    code            TEXT,
    receipt         BLOB NOT NULL,
    receipt_sha256  BLOB NOT NULL,
    at              INTEGER NOT NULL
);

-- Signed evidence records, in the order this node made them.
CREATE TABLE evidence (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    event           TEXT NOT NULL,
    record          BLOB NOT NULL,
    sha256          BLOB NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX evidence_message ON evidence (message_id, seq);

-- Clerk retries: one Idempotency-Key per principal maps to one message and one body.
CREATE TABLE idempotency (
    principal       TEXT NOT NULL,
    key             TEXT NOT NULL,
    body_sha256     BLOB NOT NULL,
    message_id      TEXT NOT NULL REFERENCES messages (id),
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (principal, key)
);

-- API tokens, stored as SHA-256 of 256-bit random secrets (a slow hash adds nothing at that entropy).
CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,
    token_sha256    BLOB NOT NULL UNIQUE,
    role            TEXT NOT NULL,
    name            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);

-- The newest directory this node accepted: a restart never goes back to an older one.
CREATE TABLE directory_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    version         INTEGER NOT NULL,
    sha256          BLOB NOT NULL,
    directory       BLOB NOT NULL,
    accepted_at     INTEGER NOT NULL
);

-- Every directory version ever accepted, so receipts signed under old keys stay verifiable.
CREATE TABLE directory_history (
    version         INTEGER PRIMARY KEY,
    sha256          BLOB NOT NULL,
    directory       BLOB NOT NULL,
    accepted_at     INTEGER NOT NULL
);

CREATE TABLE peer_status (
    peer                 TEXT PRIMARY KEY,
    last_success_at      INTEGER,
    last_failure_at      INTEGER,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0
);
