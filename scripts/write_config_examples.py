"""Regenerate config/<STATE>.example.toml and the settings table of config/README.md.

Run after changing a setting in mla_node/config.py:

    .venv/bin/python scripts/write_config_examples.py

tests/test_config_docs.py fails until the files match the code again.
"""

from __future__ import annotations

from pathlib import Path

from mla_node.config_text import (
    EXAMPLE_STATES,
    example_config,
    example_path,
    readme_with_table,
)
from mla_node.localnet import CENTRAL_AUTHORITIES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def main() -> None:
    for state in EXAMPLE_STATES:
        path = example_path(CONFIG_DIR, state)
        path.write_text(example_config(state, CENTRAL_AUTHORITIES[state]), encoding="utf-8")
        print(f"wrote {path}")
    readme = CONFIG_DIR / "README.md"
    readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated the settings table of {readme}")


if __name__ == "__main__":
    main()
