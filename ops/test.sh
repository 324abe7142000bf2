#!/usr/bin/env bash
# The project's test command: set up (idempotent), then lint, check the import contract,
# type-check and run the test suite. Extra arguments go to pytest: bash ops/test.sh -k settings -x
#
# On a fresh Debian machine run it as root (or with sudo available): it installs redis-server
# with apt only when missing, creates the virtual environment .venv (SESSIONSTREAMS_VENV)
# and installs the package with its dev extras there, pinned by constraints.txt.
# SESSIONSTREAMS_SKIP_INSTALL=1 skips the install step (offline machines that are set up).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source ops/_env.sh

if [ "${SESSIONSTREAMS_SKIP_INSTALL:-0}" != "1" ]; then
  ensure_commands redis-server:redis-server
fi
ensure_venv dev
BIN=$(dirname "$VENV_PY")

# mypy reads the packages under their installed names: a tree of links to the folders.
mkdir -p build/typecheck/sessionstreams
for part in common producer workers; do
  ln -sfn "../../../$part" "build/typecheck/sessionstreams/$part"
done

status=0
echo "== ruff check"
"$BIN/ruff" check . || status=1
echo "== import contract (lint-imports)"
"$BIN/lint-imports" || status=1
echo "== mypy"
"$BIN/mypy" || status=1
echo "== pytest"
"$VENV_PY" -m pytest "$@" || status=1
exit "$status"
