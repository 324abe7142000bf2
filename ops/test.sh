#!/usr/bin/env bash
# The project's test command: install what the tests need (idempotent), then lint, type-check
# and run the test suite. Extra arguments go to pytest: bash ops/test.sh -k settings -x
#
# On a fresh Debian machine run it as root (or with sudo available): it installs redis-server
# (and pip) with apt only when missing, then the package with its dev extras.
# SESSIONSTREAMS_SKIP_INSTALL=1 skips the install step (offline machines that are set up).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "ops/test.sh: root is needed to run: $*" >&2
    return 1
  fi
}

install_requirements() {
  local packages=()
  command -v "$PYTHON" >/dev/null 2>&1 || packages+=(python3)
  command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
  "$PYTHON" -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
  if [ "${#packages[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "ops/test.sh: missing ${packages[*]} and apt-get is not available" >&2
      return 1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
  fi
  # Debian's system Python refuses pip installs without this (PEP 668); a venv ignores it.
  PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install --quiet --disable-pip-version-check \
    -e '.[dev]'
}

if [ "${SESSIONSTREAMS_SKIP_INSTALL:-0}" != "1" ]; then
  install_requirements
fi

status=0
echo "== ruff check"
"$PYTHON" -m ruff check . || status=1
echo "== mypy"
"$PYTHON" -m mypy || status=1
echo "== pytest"
"$PYTHON" -m pytest "$@" || status=1
exit "$status"
