-- The evidence table is the node's transparency log (issue 4): its records in seq order are the
-- leaves of an RFC 9162 Merkle tree, the record with seq s being leaf s - 1. Rows are only ever
-- appended (retention never deletes evidence), so the first n leaves never change.

-- SHA-256(0x00 || record), the leaf hash, cached so a checkpoint need not rehash every record.
-- NULL for rows written before this migration: the reader computes those.
ALTER TABLE evidence ADD COLUMN leaf_hash BLOB;

-- Signed tree heads this node made: "the first `size` records hash to `root`", signed at `at`.
CREATE TABLE checkpoints (
    size            INTEGER PRIMARY KEY,
    root            BLOB NOT NULL,
    checkpoint      BLOB NOT NULL,           -- the exact signed bytes (protocol/checkpoint.py)
    at              INTEGER NOT NULL         -- ms since the epoch, UTC
);
