"""A synchronous clerk for process-level tests: one HTTP call to a node's clerk API."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from mla_node.localnet import NodeRecord


def clerk_call(
    node: NodeRecord, method: str, path: str, body: Any = None, *, key: str | None = None
) -> tuple[int, Any]:
    url = urlsplit(node.clerk_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=15)
    headers = {"Authorization": f"Bearer {node.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Idempotency-Key"] = key
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()
