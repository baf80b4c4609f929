-- The handling code of each message (protocol/forms.py HANDLING_CODES): how far its content may
-- travel at the receiving authority. It travels inside the signed, encrypted body; rows from
-- before this migration were all handled as confidential, the default.
ALTER TABLE messages ADD COLUMN handling TEXT NOT NULL DEFAULT 'confidential';
