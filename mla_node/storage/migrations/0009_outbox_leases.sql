-- High availability (issue 9): several workers may share one database (PostgreSQL). A worker
-- claims the envelopes it is about to send: leased_by names the worker, lease_until (ms since the
-- epoch) is when the claim lapses unless the worker renews it. A worker that dies leaves claims
-- that lapse, and another worker takes the work over; none is ever sent by two at once.
ALTER TABLE outbox ADD COLUMN leased_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until INTEGER;
