#!/usr/bin/env bash
# The Kubernetes suite against a real kube-apiserver: builds (once, cached under target/tools)
# kube-apiserver, kubectl and etcd from their Go modules, starts them on 127.0.0.1 with client
# certificates, TokenRequest service-account tokens and --authorization-mode=RBAC
# (cluster.sh), applies what a user applies — `hereabouts crds`, deploy/*.yaml, and
# `helm template deploy/helm/hereabouts` — with `kubectl apply --server-side`, then runs the
# Kubernetes tests (the same test code as `cargo test` runs on the emulation) against it, each
# component as the ServiceAccount deploy/ gives it. Always stops what it started.
# Ends with "N passed, N failed".
#
#   host-cni/tests/k8s/run.sh [BIN]     (BIN: target/release/hereabouts)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
if [ $# -eq 0 ]; then
  # The suite's own binary, so it also runs alone (`./test.sh kube` on a fresh clone).
  ( cd "$root" && cargo build --release --locked -p hereabouts ) || { echo "cannot build hereabouts"; echo "0 passed, 1 failed"; exit 1; }
fi
bin=$(readlink -f "${1:-$root/target/release/hereabouts}")
passed=0 failed=0 failures=""
result() { # name status
  if [ "$2" = 0 ]; then passed=$((passed+1)); echo "ok: $1"; else failed=$((failed+1)); failures="$failures $1"; echo "FAILED: $1"; fi
}
finish() {
  [ -n "$failures" ] && echo "failed:$failures"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

t0=$SECONDS
tools=$("$here/tools/build.sh") || { echo "cannot build the Kubernetes components"; echo "0 passed, 1 failed"; exit 1; }
echo "kube-apiserver, kubectl, etcd: $tools ($((SECONDS - t0)) s)"
helm=$("$here/tools/helm.sh") || { echo "cannot build helm"; echo "0 passed, 1 failed"; exit 1; }

work=$(mktemp -d /tmp/hereabouts-k8s.XXXXXX)
cleanup() { bash "$here/cluster.sh" down "$work" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT INT TERM
bash "$here/cluster.sh" up "$work" || { tail -30 "$work/apiserver.log" 2>/dev/null; echo "0 passed, 1 failed"; exit 1; }
export KUBECONFIG=$work/admin.kubeconfig
kubectl() { "$tools/kubectl" "$@"; }

# --- the manifests as a user applies them ------------------------------------------------------
# `hereabouts crds`, Multus' NAD CRD (the tests create NADs) and deploy/*.yaml, server-side.
result "hereabouts crds, the NAD CRD and deploy/*.yaml apply" \
  "$(bash "$here/cluster.sh" install "$work" "$bin" >"$work/apply.log" 2>&1; echo $?)"
result "helm lint" "$("$helm" lint "$root/deploy/helm/hereabouts" >"$work/helm.log" 2>&1; echo $?)"
"$helm" template hereabouts "$root/deploy/helm/hereabouts" --namespace kube-system --include-crds >"$work/helm.yaml" 2>>"$work/helm.log"
# The chart's objects have the names deploy/ gives them: validated by the server (schema,
# admission) without replacing deploy/'s, which the tests run as.
result "helm template applies (server dry run)" \
  "$(kubectl apply --server-side --dry-run=server --force-conflicts -f "$work/helm.yaml" >>"$work/apply.log" 2>&1; echo $?)"
[ "$failed" = 0 ] || cat "$work/apply.log" "$work/helm.log"

# --- the tests ---------------------------------------------------------------------------------
# One at a time: they share the server (each starts by deleting what the last one left).
# Names ending in _emulated inject faults only the emulation can; they run in `cargo test`.
export HEREABOUTS_TEST_APISERVER=$work
run_tests() { # label cargo-args…   (HARNESS_ARGS: more arguments for the test binary)
  local label=$1; shift
  # shellcheck disable=SC2086
  ( cd "$root" && cargo test --release --locked "$@" -- --test-threads=1 --skip _emulated ${HARNESS_ARGS:-} ) >"$work/$label.log" 2>&1
  local status=$?
  grep -E "^test .* (ok|FAILED|ignored)$|^test result" "$work/$label.log"
  [ $status = 0 ] || tail -60 "$work/$label.log"
  result "$label" $status
}
run_tests kube_store -p hereabouts-stores --features kube --test kube_store
run_tests kube_reconcile -p hereabouts-kube --test kube_reconcile
run_tests kube_slices -p hereabouts-kube --test kube_slices
# The 50,000-pod reconcile is host-cni/bench/kube-apiserver.sh's (tens of thousands of writes).
HARNESS_ARGS="--skip reconcile_pages_through_50000_pods" run_tests kube_cli -p hereabouts --test kube_cli
run_tests kube_install -p hereabouts --test kube_install
# Real-server-only cases of kube_cli (a restarted API server, a 410 after real compaction).
HARNESS_ARGS="--ignored on_the_real_server" run_tests kube_cli_real -p hereabouts --test kube_cli
# What only the real server can tell: RBAC, as shipped, grants each component what it needs
# and nothing more (real 403s).
HARNESS_ARGS=--ignored run_tests kube_rbac -p hereabouts --test kube_rbac
# Whereabouts v0.9 objects applied with kubectl, then ADD/DEL, reconcile and the controller.
HARNESS_ARGS="--ignored on_the_real_server" run_tests kube_whereabouts_layout -p hereabouts --test kube_whereabouts_layout
finish
