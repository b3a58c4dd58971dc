#!/usr/bin/env bash
# Node slices at cluster scale: 8 nodes × 200 ADDs (fresh processes, all nodes at once) on one
# network, on one network with node_slice_size, and on eight separate pools; over the
# Kubernetes API-server emulation and over a private etcd on loopback that this script starts
# and stops. Prints a Markdown table (docs/benchmarks.md).
#
#   host-cni/bench/node-slices.sh [ADDS_PER_NODE]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
node="$root/host-cni/tests/etcd/node.sh"
work=$(mktemp -d /tmp/hereabouts-slices-bench.XXXXXX)
trap 'bash "$node" down "$work/etcd"; rm -rf "$work"' EXIT INT TERM
endpoint=$(bash "$node" single "$work/etcd" bench)
echo "etcd $(etcd --version | head -1 | cut -d' ' -f3) at $endpoint (fsync on); $(nproc) cores"
cd "$root"
HEREABOUTS_ETCD_ENDPOINTS="$endpoint" HEREABOUTS_BENCH_ADDS="${1:-200}" \
  cargo test --release --locked -p hereabouts --test kube_cli -- --ignored --exact \
  bench_node_slices --nocapture 2>&1 | grep -E '^(\||[0-9]+ nodes)|panicked|FAILED'
