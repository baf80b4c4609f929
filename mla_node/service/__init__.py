"""Use cases: submit, reply, acknowledge, read, receive, deliver. Between the API and the core."""
