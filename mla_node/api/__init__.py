"""The local HTTP surface for clerks, auditors and admins: JSON API and OpenAPI document."""
