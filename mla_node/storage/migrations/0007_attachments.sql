-- Evidence files (issue 6): one row per file of a message, or per upload not submitted yet.
-- The bytes are on disk, encrypted, named by their digest (storage/blobs.py); this row says what
-- they are. On the sending node a clerk's upload makes the row (message_id NULL) and a
-- submission naming it sets message_id and position; on the receiving node the rows are made
-- from the envelope body when it is stored. A resend that re-seals a message copies its rows.
CREATE TABLE attachments (
    id              TEXT PRIMARY KEY,           -- a ULID
    message_id      TEXT REFERENCES messages (id),  -- NULL until a submission names it
    position        INTEGER,                    -- its index in the message's list
    name            TEXT NOT NULL,              -- display name, sanitised; never a path
    size            INTEGER NOT NULL,           -- plaintext bytes
    sha256          BLOB NOT NULL,              -- SHA-256 of the plaintext
    blob_sha256     BLOB NOT NULL,              -- SHA-256 of the encrypted file: its name on disk
    blob_size       INTEGER NOT NULL,
    chunk_size      INTEGER NOT NULL,
    -- The file's AES-256-GCM key: a secret of this node, as protected as this database (like
    -- messages.form, which is plaintext). NULL once a purge removed the case's contents: without
    -- it the encrypted file is unreadable (crypto-shredding), whatever copies of it remain.
    file_key        BLOB,
    created_by      TEXT,                       -- the uploading clerk's actor, on the sender
    created_at      INTEGER NOT NULL,
    UNIQUE (message_id, position)
);
CREATE INDEX attachments_blob ON attachments (blob_sha256);
