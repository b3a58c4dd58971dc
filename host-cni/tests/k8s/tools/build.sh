#!/usr/bin/env bash
# Builds the real Kubernetes components the test command runs — kube-apiserver and kubectl
# (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3's etcdmain) — from the Go module in
# ./kube at the versions its go.mod pins, into target/tools/k8s-<version>/, and prints that
# directory. A second run finds them there and builds nothing (the cache is keyed by the
# version and by a hash of this script and the module, so a version bump rebuilds).
#
# usage: host-cni/tests/k8s/tools/build.sh   (needs Go 1.26 and the Go module proxy)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
module=$here/kube
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3} $1 == "k8s.io/kubernetes" {print $2}' "$module/go.mod" | head -1)
key=$(cat "$here/build.sh" "$module/go.mod" "$module/go.sum" "$module/tools.go" "$module/cmd/etcd/main.go" | sha256sum | cut -c1-12)
out=$root/target/tools/k8s-$version-$key
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/etcd" ]; then
  echo "$out"; exit 0
fi
command -v go >/dev/null || { echo "build.sh: go not found (Go 1.26 is needed to build the test components)" >&2; exit 1; }
mkdir -p "$out.tmp"
t0=$SECONDS
(
  cd "$module"
  export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
  # The version Kubernetes' own release build stamps in (clients and `kubectl version` read it).
  minor=${version#v1.}; minor=${minor%%.*}
  stamp=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  go build -ldflags="-s $stamp" -o "$out.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./cmd/etcd
) >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "build.sh: built kube-apiserver, kubectl and etcd $version in $((SECONDS - t0)) s" >&2
echo "$out"
