#!/usr/bin/env bash
# Build the multi-arch Hereabouts image (../Containerfile: FROM scratch + one static musl binary)
# for amd64 and arm64 with podman, then check it. Run by test.sh as the `image` suite; needs root,
# and network only for the tools it installs the first time (apt-get, rustup, pip). Safe to run
# again: it installs nothing twice and cargo rebuilds only what changed.
#
#   deploy/build-image.sh [IMAGE]          # IMAGE defaults to hereabouts:<version>
#
# Produces IMAGE-amd64 and IMAGE-arm64 and the manifest list IMAGE naming both
# (`podman manifest push IMAGE docker://registry.example.com/hereabouts:<version>`).
# HEREABOUTS_IMAGE_ARCHES="amd64" builds only that one (the manifest list then has one entry).
#
# The binaries: x86_64-unknown-linux-musl with cargo and musl-gcc (ring's C and assembly),
# aarch64-unknown-linux-musl with cargo-zigbuild and zig (both from PyPI, pinned below, in a
# venv cached under target/tools): zig cross-compiles ring's and bundled SQLite's C and links
# against its own static musl, no cross gcc needed. Both go to their own target directory
# (HEREABOUTS_MUSL_TARGET_DIR, default /tmp/hereabouts-musl-target), never the shared ./target.
# The build context is a temporary directory holding only bin/<arch>/hereabouts.
#
# Checks: each binary is static (no ELF interpreter); each image holds exactly /hereabouts, the
# same bytes, for its architecture; the amd64 image runs (--version, plan) with runc and
# explicit ulimits (podman's default, crun raising RLIMIT_NOFILE/NPROC, fails on hosts without
# CAP_SYS_RESOURCE or with hybrid cgroups); the arm64 binary runs under qemu user emulation
# (qemu-aarch64-static): --version, CNI VERSION, plan (the same answer as amd64), and an ADD,
# DEL and ADD again on the embedded store. Prints each image's size and the arm64 build time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${HEREABOUTS_MUSL_TARGET_DIR:-/tmp/hereabouts-musl-target}
tools_dir=${HEREABOUTS_TOOLS_DIR:-$repo/target/tools}
arches=${HEREABOUTS_IMAGE_ARCHES:-amd64 arm64}
zigbuild_version=0.24.0
zig_version=0.17.0
start=$(date +%s)

say() { printf '== %s\n' "$*"; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }
triple() { case $1 in amd64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; *) die "unknown arch $1" ;; esac; }

# 1. Tools: podman (build), runc (smoke test), musl-gcc (amd64's C), qemu-user-static (arm64's
# smoke test), readelf (static check), the Rust targets, cargo-zigbuild + zig (arm64's C).
missing=
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
command -v musl-gcc >/dev/null 2>&1 || missing="$missing musl-tools"
command -v readelf >/dev/null 2>&1 || missing="$missing binutils"
[[ " $arches " != *" arm64 "* ]] || command -v qemu-aarch64-static >/dev/null 2>&1 ||
    missing="$missing qemu-user-static"
if [ -n "$missing" ]; then
    say "apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y $missing || { apt-get update && apt-get install -y $missing; }
fi
cd "$repo"   # so rustup uses the toolchain of rust-toolchain.toml
for arch in $arches; do
    t=$(triple "$arch")
    if ! rustup target list --installed | grep -qx "$t"; then
        say "rustup target add $t"
        rustup target add "$t"
    fi
done
zig_venv=$tools_dir/cargo-zigbuild-$zigbuild_version-zig-$zig_version
if [[ " $arches " == *" arm64 "* ]] && [ ! -x "$zig_venv/bin/cargo-zigbuild" ]; then
    say "pip install cargo-zigbuild==$zigbuild_version ziglang==$zig_version into $zig_venv"
    rm -rf "$zig_venv"
    python3 -m venv "$zig_venv"
    "$zig_venv/bin/pip" install -q "cargo-zigbuild==$zigbuild_version" "ziglang==$zig_version"
fi

# 2. The static binaries (each also builds the wasm component, through host-cni/host/build.rs).
declare -A bin seconds
for arch in $arches; do
    t=$(triple "$arch")
    t0=$(date +%s)
    if [ "$arch" = amd64 ]; then
        say "cargo build --release --target $t (target dir $target_dir)"
        nice -n 10 env CARGO_TARGET_DIR="$target_dir" \
            cargo build --release --locked -p hereabouts --target "$t"
    else
        say "cargo zigbuild --release --target $t (target dir $target_dir)"
        nice -n 10 env CARGO_TARGET_DIR="$target_dir" PATH="$zig_venv/bin:$PATH" \
            cargo zigbuild --release --locked -p hereabouts --target "$t"
    fi
    seconds[$arch]=$(($(date +%s) - t0))
    bin[$arch]=$target_dir/$t/release/hereabouts
    # Static: no program interpreter (ld.so) to load it.
    ! readelf -l "${bin[$arch]}" | grep -q 'Requesting program interpreter' ||
        die "${bin[$arch]} is dynamically linked"
    say "binary $arch: ${bin[$arch]} ($(wc -c <"${bin[$arch]}") bytes, static, ${seconds[$arch]} s to build)"
done

# 3. The binaries run: natively on amd64, under qemu user emulation on arm64.
run_bin() {   # arch, args…: runs that architecture's binary
    local arch=$1; shift
    case $arch in
        amd64) "${bin[amd64]}" "$@" ;;
        arm64) qemu-aarch64-static "${bin[arm64]}" "$@" ;;
    esac
}
first=${arches%% *}
version=$(run_bin "$first" --version) || die "hereabouts --version failed"
plan=$(echo '{"ipam":{"range":"10.0.0.0/24"}}' | run_bin "$first" plan) || die "hereabouts plan failed"
for arch in $arches; do
    [ "$(run_bin "$arch" --version)" = "$version" ] || die "$arch: --version differs"
    [ "$(echo '{"ipam":{"range":"10.0.0.0/24"}}' | run_bin "$arch" plan)" = "$plan" ] ||
        die "$arch: plan differs"
done
if [[ " $arches " == *" arm64 "* ]]; then
    say "arm64 under qemu: CNI VERSION, ADD, DEL, ADD on the embedded store"
    scratch=$(mktemp -d)
    cni() {   # command, container id: the arm64 plugin as a runtime calls it
        printf '{"cniVersion":"1.0.0","name":"arm64","type":"macvlan","ipam":{"type":"hereabouts","range":"10.77.0.0/24","datastore":"local","data_dir":"%s/store","configuration_path":"%s/no-flat-file.conf"}}' "$scratch" "$scratch" |
            env -i CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS=/var/run/netns/"$2" CNI_IFNAME=net1 \
                CNI_PATH=/opt/cni/bin HEREABOUTS_CACHE_DIR="$scratch/cache" \
                qemu-aarch64-static "${bin[arm64]}"
    }
    echo '{"cniVersion":"1.0.0"}' | env -i CNI_COMMAND=VERSION qemu-aarch64-static "${bin[arm64]}" |
        grep -q '"supportedVersions"' || die "arm64: CNI VERSION failed"
    cni ADD first | grep -q '"10.77.0.1/24"' || die "arm64: ADD did not get 10.77.0.1"
    cni DEL first >/dev/null || die "arm64: DEL failed"
    cni ADD second | grep -q '"10.77.0.1/24"' || die "arm64: the address DEL freed was not handed out again"
    cni DEL second >/dev/null || die "arm64: DEL failed"
    rm -rf "$scratch"
fi
version=${version##* }
image=${1:-hereabouts:$version}

# 4. One image per architecture, from a context holding only the binaries, and the list.
ctx=$(mktemp -d)
cid=
cleanup() {
    rm -rf "$ctx"
    [ -z "$cid" ] || podman rm "$cid" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for arch in $arches; do
    mkdir -p "$ctx/bin/$arch"
    cp "${bin[$arch]}" "$ctx/bin/$arch/hereabouts"
done
podman manifest rm "$image" >/dev/null 2>&1 || podman rmi "$image" >/dev/null 2>&1 || true
podman manifest create "$image" >/dev/null
sizes=
for arch in $arches; do
    say "podman build --platform linux/$arch -t $image-$arch"
    # No layer cache: a cached layer of the other architecture must never be reused.
    podman build --pull=never --no-cache --platform "linux/$arch" -f "$repo/Containerfile" \
        -t "$image-$arch" "$ctx"
    [ "$(podman image inspect --format '{{.Os}}/{{.Architecture}}' "$image-$arch")" = "linux/$arch" ] ||
        die "$image-$arch is not linux/$arch"
    # Exactly /hereabouts (the path every manifest runs), the same bytes.
    cid=$(podman create --platform "linux/$arch" "$image-$arch")
    files=$(podman export "$cid" | tar -t | grep -v '/$' || true)
    [ "$files" = "hereabouts" ] || die "$arch: unexpected image content: $files"
    podman export "$cid" | tar -xO hereabouts | cmp -s - "${bin[$arch]}" ||
        die "$arch: /hereabouts differs from ${bin[$arch]}"
    podman rm "$cid" >/dev/null; cid=
    podman manifest add "$image" "containers-storage:localhost/$image-$arch" >/dev/null
    sizes="$sizes $arch $(podman image inspect --format '{{.Size}}' "$image-$arch") bytes;"
done
listed=$(podman manifest inspect "$image" | grep -o '"architecture": *"[a-z0-9]*"' | grep -o '[a-z0-9]*"$' | tr -d '"' | sort | xargs)
[ "$listed" = "$(echo $arches | tr ' ' '\n' | sort | xargs)" ] || die "manifest list $image has: $listed"

# 5. The amd64 image runs (this host's architecture).
if [[ " $arches " == *" amd64 "* ]]; then
    run() {   # small limits: raising them, even to the caller's hard limit, can be refused
        podman --runtime runc run --rm -i --network=none \
            --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$image-amd64" "$@"
    }
    [ "$(run --version)" = "$("${bin[amd64]}" --version)" ] || die "hereabouts --version in the image failed"
    [ "$(echo '{"ipam":{"range":"10.0.0.0/24"}}' | run plan)" = "$plan" ] ||
        die "hereabouts plan in the image failed"
fi

say "image $image ($listed):$sizes build times:$(for a in $arches; do printf ' %s %s s' "$a" "${seconds[$a]}"; done);" \
    "total $(($(date +%s) - start)) s"
