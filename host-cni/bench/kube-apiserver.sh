#!/usr/bin/env bash
# The Kubernetes store's figures on a real kube-apiserver, beside the API-server emulation in
# the same run (docs/benchmarks.md): 8 nodes × ADDS fresh-process ADDs on one network, sliced
# and on eight networks; the controller's free latency over 100 deletions; reconcile over
# 50,000 pods and 20,000 allocations (wall time, peak RSS). Starts and stops its own control
# plane (host-cni/tests/k8s/cluster.sh; the components are built once, under target/tools).
#
#   host-cni/bench/kube-apiserver.sh [ADDS_PER_NODE]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cluster=$root/host-cni/tests/k8s/cluster.sh
cd "$root"
cargo build --release --locked -p hereabouts >/dev/null
work=$(mktemp -d /tmp/hereabouts-kube-bench.XXXXXX)
trap 'bash "$cluster" down "$work" >/dev/null 2>&1; rm -rf "$work"' EXIT INT TERM
bash "$cluster" up "$work"
bash "$cluster" install "$work" "$root/target/release/hereabouts" >/dev/null
echo "$(nproc) cores; kube-apiserver $(. "$work/env"; "$TOOLS/kube-apiserver" --version | cut -d' ' -f2), etcd on loopback (fsync on)"
export HEREABOUTS_TEST_APISERVER=$work HEREABOUTS_BENCH_ADDS=${1:-200}
bench() { # test name
  cargo test --release --locked -p hereabouts --test kube_cli -- --include-ignored --exact "$1" --nocapture \
    --test-threads=1 2>&1 | grep -E '^(\||[0-9]+ nodes|reconcile )|panicked|FAILED'
}
bench bench_node_slices
bench bench_controller_free_latency
echo
echo "reconcile at scale (each line: the real kube-apiserver, then the emulation):"
bench reconcile_pages_through_50000_pods
HEREABOUTS_TEST_APISERVER= bench reconcile_pages_through_50000_pods
