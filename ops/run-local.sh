#!/usr/bin/env bash
# Set up and run sessionstreams locally without Docker: a redis-server on a loopback port, two
# worker processes, then a short demo through the session service in synchronous and in async
# (streams) mode, and the pipeline status. Workers and Redis are stopped at the end (Redis
# stays up with --keep).
#   bash ops/run-local.sh [--keep] [--port 6390] [--topology standalone|cluster|sentinel]
# --topology cluster / sentinel start a 3-primary Redis Cluster (ops/cluster-local.sh, ports
# from 7000) or a Sentinel group (ops/sentinel-local.sh, ports from 6480) instead; --port
# then sets their base port.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
port=""
topology=standalone
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --port) port="$2"; shift ;;
    --topology) topology="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
case "$topology" in
  standalone) port=${port:-6390} ;;
  cluster) port=${port:-7000}; script=ops/cluster-local.sh ;;
  sentinel) port=${port:-6480}; script=ops/sentinel-local.sh ;;
  *) echo "unknown topology: $topology (standalone|cluster|sentinel)" >&2; exit 2 ;;
esac

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: sudo apt-get install -y redis-server" >&2; exit 1
  fi
fi
source ops/_env.sh
ensure_venv ""
export PATH="$(dirname "$VENV_PY"):$PATH"

# The system on one URL: two workers, the demo in synchronous and in async (streams) mode,
# the pipeline status; then the workers are stopped with SIGTERM (they drain and exit 0).
run_system() {
  local url=$1 status=0 pids=() logs
  logs="$PWD/.run/workers"
  mkdir -p "$logs"
  for i in 1 2; do
    SESSIONSTREAMS_URL="$url" python -m sessionstreams.workers >"$logs/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  echo "== demo, synchronous persistence"
  sessionstreams --url "$url" demo || status=$?
  echo "== demo, async persistence through the shard streams and the 2 workers"
  SESSIONSTREAMS_ENABLE_ASYNC_PERSIST=1 sessionstreams --url "$url" demo || status=$?
  echo "== sessionstreams status"
  sessionstreams --url "$url" status || status=$?
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  echo "workers stopped (logs in $logs)"
  return "$status"
}

if [ "$topology" != standalone ]; then
  url=$(bash "$script" start --base-port "$port" | tail -n 1)
  status=0
  run_system "$url" || status=$?
  if [ "$keep" = 0 ]; then
    bash "$script" stop --base-port "$port"
  else
    echo "$topology left running: SESSIONSTREAMS_URL=$url (stop: bash $script stop --base-port $port)"
  fi
  exit "$status"
fi

run_dir="$PWD/.run/redis-$port"
mkdir -p "$run_dir"
started=0  # a server already listening on the port is used, and left running
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  started=1
  redis-server --port "$port" --bind 127.0.0.1 --dir "$run_dir" --appendonly yes \
    --appendfsync everysec --save "" --daemonize yes --pidfile "$run_dir/redis.pid" \
    --logfile "$run_dir/redis.log"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi
echo "redis-server on 127.0.0.1:$port (data in $run_dir)"

url="redis://127.0.0.1:$port/0"
status=0
run_system "$url" || status=$?

if [ "$started" = 0 ]; then
  echo "redis-server on port $port was already running: left as it was"
elif [ "$keep" = 0 ]; then
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  echo "redis-server stopped (use --keep to leave it running)"
else
  echo "redis-server left running: SESSIONSTREAMS_URL=$url"
fi
exit "$status"
