"""What every ``mla-node`` command group shares: exit codes, path options, small formatters."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from mla_node.errors import ClientError

EXIT_ERROR = 2  # an MlaError: bad input, files, configuration, unreachable node
EXIT_CHECK_FAILED = 1  # the command ran but what it checks is not so

DIR_OPTION = click.Path(file_okay=False, path_type=Path)
FILE_OPTION = click.Path(dir_okay=False, path_type=Path)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc


def iso_ms(at: int) -> str:
    """A time in ms since the epoch as ISO 8601 UTC, to the second."""
    return dt.datetime.fromtimestamp(at / 1000, dt.UTC).isoformat(timespec="seconds")
