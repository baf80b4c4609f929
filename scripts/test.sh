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
chosen=""  # the caller named tests to run (a path or a node id)
for a in "$@"; do
  if [ "$a" = "--fast" ]; then fast=(-m "not slow"); else args+=("$a"); fi
  if [ -e "${a%%::*}" ]; then chosen=1; fi
done
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== docker compose config -q"; bash scripts/check_compose.sh
# PostgreSQL (issue 9): a server of the tests' own on loopback, when the machine has one
# (Debian's postgresql package; .ci/run installs it). Without it those tests skip, except in CI.
if pg=$(bash scripts/postgres.sh start); then
  export "${pg?}"
elif [ "${CI:-}" = true ]; then
  echo "no PostgreSQL server for the tests (scripts/postgres.sh)" >&2; exit 1
fi
echo "== pytest"
set +e
.venv/bin/pytest "${fast[@]}" "${args[@]}"
rc=$?
# The use cases once more, every node on PostgreSQL (tests/service/memnet.py), unless the
# caller chose what to run.
if [ "$rc" = 0 ] && [ -z "$chosen" ] && [ -n "${MLA_TEST_POSTGRES:-}" ]; then
  echo "== pytest tests/service on PostgreSQL"
  MLA_TEST_BACKEND=postgresql .venv/bin/pytest "${fast[@]}" "${args[@]}" tests/service
  rc=$?
fi
set -e
# pytest exits 5 when a selection collects no test: that is a broken selection, not a pass.
if [ "$rc" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
