#!/usr/bin/env bash
# A local Redis Cluster without Docker: redis-server processes on loopback, joined with
# redis-cli --cluster create. Needs only redis-server and redis-cli.
#
#   bash ops/cluster-local.sh start [--base-port 7000] [--primaries 3] [--replicas 0] [--dir DIR]
#   bash ops/cluster-local.sh status|url|stop [--base-port 7000] [--dir DIR]
#
# Node i listens on base-port + i (cluster bus on that + 10000), with its files (AOF,
# appendfsync everysec, nodes.conf, log, pid) in DIR/node-<port> (default .run/cluster-<base>).
# `start` prints the URL to use: SESSIONSTREAMS_URL=redis+cluster://127.0.0.1:7000,...
# `stop` shuts the nodes down and deletes their cluster state, so the next start is fresh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

action=${1:-}
[ $# -gt 0 ] && shift
base=7000
primaries=3
replicas=0
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base="$2"; shift ;;
    --primaries) primaries="$2"; shift ;;
    --replicas) replicas="$2"; shift ;;
    --dir) dir="$2"; shift ;;
    *) echo "cluster-local.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
dir=${dir:-$PWD/.run/cluster-$base}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

ports_file="$dir/ports"

node_ports() {
  if [ -f "$ports_file" ]; then cat "$ports_file"; fi
}

cluster_url() {
  local hosts=""
  for port in $(node_ports); do hosts="${hosts:+$hosts,}127.0.0.1:$port"; done
  echo "redis+cluster://$hosts"
}

wait_for() {  # wait_for <seconds> <command...>: poll every 0.1 s
  local tries=$(( $1 * 10 )); shift
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

cluster_ok() {
  redis-cli -p "$1" cluster info | grep -q '^cluster_state:ok'
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
    echo "cluster-local.sh: redis-server and redis-cli are needed (apt-get install redis-server)" >&2
    exit 1
  }
  local count=$(( primaries * (1 + replicas) ))
  local ports=()
  for i in $(seq 0 $(( count - 1 ))); do ports+=( $(( base + i )) ); done
  if [ -f "$ports_file" ] && cluster_ok "${ports[0]}"; then
    echo "cluster already running"; cluster_url; return 0
  fi
  printf '%s\n' "${ports[@]}" > "$ports_file"
  for port in "${ports[@]}"; do
    local node="$dir/node-$port"
    mkdir -p "$node"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --cluster-port $(( port + 10000 )) --appendonly yes --appendfsync everysec --save "" \
      --maxmemory-policy noeviction --repl-diskless-sync-delay 0 \
      --dir "$node" --logfile "$node/redis.log" --pidfile "$node/redis.pid" --daemonize yes
  done
  for port in "${ports[@]}"; do
    wait_for 10 redis-cli -p "$port" ping || { echo "node $port did not start (see $dir)" >&2; exit 1; }
  done
  local args=()
  for port in "${ports[@]}"; do args+=( "127.0.0.1:$port" ); done
  redis-cli --cluster create "${args[@]}" --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log"
  for port in "${ports[@]}"; do
    wait_for 30 cluster_ok "$port" || { echo "cluster did not form (see $dir/create.log)" >&2; exit 1; }
  done
  echo "cluster of ${#ports[@]} nodes on 127.0.0.1:${ports[0]}..${ports[-1]} (files in $dir)"
  cluster_url
}

status() {
  local up=0
  for port in $(node_ports); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
      up=$(( up + 1 ))
      echo "127.0.0.1:$port $(redis-cli -p "$port" role | head -1) $(redis-cli -p "$port" cluster info | grep cluster_state | tr -d '\r')"
    else
      echo "127.0.0.1:$port down"
    fi
  done
  [ "$up" -gt 0 ]
}

stop() {
  for port in $(node_ports); do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  for port in $(node_ports); do
    wait_for 10 sh -c "! redis-cli -p $port ping" || echo "node $port still answers" >&2
    rm -f "$dir/node-$port/nodes.conf" "$dir/node-$port/redis.pid"
    rm -rf "$dir/node-$port/appendonlydir"
  done
  rm -f "$ports_file"
  echo "cluster stopped"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) cluster_url ;;
  *) echo "usage: $0 start|stop|status|url [--base-port N] [--primaries N] [--replicas N] [--dir DIR]" >&2; exit 2 ;;
esac
