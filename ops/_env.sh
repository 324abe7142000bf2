# Sourced by ops/test.sh and ops/run-local.sh: a virtual environment of the project's own
# (never the system Python), with the package installed from constraints.txt.
#   SESSIONSTREAMS_VENV   where it lives (default .venv in the repository)
#   SESSIONSTREAMS_SKIP_INSTALL=1   use it as it is (offline machines that are set up)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "root is needed to run: $*" >&2
    return 1
  fi
}

# apt-get install the Debian packages whose command is missing: ensure_commands cmd:package ...
ensure_commands() {
  local packages=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || packages+=("${pair#*:}")
  done
  [ "${#packages[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${packages[*]} and apt-get is not available" >&2
    return 1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
}

# ensure_venv EXTRAS [VENV_DIR [CONSTRAINTS]]: create the venv when missing (default
# $SESSIONSTREAMS_VENV, else .venv), then install the package with EXTRAS (e.g. "dev") pinned
# by CONSTRAINTS (default constraints.txt). Sets VENV_PY.
ensure_venv() {
  local extras=$1
  VENV=${2:-${SESSIONSTREAMS_VENV:-$PWD/.venv}}
  local constraints=${3:-constraints.txt}
  VENV_PY=$VENV/bin/python
  if [ "${SESSIONSTREAMS_SKIP_INSTALL:-0}" = "1" ]; then
    return 0
  fi
  if [ ! -x "$VENV_PY" ]; then
    local base=${PYTHON:-python3}
    if ! "$base" -m venv --help >/dev/null 2>&1; then
      ensure_commands "python3:python3" && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q python3-venv
    fi
    "$base" -m venv "$VENV"
  fi
  local target=.
  [ -n "$extras" ] && target=".[${extras}]"
  "$VENV_PY" -m pip install --quiet --disable-pip-version-check -c "$constraints" -e "$target"
}

# lowest_constraints OUT: constraints.txt with the pins of constraints-lowest.txt in place of
# its own (the lowest supported redis-py and what it needs).
lowest_constraints() {
  local out=$1 names
  names=$(grep -E '^[A-Za-z0-9_.-]+==' constraints-lowest.txt | cut -d= -f1 | paste -sd'|')
  mkdir -p "$(dirname "$out")"
  { grep -v -i -E "^(${names})==" constraints.txt; grep -E '==' constraints-lowest.txt; } >"$out"
}
