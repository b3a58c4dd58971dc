#!/usr/bin/env bash
# One private etcd member on loopback, for the etcd tests and benchmark.
#
#   node.sh init DIR ARGS…   remember etcd's ARGS in DIR, start it (data in DIR/data, log DIR/etcd.log)
#   node.sh up DIR           start it again with the remembered ARGS (same ports, same data)
#   node.sh down DIR         stop it (SIGTERM, then SIGKILL after 5 s) and wait until it is gone
#   node.sh wait URL [TLS…]  wait until the endpoint is healthy (etcdctl flags may follow)
#   node.sh port             print a free loopback TCP port
#   node.sh single DIR NAME  init a one-member cluster named NAME on free ports, wait until it is
#                            healthy, print its client endpoint (host:port)
set -euo pipefail
cmd=${1:?usage: node.sh init|up|down|wait|port|single …}; shift || true

case $cmd in
  port)
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' ;;
  init)
    dir=$1; shift
    mkdir -p "$dir"
    printf '%q ' "$@" >"$dir/args"
    exec bash "$0" up "$dir" ;;
  up)
    dir=$1
    # shellcheck disable=SC2046
    eval "set -- $(cat "$dir/args")"
    etcd --data-dir "$dir/data" "$@" >>"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/pid" ;;
  down)
    dir=$1
    [ -f "$dir/pid" ] || exit 0
    pid=$(cat "$dir/pid"); rm -f "$dir/pid"
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true ;;
  wait)
    url=$1; shift
    for _ in $(seq 100); do
      ETCDCTL_API=3 etcdctl --endpoints "$url" "$@" --command-timeout=1s endpoint health >/dev/null 2>&1 && exit 0
      sleep 0.1
    done
    echo "etcd at $url did not become healthy" >&2; exit 1 ;;
  single)
    dir=$1 name=$2
    c=$(bash "$0" port); p=$(bash "$0" port)
    bash "$0" init "$dir" --name "$name" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --initial-cluster "$name=http://127.0.0.1:$p"
    bash "$0" wait "127.0.0.1:$c"
    echo "127.0.0.1:$c" ;;
  *) echo "node.sh: unknown command $cmd" >&2; exit 2 ;;
esac
