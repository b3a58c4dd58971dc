#!/usr/bin/env bash
# A second real runtime driving the plugin: containerd 1.6 (Debian) through `ctr run --cni`,
# runc, Debian's `bridge` plugin delegating to `"ipam": {"type": "hereabouts"}`. ctr has no
# flags for the CNI directories (go-cni's defaults /etc/cni/net.d and /opt/cni/bin), so the
# suite runs in a private mount namespace with those bound to a temp dir, as are the fixed
# host paths containerd and runc insist on (/run/containerd, /var/lib/cni). containerd's
# root, state and socket live in the temp dir; it is stopped at the end, also on failure.
#
# Cases: a container gets the range's first address and its DEL (`ctr run --rm` tearing the
# network down) frees it; a container whose network config the core refuses by the time of
# its DEL (here the flat file named by configuration_path now excludes the whole range, as an
# edited config would) is removed without an error and its address freed — DEL always lets
# the pod go (issue 20).
#
# usage: host-cni/tests/containerd/run.sh PATH/TO/hereabouts
# needs: root, containerd, runc, busybox-static, containernetworking-plugins, util-linux, python3.
# Ends with "N passed, N failed".
set -u
bin=$(readlink -f "${1:?usage: run.sh PATH/TO/hereabouts}")
[ -x "$bin" ] || { echo "run.sh: $bin is not executable" >&2; exit 2; }

die() {
  echo "# containerd suite cannot run: $*"
  echo "${pass:-0} passed, $(( ${fail:-0} + 1 )) failed"
  exit 1
}

fixed_paths="/etc/cni/net.d /opt/cni/bin /run/containerd /var/lib/cni"
if [ "${HEREABOUTS_CONTAINERD_INNER:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || die "needs root (containerd, runc, network namespaces)"
  for tool in containerd ctr containerd-shim-runc-v2 runc busybox unshare findmnt python3; do
    command -v $tool >/dev/null || die "$tool not found (apt-get install containerd runc busybox-static util-linux)"
  done
  [ -x /usr/lib/cni/bridge ] || die "no /usr/lib/cni/bridge (apt-get install containernetworking-plugins)"
  created=()
  for d in $fixed_paths; do
    if [ ! -d "$d" ]; then mkdir -p "$d" && created+=("$d"); fi
  done
  remove_created() { for d in "${created[@]}"; do rmdir -p "$d" 2>/dev/null; done; }
  trap remove_created EXIT
  HEREABOUTS_CONTAINERD_INNER=1 unshare --mount --propagation private bash "$0" "$bin" &
  inner=$!
  trap 'kill -TERM $inner 2>/dev/null' INT TERM
  rc=0
  while wait $inner; rc=$?; kill -0 $inner 2>/dev/null; do :; done
  exit $rc
fi

# ---- inside the mount namespace ----
tag=hc$$
work=$(mktemp -d "${TMPDIR:-/tmp}/hereabouts-containerd.XXXXXX")
mkdir -p "$work"/{cni-net,cni-bin,store,root,state,fixed,rootfs/bin}
pass=0 fail=0 bridge=$tag-br containerd_pid=""
sock=$work/containerd.sock
ctr_() { ctr --address "$sock" --namespace "$tag" "$@"; }
cleanup() {
  if [ -n "$containerd_pid" ]; then
    for c in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1; ctr_ tasks rm -f "$c" >/dev/null 2>&1
      ctr_ containers rm "$c" >/dev/null 2>&1
    done
    kill "$containerd_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$containerd_pid" 2>/dev/null
  fi
  ip link del "$bridge" 2>/dev/null
  findmnt -rn -o TARGET | awk -v w="$work" 'index($0, w) == 1' | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  for d in $fixed_paths; do umount -l "$d" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for d in $fixed_paths; do
  mkdir -p "$work/fixed$d"
  mount --bind "$work/fixed$d" "$d" || die "cannot bind-mount over $d"
done
ok() { pass=$((pass+1)); echo "ok   $*"; }
bad() { fail=$((fail+1)); echo "FAIL $*"; }
same() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }

# ---- the plugins and the network, where go-cni looks ----
for p in /usr/lib/cni/*; do ln -s "$p" /opt/cni/bin/; done
ln -s "$bin" /opt/cni/bin/hereabouts
flat=$work/flat.conf   # the flat file (configuration_path): absent at first
cat >/etc/cni/net.d/10-$tag.conflist <<EOF2
{"cniVersion": "1.0.0", "name": "$tag", "plugins": [{"type": "bridge", "bridge": "$bridge",
 "isGateway": false, "ipMasq": false, "ipam": {"type": "hereabouts", "range": "10.7.0.4/30",
 "data_dir": "$work/store", "configuration_path": "$flat",
 "log_file": "$work/hereabouts.log", "log_level": "debug"}}]}
EOF2

# ---- containerd, all of it in $work ----
cat >"$work/config.toml" <<EOF2
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
EOF2
containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
ctr_ version >/dev/null 2>&1 || die "containerd did not start: $(tail -c 600 "$work/containerd.log")"
ok "containerd $(containerd --version | awk '{print $3}') runs on $sock"

busybox=$(readlink -f "$(command -v busybox)")
ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamically linked: needs Debian's busybox-static"
cp "$busybox" "$work/rootfs/bin/busybox"
for a in sh ip sleep cat; do ln -s busybox "$work/rootfs/bin/$a"; done
mkdir -p "$work"/rootfs/{proc,sys,dev,etc,tmp}

# held: the addresses the plugin's store holds in 10.7.0.4/30 (`hereabouts store dump`)
held() {
  "$bin" store dump --data-dir "$work/store" 2>/dev/null | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(len(i["spec"]["allocations"]) for i in items if i["kind"] == "IPPool"))'
}
# run NAME SECONDS [while-running…]: `ctr run --rm --cni` in the foreground (ADD at start, DEL
# when it exits); the container prints its eth0 address, then sleeps. Output in $work/NAME.*
run() {
  local name=$1 secs=$2; shift 2
  ctr_ run --rm --cni --rootfs "$work/rootfs" "$tag-$name" \
    /bin/sh -c "ip -o -4 addr show dev eth0 scope global; sleep $secs" \
    >"$work/$name.out" 2>"$work/$name.err" &
  local pid=$!
  "$@"
  wait $pid
}
addr_of() { awk '{print $4}' "$work/$1.out" | head -1; }

echo "--- 1: ctr run --rm --cni: ADD, then DEL when the container exits"
run first 1 true; rc=$?
same "ctr run exits 0" "$rc" 0
same "the container had the range's first address on eth0" "$(addr_of first)" 10.7.0.5/30
same "its DEL freed it: the store holds nothing" "$(held)" 0

echo "--- 2: DEL under a config the core refuses (the flat file now excludes the whole range)"
edit() {
  for _ in $(seq 50); do [ -s "$work/second.out" ] && break; sleep 0.1; done
  echo '{"exclude": ["10.7.0.4/30"]}' >"$flat"
  same "while it runs, the store holds its address" "$(held)" 1
}
run second 2 edit; rc=$?
same "the container had 10.7.0.5 on eth0" "$(addr_of second)" 10.7.0.5/30
same "ctr run --rm exits 0" "$rc" 0
if grep -qiE 'level=(error|warning)|failed' "$work/second.err"; then
  bad "ctr reported an error removing it: $(tr '\n' ' ' <"$work/second.err" | head -c 400)"
else
  ok "ctr removed the container and its network without an error"
fi
same "DEL freed its address although ADD now refuses the config" "$(held)" 0
same "no container left in containerd" "$(ctr_ containers ls -q | wc -l)" 0
run third 0 true; rc=$?
if [ "$rc" != 0 ] && grep -q 'leaves no address to hand out' "$work/third.err"; then
  ok "a new container on the edited config fails its ADD, naming why: $(grep -o 'range: .* leaves no address to hand out' "$work/third.err" | head -1)"
else
  bad "a new container on the edited config: exit $rc, $(tr '\n' ' ' <"$work/third.err" | head -c 300)"
fi
same "and holds nothing in the store" "$(held)" 0
echo "$pass passed, $fail failed"
[ $fail = 0 ]
