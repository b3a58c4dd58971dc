#!/usr/bin/env bash
# One network on many nodes, no node slices (issue 23): 4, 8 and 16 runtimes × 30 fresh-process
# ADDs on one pool, beside one pool per runtime, in one run, for each NAME=BIN given; prints
# ADD/s, p50, p99 and commits attempted per ADD (host-cni/bench/one_pool_bench.rs). Starts a
# private etcd on a free loopback port (fsync on) and stops it.
#
#   host-cni/bench/one-pool.sh before=path/to/previous/hereabouts now=target/release/hereabouts
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
node="$root/host-cni/tests/etcd/node.sh"
[ $# -gt 0 ] || { echo "usage: $0 NAME=BIN …" >&2; exit 2; }
work=$(mktemp -d /tmp/hereabouts-one-pool.XXXXXX)
trap 'bash "$node" down "$work/etcd"; rm -rf "$work"' EXIT INT TERM
endpoint=$(bash "$node" single "$work/etcd" bench)
echo "$(nproc) cores; etcd $(etcd --version | head -1 | cut -d' ' -f3) at $endpoint (fsync on)"
cd "$root"
HEREABOUTS_ETCD_ENDPOINTS="$endpoint" HEREABOUTS_CACHE_DIR="$work/cache" HEREABOUTS_BENCH_BINS="$*" \
  cargo test --release --locked -p hereabouts-stores --no-default-features --features etcd \
  --test etcd -- --ignored --exact bench_one_pool --nocapture
