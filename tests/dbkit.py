"""Database files in tests: a consistent copy of a live node's database."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def backup(db: Path, to: Path) -> None:
    """A consistent copy of a live node's database (SQLite's online backup API)."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dst = sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
