"""Moving envelopes between nodes: the Transport interface, mutual-TLS HTTP, the peer endpoint."""
