#!/usr/bin/env bash
# Benchmark of the etcd store: starts a private etcd on a free loopback port with a temporary
# data dir, runs the `bench_stores` test (host-cni/bench/etcd_bench.rs), prints Markdown
# tables, stops etcd.
#
#   host-cni/bench/etcd.sh [NAME=BIN …]
#
# Each NAME=BIN also runs the scenarios with a fresh process of that plugin binary per call
# (e.g. `before=path/to/previous/hereabouts now=target/release/hereabouts`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
node="$root/host-cni/tests/etcd/node.sh"
work=$(mktemp -d /tmp/hereabouts-etcd-bench.XXXXXX)
trap 'bash "$node" down "$work/etcd"; rm -rf "$work"' EXIT INT TERM
endpoint=$(bash "$node" single "$work/etcd" bench)
echo "etcd $(etcd --version | head -1 | cut -d' ' -f3) at $endpoint, data in $work (fsync on)"
cd "$root"
HEREABOUTS_ETCD_ENDPOINTS="$endpoint" HEREABOUTS_CACHE_DIR="$work/cache" HEREABOUTS_BENCH_BINS="$*" \
  cargo test --release --locked -p hereabouts-stores --no-default-features --features etcd \
  --test etcd -- --ignored --exact bench_stores --nocapture
