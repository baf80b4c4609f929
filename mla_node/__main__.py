"""``python -m mla_node``: the same command line as ``mla-node``."""

from mla_node.cli import main

if __name__ == "__main__":
    main()
