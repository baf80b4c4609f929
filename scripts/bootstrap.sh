# Sourced by the set-up commands: creates .venv with Python >= 3.11 and installs mla_node into it.
# Everything the project needs is installed here; nothing is taken from the machine but Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

PY=$(find_python) || { echo "mla_node needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately; as root we can add it, otherwise say what is missing.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv && "$PY" -m venv .venv
    else
      echo "python venv is missing: install python3-venv" >&2; exit 1
    fi
  fi
fi
pip_install() {
  # Quiet, but keep real errors: drop only pip's notes about index locations it skips.
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2)
}
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${1:-app}
if [ ! -f "$stamp" ]; then
  pip_install --upgrade pip
  if [ "${1:-app}" = dev ]; then pip_install -e '.[dev]'; else pip_install -e .; fi
  touch "$stamp"
fi
