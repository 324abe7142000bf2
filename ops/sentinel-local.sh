#!/usr/bin/env bash
# A local Redis Sentinel group without Docker: a primary, replicas and sentinels on loopback.
# Needs only redis-server and redis-cli.
#
#   bash ops/sentinel-local.sh start [--base-port 6480] [--replicas 1] [--sentinels 3] [--dir DIR]
#   bash ops/sentinel-local.sh status|url|stop [--base-port 6480] [--dir DIR]
#
# The primary listens on base-port, replica i on base-port + i; sentinel i on
# base-port + 20000 + i. The sentinels monitor the primary as "mymaster" with quorum
# (sentinels / 2 + 1), down-after-milliseconds 1000, failover-timeout 3000. Data nodes use AOF
# (appendfsync everysec). `start` prints the URL:
#   SESSIONSTREAMS_URL=redis+sentinel://127.0.0.1:26480,127.0.0.1:26481,127.0.0.1:26482/mymaster/0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

action=${1:-}
[ $# -gt 0 ] && shift
base=6480
replicas=1
sentinels=3
dir=""
service=mymaster
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base="$2"; shift ;;
    --replicas) replicas="$2"; shift ;;
    --sentinels) sentinels="$2"; shift ;;
    --dir) dir="$2"; shift ;;
    *) echo "sentinel-local.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
dir=${dir:-$PWD/.run/sentinel-$base}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
ports_file="$dir/ports"   # lines: "data <port>" or "sentinel <port>"

ports_of() { [ -f "$ports_file" ] && awk -v k="$1" '$1 == k { print $2 }' "$ports_file" || true; }

group_url() {
  local hosts=""
  for port in $(ports_of sentinel); do hosts="${hosts:+$hosts,}127.0.0.1:$port"; done
  echo "redis+sentinel://$hosts/$service/0"
}

wait_for() {  # wait_for <seconds> <command...>: poll every 0.1 s
  local tries=$(( $1 * 10 )); shift
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

sentinel_ready() {  # every sentinel knows the other sentinels and the replicas
  local port=$1
  local info
  info=$(redis-cli -p "$port" sentinel master "$service" 2>/dev/null | paste - - | tr '\t' ' ')
  echo "$info" | grep -q "^num-other-sentinels $(( sentinels - 1 ))$" &&
    echo "$info" | grep -q "^num-slaves $replicas$"
}

start_server() {  # start_server <port> <folder> [args...]
  local port=$1 folder=$2; shift 2
  mkdir -p "$folder"
  redis-server "$@" --port "$port" --bind 127.0.0.1 --dir "$folder" \
    --logfile "$folder/redis.log" --pidfile "$folder/redis.pid" --daemonize yes
  wait_for 10 redis-cli -p "$port" ping || { echo "port $port did not start (see $folder)" >&2; exit 1; }
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
    echo "sentinel-local.sh: redis-server and redis-cli are needed (apt-get install redis-server)" >&2
    exit 1
  }
  if [ -f "$ports_file" ] && redis-cli -p "$(ports_of sentinel | head -1)" ping >/dev/null 2>&1; then
    echo "sentinel group already running"; group_url; return 0
  fi
  : > "$ports_file"
  local data=(--appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction
              --repl-diskless-sync-delay 0)
  start_server "$base" "$dir/server-$base" "${data[@]}"
  echo "data $base" >> "$ports_file"
  for i in $(seq 1 "$replicas"); do
    local port=$(( base + i ))
    start_server "$port" "$dir/server-$port" "${data[@]}" --replicaof 127.0.0.1 "$base"
    echo "data $port" >> "$ports_file"
  done
  local quorum=$(( sentinels / 2 + 1 ))
  for i in $(seq 0 $(( sentinels - 1 ))); do
    local port=$(( base + 20000 + i ))
    local folder="$dir/sentinel-$port"
    mkdir -p "$folder"
    cat > "$folder/sentinel.conf" <<EOF
sentinel monitor $service 127.0.0.1 $base $quorum
sentinel down-after-milliseconds $service 1000
sentinel failover-timeout $service 3000
EOF
    start_server "$port" "$folder" "$folder/sentinel.conf" --sentinel
    echo "sentinel $port" >> "$ports_file"
  done
  for port in $(ports_of sentinel); do
    wait_for 30 sentinel_ready "$port" || { echo "sentinel $port did not converge" >&2; exit 1; }
  done
  echo "primary 127.0.0.1:$base, $replicas replica(s), $sentinels sentinels (files in $dir)"
  group_url
}

status() {
  local up=0
  for port in $(ports_of data); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
      up=$(( up + 1 )); echo "127.0.0.1:$port $(redis-cli -p "$port" role | head -1)"
    else
      echo "127.0.0.1:$port down"
    fi
  done
  for port in $(ports_of sentinel); do
    echo "sentinel 127.0.0.1:$port primary $(redis-cli -p "$port" sentinel get-master-addr-by-name "$service" 2>/dev/null | paste -sd: -)"
  done
  [ "$up" -gt 0 ]
}

stop() {
  # Sentinels first, so that stopping the primary does not start a failover.
  for port in $(ports_of sentinel) $(ports_of data); do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  for port in $(ports_of sentinel) $(ports_of data); do
    wait_for 10 sh -c "! redis-cli -p $port ping" || echo "port $port still answers" >&2
  done
  rm -f "$ports_file"
  echo "sentinel group stopped"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) group_url ;;
  *) echo "usage: $0 start|stop|status|url [--base-port N] [--replicas N] [--sentinels N] [--dir DIR]" >&2; exit 2 ;;
esac
