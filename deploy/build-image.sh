#!/usr/bin/env bash
# Build the Hereabouts image (../Containerfile: FROM scratch + the static musl binary) with podman,
# then check it. Run by test.sh as the `image` suite; needs root, and network only for the tools it
# installs the first time (apt-get, rustup). Safe to run again: it installs nothing twice and
# cargo rebuilds only what changed.
#
#   deploy/build-image.sh [IMAGE]          # IMAGE defaults to hereabouts:<version>
#
# The musl build goes to its own target directory (HEREABOUTS_MUSL_TARGET_DIR, default
# /tmp/hereabouts-musl-target), never the shared ./target. The build context is a temporary
# directory holding only the binary, at the path the Containerfile copies from.
#
# The smoke test runs the image with runc and explicit ulimits: podman's default (crun, raising
# RLIMIT_NOFILE/NPROC) fails on hosts without CAP_SYS_RESOURCE or with hybrid cgroups.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
triple=x86_64-unknown-linux-musl
target_dir=${HEREABOUTS_MUSL_TARGET_DIR:-/tmp/hereabouts-musl-target}
start=$(date +%s)

say() { printf '== %s\n' "$*"; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

# 1. Tools: podman (build), runc (smoke test), musl-gcc (ring's C and assembly), the Rust target.
missing=
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v musl-gcc >/dev/null 2>&1 || missing="$missing musl-tools"
if [ -n "$missing" ]; then
    say "apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y $missing || { apt-get update && apt-get install -y $missing; }
fi
cd "$repo"   # so rustup uses the toolchain of rust-toolchain.toml
if ! rustup target list --installed | grep -qx "$triple"; then
    say "rustup target add $triple"
    rustup target add "$triple"
fi

# 2. The static binary (also builds the wasm component, through host-cni/host/build.rs).
say "cargo build --release --target $triple (target dir $target_dir)"
nice -n 10 env CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked -p hereabouts --target "$triple"
bin=$target_dir/$triple/release/hereabouts
if ldd "$bin" 2>&1 | grep -q '=>'; then   # static: "not a dynamic executable" / "statically linked"
    ldd "$bin" >&2
    die "$bin is dynamically linked"
fi
plan=$(echo '{"ipam":{"range":"10.0.0.0/24"}}' | "$bin" plan) || die "$bin plan failed"
version=$("$bin" --version) || die "$bin --version failed"
version=${version##* }
image=${1:-hereabouts:$version}
say "binary: $bin ($(wc -c <"$bin") bytes, static, version $version)"

# 3. The image, from a context holding only the binary.
ctx=$(mktemp -d)
cid=
cleanup() {
    rm -rf "$ctx"
    [ -z "$cid" ] || podman rm "$cid" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mkdir -p "$ctx/target/$triple/release"
cp "$bin" "$ctx/target/$triple/release/hereabouts"
say "podman build -t $image"
podman build --pull=never -f "$repo/Containerfile" -t "$image" "$ctx"

# 4. Check it: exactly /hereabouts (the path every manifest runs), the same bytes, and it runs.
cid=$(podman create "$image")
files=$(podman export "$cid" | tar -t | grep -v '/$' || true)
[ "$files" = "hereabouts" ] || die "unexpected image content: $files"
podman export "$cid" | tar -xO hereabouts | cmp -s - "$bin" || die "/hereabouts differs from $bin"
run() {   # small limits: raising them, even to the caller's hard limit, can be refused
    podman --runtime runc run --rm -i --network=none \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$image" "$@"
}
[ "$(run --version)" = "$("$bin" --version)" ] || die "hereabouts --version in the image failed"
[ "$(echo '{"ipam":{"range":"10.0.0.0/24"}}' | run plan)" = "$plan" ] ||
    die "hereabouts plan in the image failed"

size=$(podman image inspect --format '{{.Size}}' "$image")
say "image $image: $size bytes ($(podman images --format '{{.Size}}' "$image")), /hereabouts runs" \
    "(--version, plan); $(($(date +%s) - start)) s"
