"""The pure core of mla_node: forms, envelopes, receipts, directory and evidence, without I/O."""
