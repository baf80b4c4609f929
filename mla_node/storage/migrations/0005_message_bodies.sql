-- The exact bytes of each message's body (msgpack, with its random salt) as sealed or as opened:
-- what the `content` digest of the submitted / delivered evidence commits to, kept so that an
-- evidence bundle can disclose a request's content and a court can check it against the digest
-- both nodes signed. Plaintext, like `messages.form`: a purge deletes the row.
CREATE TABLE message_bodies (
    message_id      TEXT PRIMARY KEY REFERENCES messages (id),
    body            BLOB NOT NULL
);
