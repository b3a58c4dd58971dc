#!/usr/bin/env bash
# The one test command (see README): installs everything it needs, starts every real component
# it tests against (etcd, a real kube-apiserver, network namespaces, podman, headless Chromium),
# runs all tests, stops them.
# Ends with "N passed, N failed" over its suites; exits non-zero if any suite failed.
#
#   ./test.sh            everything
#   ./test.sh SUITE…     only these suites: install lint build rust hostile cni-e2e podman containerd etcd-e2e kube web image
set -uo pipefail
cd "$(dirname "$0")"
root=$(pwd)
export CARGO_TERM_COLOR=never

# Debian packages the suites use (one install, idempotent).
# (No protoc: etcd-client's build script runs the one protoc-bin-vendored ships, see .cargo/config.toml.)
# podman, runc, busybox-static: the podman suite (podman's CNI backend drives the plugin; runc, not crun).
# containerd: the containerd suite (`ctr run --cni`, runc).
# musl-tools, binutils (readelf), qemu-user-static, python3-venv: the image suite (amd64's C,
# the static check, the arm64 binary under qemu, the venv of cargo-zigbuild and zig).
APT_PACKAGES="containernetworking-plugins iproute2 etcd-server etcd-client chromium python3 openssl podman runc busybox-static containerd musl-tools binutils qemu-user-static python3-venv"

passed=0 failed=0 failures=""
suite() { # name command…
  local name=$1; shift
  if [ ${#selected[@]} -gt 0 ] && [[ " ${selected[*]} " != *" $name "* ]]; then return; fi
  echo; echo "=== suite: $name"
  local t0=$SECONDS
  if "$@"; then passed=$((passed+1)); echo "=== suite $name: ok ($((SECONDS-t0)) s)"
  else failed=$((failed+1)); failures="$failures $name"; echo "=== suite $name: FAILED ($((SECONDS-t0)) s)"; fi
}

install_deps() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null || return 1
    fi
  else
    echo "not root or no apt-get: assuming $APT_PACKAGES are installed"
  fi
  # Targets and components in rust-toolchain.toml are not installed automatically here
  # (RUSTUP_AUTO_INSTALL=0); both commands are idempotent.
  rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown || return 1
  rustup component add rustfmt clippy >/dev/null 2>&1 || rustup component add rustfmt clippy
  # Go builds the real Kubernetes components the kube suite runs (kube-apiserver, kubectl,
  # etcd, helm) from their Go modules; these machines ship Go 1.26, which k8s.io 1.37 needs.
  local go_version
  go_version=$(go env GOVERSION 2>/dev/null) || { echo "Go 1.26 or later is needed (the kube suite builds kube-apiserver, etcd and helm with it)"; return 1; }
  case $go_version in go1.2[6-9]*|go1.[3-9][0-9]*) ;; *) echo "Go 1.26 or later is needed, found $go_version"; return 1 ;; esac
}

# Formatting and clippy over every crate and target, warnings as errors.
lint() {
  cargo fmt --all --check &&
    cargo clippy --release --locked --workspace --all-targets -- -D warnings
}
# Then the README's build on a Rust-only machine: etcd-client with no protoc on PATH.
build() {
  cargo build --release --locked --workspace --all-targets &&
    bash host-cni/stores/tests/no-protoc.sh
}
rust_tests() { cargo test --release --locked --workspace; }
# Issue 21's attacks on the built binary (files in its own temp dirs, listeners on 127.0.0.1),
# `#[ignore]`d in the plain cargo test above so they run once, here.
hostile() { cargo test --release --locked -p hereabouts --test hostile -- --ignored; }
# Suites owned by their parts of the tree; each script starts and stops what it needs. Each
# builds the plugin first (a no-op after the build suite), so a suite also runs alone.
plugin() { cargo build --release --locked -p hereabouts && echo "$root/target/release/hereabouts"; }
cni_e2e() { bash host-cni/tests/e2e/run.sh "$(plugin)"; }
podman_e2e() { bash host-cni/tests/podman/run.sh "$(plugin)"; }
containerd_e2e() { bash host-cni/tests/containerd/run.sh "$(plugin)"; }
etcd_e2e() { bash host-cni/tests/etcd/run.sh "$(plugin)"; }
# The Kubernetes suite on a real kube-apiserver with RBAC (components built once, cached in
# target/tools), the shipped manifests applied as a user applies them.
kube_e2e() { bash host-cni/tests/k8s/run.sh "$(plugin)"; }
web_tests() { bash host-web/test.sh "$(plugin)"; }
# The release image: static musl binaries FROM scratch for amd64 and arm64 (a manifest list),
# built with Debian's podman; the amd64 image runs, the arm64 binary runs under qemu.
image_build() { bash deploy/build-image.sh; }

selected=("$@")
suite install install_deps
suite lint lint
suite build build
suite rust rust_tests
suite hostile hostile
[ -f host-cni/tests/e2e/run.sh ] && suite cni-e2e cni_e2e
[ -f host-cni/tests/podman/run.sh ] && suite podman podman_e2e
[ -f host-cni/tests/containerd/run.sh ] && suite containerd containerd_e2e
[ -f host-cni/tests/etcd/run.sh ] && suite etcd-e2e etcd_e2e
[ -f host-cni/tests/k8s/run.sh ] && suite kube kube_e2e
[ -f host-web/test.sh ] && suite web web_tests
[ -f deploy/build-image.sh ] && suite image image_build

echo
[ -n "$failures" ] && echo "failed suites:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
