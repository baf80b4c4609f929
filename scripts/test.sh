#!/usr/bin/env bash
# The tests: lint (ruff), types (mypy --strict), the compose file (offline), then pytest.
#   scripts/test.sh            everything CI runs
#   scripts/test.sh --fast     the inner loop: no multi-process or long tests (-m "not slow")
#   MLA_FULL=1 scripts/test.sh heavy sizes (long fuzzing) where tests support them
# Other arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" dev
fast=()
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then fast=(-m "not slow"); else args+=("$a"); fi
done
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== docker compose config -q"; bash scripts/check_compose.sh
echo "== pytest"
set +e
.venv/bin/pytest "${fast[@]}" "${args[@]}"
rc=$?
set -e
# pytest exits 5 when a selection collects no test: that is a broken selection, not a pass.
if [ "$rc" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
