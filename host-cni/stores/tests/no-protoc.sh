#!/usr/bin/env bash
# The README's build on a machine with only the Rust toolchain: etcd-client's build script
# (the one part of the build that runs protoc) must succeed with no protoc installed. Runs
# `cargo check -p etcd-client` in a fresh target directory with PROTOC unset and a PATH whose
# directories are the real ones minus any `protoc`, so only the vendored protoc
# (host-cni/stores/protoc, set by .cargo/config.toml) can serve it. Prints the time it took.
#
# usage: host-cni/stores/tests/no-protoc.sh        (from anywhere; ./test.sh build runs it)
set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/../../.."
work=$(mktemp -d "${TMPDIR:-/tmp}/hereabouts-no-protoc.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  for tool in "$dir"/*; do
    name=${tool##*/}
    [ "$name" = protoc ] || [ -e "$work/bin/$name" ] || ln -s "$tool" "$work/bin/$name"
  done
done
if PATH=$work/bin command -v protoc >/dev/null; then
  echo "FAIL protoc is still on the shadow PATH"; echo "0 passed, 1 failed"; exit 1
fi
t0=$SECONDS
if env -u PROTOC -u PROTOC_INCLUDE PATH="$work/bin" CARGO_TARGET_DIR="$work/target" \
  cargo check --release --locked --quiet -p etcd-client >"$work/log" 2>&1; then
  echo "ok   etcd-client builds with no protoc on PATH, in a clean target dir ($((SECONDS - t0)) s)"
  echo "1 passed, 0 failed"
else
  tail -n 30 "$work/log"
  echo "FAIL etcd-client does not build without an installed protoc ($((SECONDS - t0)) s)"
  echo "0 passed, 1 failed"
  exit 1
fi
