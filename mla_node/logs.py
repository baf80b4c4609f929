"""Log lines as an operator reads them: text or one JSON object a line, each with its request id.

A request id follows one piece of work across nodes: the clerk API gives each call one (or keeps
the caller's ``Mla-Request-Id``), a submission stores it with its message, the delivery loop
sends it with every attempt of that envelope, and the receiving node logs it. So filtering both
nodes' logs by ``request_id`` shows a request from the clerk's POST to the peer's receipt.

The id lives in a context variable, set where the work starts (a clerk API call, a delivery
attempt, an envelope arriving), so any module logs it without passing it around, like
``transport.base.WITNESSED_SIZE``. It is no secret and says nothing of the content: a random
token, or the caller's if it looks like one (a header is never copied into a log unchecked).

Only :func:`configure` (called by the CLI) touches the root logger; the rest is plain logging.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from typing import TextIO

REQUEST_ID_HEADER = "Mla-Request-Id"
# The id of the work in progress in this task (None: background work not started by a request).
REQUEST_ID: ContextVar[str | None] = ContextVar("mla_node_request_id", default=None)
# Letters, digits and a few separators, at most 64: a UUID, a ULID or a proxy's id fit, while
# spaces, quotes and line breaks (log injection) do not.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ALERT = re.compile(r"^ALERT ([a-z_]+)")


def new_request_id() -> str:
    return secrets.token_hex(8)


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it is an acceptable request id, else None."""
    return value if value is not None and _REQUEST_ID.match(value) else None


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``record.request_id``, None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """The plain format, with `` [request_id]`` after the logger name inside a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        if rid is None:
            return text
        head, sep, tail = text.partition(f"{record.name}: ")
        return f"{head}{record.name} [{rid}]: {tail}" if sep else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, and when they apply
    ``request_id``, ``alert`` (the name of an ``ALERT name ...`` line, for alert rules) and
    ``exc`` (the traceback). The message is formatted first, exactly as in text, so a JSON log
    holds nothing a text log would not."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            out["request_id"] = rid
        alert = _ALERT.match(message)
        if alert:
            out["alert"] = alert.group(1)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (standard error by default) writing ``fmt`` ("text" or "json")."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}")
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    out.addFilter(RequestIdFilter())
    return out


def configure(level: str, fmt: str = "text") -> None:
    """Route every logger to standard error in ``fmt`` at ``level``; for the CLI only."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(fmt))
    root.setLevel(level.upper())
