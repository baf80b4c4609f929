-- Peer-witnessed log heads (docs/audit.md, "Peer-witnessed heads"): the checkpoints each peer
-- showed this node in its receipts, and the split views caught among them.

-- Only heads proven consistent with the ones before are stored (the first is taken on trust),
-- so a peer's rows are one history: each its newest head at the time, as it signed it.
CREATE TABLE witnessed_heads (
    peer            TEXT NOT NULL,
    size            INTEGER NOT NULL,
    root            BLOB NOT NULL,
    checkpoint      BLOB NOT NULL,           -- the exact signed bytes (protocol/checkpoint.py)
    kid             TEXT NOT NULL,           -- the key that signed it
    at              INTEGER NOT NULL,        -- when the peer signed it, ms since the epoch, UTC
    seen_at         INTEGER NOT NULL,        -- when this node first saw it
    PRIMARY KEY (peer, size)
);

-- A peer caught showing two histories: its two signed heads, the proof it offered between them
-- (JSON, for a failed proof) and the evidence file written for humans and auditors. One row per
-- stored head contradicted: a fork goes on contradicting the same head, and is reported once.
CREATE TABLE split_views (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    peer            TEXT NOT NULL,
    reason          TEXT NOT NULL,           -- same_size_different_root | consistency_proof_failed
    stored_head     BLOB NOT NULL,           -- the head this node held (signed bytes)
    stored_sha256   BLOB NOT NULL,
    shown_head      BLOB NOT NULL,           -- the head that contradicts it (signed bytes)
    proof           TEXT,                    -- the consistency proof offered, JSON, or NULL
    detected_at     INTEGER NOT NULL,        -- ms since the epoch, UTC
    evidence_file   TEXT,                    -- where the evidence file went (NULL: not written)
    UNIQUE (peer, stored_sha256)
);
