-- Operations (issue 8). The request id of the clerk API call that queued an envelope: every
-- delivery attempt sends it to the peer (Mla-Request-Id), so both nodes' logs name one piece of
-- work alike. Observability only: NULL for rows queued before, or by no API call.
ALTER TABLE outbox ADD COLUMN request_id TEXT;

-- The legal deadlines the node watches (a request's "deadline", a provisional arrest's formal
-- request, an answer asked for by a date) are read by form type, at each alert check, without a
-- scan of every message.
CREATE INDEX messages_form_type ON messages (form_type, case_id);
