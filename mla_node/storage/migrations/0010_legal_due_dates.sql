-- The date a form binds the other side to (protocol/legal_dates.py), in ms since the epoch,
-- worked out once when the message is stored: an alert check then reads only the messages whose
-- date has passed (through the index), where it read and decoded every request ever stored, at
-- every check. NULL: the form sets no date. -1: a row stored before this column existed, not
-- worked out yet; the node fills those in at start (repo.fill_legal_due_dates), and until then
-- they count as passed, so the check reads their forms as it used to.
ALTER TABLE messages ADD COLUMN legal_due_at INTEGER;
UPDATE messages SET legal_due_at = -1
    WHERE form_type IN ('mla_request', 'provisional_arrest', 'additional_info_request');
CREATE INDEX messages_legal_due ON messages (legal_due_at) WHERE legal_due_at IS NOT NULL;
-- An alert check leaves out the requests for more information a supplement answered.
CREATE INDEX messages_in_reply_to ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;
