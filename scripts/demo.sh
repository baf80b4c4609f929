#!/usr/bin/env bash
# The main job: a local network of three state nodes (AR, BR, US) on loopback, an MLA request and
# an extradition request sent, their verified receipts and evidence printed. Extra arguments go to
# `mla-node demo` (for example --once to exit after the two receipts are verified).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" app
exec .venv/bin/mla-node demo "$@"
