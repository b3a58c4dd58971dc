#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v3/cmd/helm, the version pinned in helm/go.mod,
# checked against helm/go.sum) once, into a cache keyed by that version, and prints the binary's
# path on stdout (everything else goes to stderr). Used by the tests that render or lint the
# chart (kube_manifests, ./test.sh's helm suite) and by the real-apiserver suite.
#
#   helm=$(host-cni/tests/k8s/tools/helm.sh)
#
# Cache: ${HEREABOUTS_TOOLS_DIR:-<repo>/target/tools}/helm-<version>/helm. Needs Go >= the go
# line of helm/go.mod (GOTOOLCHAIN may fetch it from the Go module proxy) and the proxy the
# first time; afterwards nothing. Concurrent callers wait on one lock and build once.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
module=$here/helm
version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$module/go.mod")
[ -n "$version" ] || { echo "helm.sh: no helm.sh/helm/v3 version in $module/go.mod" >&2; exit 1; }
dir=${HEREABOUTS_TOOLS_DIR:-$repo/target/tools}/helm-$version
bin=$dir/helm

if [ ! -x "$bin" ]; then
    command -v go >/dev/null || { echo "helm.sh: go not found (needed to build helm $version)" >&2; exit 1; }
    # Go >= 1.21 fetches the toolchain helm/go.mod asks for from the Go module proxy.
    export GOTOOLCHAIN=auto
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock 9
    if [ ! -x "$bin" ]; then
        echo "helm.sh: building helm $version (go $(go env GOVERSION)) into $dir" >&2
        t0=$(date +%s)
        (cd "$module" && nice -n 10 go build -trimpath -ldflags "-s -w" \
            -o "$bin.tmp" helm.sh/helm/v3/cmd/helm) >&2
        mv "$bin.tmp" "$bin"
        echo "helm.sh: built in $(($(date +%s) - t0)) s" >&2
    fi
fi
# Built from the pinned module; check that it runs at all.
"$bin" version --short >/dev/null || { echo "helm.sh: $bin does not run" >&2; exit 1; }
echo "$bin"
