"""The OpenAPI 3.1 document of the clerk API (placeholder until the full document lands)."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "mla_node clerk API", "version": "1"},
            "paths": {}}
