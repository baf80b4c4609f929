"""The operators' routes' part of the OpenAPI document (api/ops_routes.py)."""

from __future__ import annotations

from typing import Any

from mla_node.api.openapi import _json_ok, _nullable, _object, _ref, _responses

_WHEN = _nullable({"type": "string", "format": "date-time"})


def ops_schemas() -> dict[str, Any]:
    return {
        "Alert": _object(
            {
                "name": {
                    "enum": [
                        "certificate_expiring",
                        "key_expiring",
                        "directory_stale",
                        "peer_unreachable",
                        "legal_deadline_overdue",
                        "undeliverable",
                        "split_view",
                    ]
                },
                "severity": {"enum": ["warning", "critical"]},
                "subject": {
                    "type": "string",
                    "description": "What it is about: tls, ca, a key id, a state, a message id.",
                },
                "detail": {"type": "string"},
                "since": {**_WHEN, "description": "When the condition began, when known."},
                "due": {**_WHEN, "description": "The expiry or deadline concerned, if any."},
            }
        ),
        "Alerts": _object(
            {
                "state": {"type": "string"},
                "checked_at": {"type": "string", "format": "date-time"},
                "alerts": {"type": "array", "items": _ref("Alert")},
            }
        ),
    }


def ops_paths() -> dict[str, Any]:
    return {
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["meta"],
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "description": "Queue depth and oldest envelope per peer, delivery latency, "
                "retries, failures, receipts, certificate, key and directory expiry, the "
                "evidence log, split views, legal deadlines and alerts. Needs an auditor or "
                "admin token: the counts per peer show how much this state exchanges with each "
                "other (docs/deployment.md, Metrics).",
                "x-roles": ["admin", "auditor"],
                "responses": _responses(
                    {
                        "200": {
                            "description": "The metrics.",
                            # Sent as text/plain; version=0.0.4; charset=utf-8.
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                    400,
                    401,
                    403,
                ),
            },
        },
        "/api/v1/alerts": {
            "get": {
                "operationId": "listAlerts",
                "tags": ["meta"],
                "summary": "The alerts standing now",
                "description": "Expiring certificates and keys, a stale directory, unreachable "
                "peers, overdue legal deadlines, undeliverable messages and split views, "
                "computed from the node's state at the call (docs/deployment.md, Alerts).",
                "x-roles": ["admin"],
                "responses": _responses(_json_ok(200, "Alerts", "The alerts."), 400, 401, 403),
            },
        },
    }
