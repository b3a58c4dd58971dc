#!/usr/bin/env bash
# A real container runtime driving the hereabouts IPAM plugin: podman 4.3 (Debian) with its CNI
# backend and runc, Debian's `bridge` plugin delegating to `"ipam": {"type": "hereabouts"}` (and
# `"whereabouts"`, the drop-in name). Asserted from inside the containers (`ip -o addr`), from
# podman's view and from the plugin's own store (`hereabouts store dump`, and the plugin's CHECK
# with the prevResult podman cached):
#   lowest-free on a fresh network; reuse after `podman rm`; DEL when a container exits by itself;
#   8 `podman run` at once get exactly the lowest 8; dual stack (ipRanges v4 + v6); `--ip` gets
#   exactly that address and no dynamic container ever gets it, an `--ip` already held fails;
#   `podman network reload` keeps every address and eth0 (static, dynamic, dual stack; the same
#   reloads on a host-local network cross-check the test's logic); `podman rm` of a container
#   whose network config was edited to exclude its whole range (the core refuses it: DEL must
#   still succeed and free the address); after `rm` of every container the store holds no
#   allocation.
#
# usage: host-cni/tests/podman/run.sh PATH/TO/hereabouts
# needs: root, podman, runc, busybox-static, containernetworking-plugins, python3, util-linux.
#
# Isolation: CONTAINERS_CONF / CONTAINERS_STORAGE_CONF point into a temp dir (nothing in /etc is
# read for networks or written). podman 4.3 as root still writes fixed host paths — /run/netns
# (and leaves it a shared self-bind mount), /run/runc, /var/lib/cni/results (libcni's cache),
# /var/lib/containers/cache (blob-info cache of `podman import`) — so the suite runs in a private
# mount namespace with those paths bound to the temp dir. Containers, networks, bridges, mounts
# and the temp dir are removed on exit, also on failure. Ends with "N passed, N failed".
set -u
bin=$(readlink -f "${1:?usage: run.sh PATH/TO/hereabouts}")
[ -x "$bin" ] || { echo "run.sh: $bin is not executable" >&2; exit 2; }

die() { # reason: a check that cannot run here fails the suite, loudly
  cat <<EOF
########################################################################################
# podman suite cannot run: $*
########################################################################################
EOF
  echo "${pass:-0} passed, $(( ${fail:-0} + 1 )) failed"
  exit 1
}

# ---- outside: a private mount namespace for the host paths podman insists on ----
fixed_paths="/run/netns /run/runc /var/lib/cni /var/lib/containers"
if [ "${HEREABOUTS_PODMAN_INNER:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || die "needs root (podman's CNI backend, runc, network namespaces)"
  for tool in podman runc busybox unshare findmnt python3; do
    command -v $tool >/dev/null || die "$tool not found (apt-get install podman runc busybox-static util-linux python3)"
  done
  [ -x /usr/lib/cni/bridge ] || die "no /usr/lib/cni/bridge (apt-get install containernetworking-plugins)"
  unshare --mount --propagation private true 2>/dev/null || die "cannot create a mount namespace (unshare --mount)"
  created=()   # mount points that did not exist: made empty, removed again afterwards
  for d in $fixed_paths; do
    if [ ! -d "$d" ]; then mkdir -p "$d" && created+=("$d"); fi
  done
  remove_created() { for d in "${created[@]}"; do rmdir "$d" 2>/dev/null; done; }
  trap remove_created EXIT
  HEREABOUTS_PODMAN_INNER=1 unshare --mount --propagation private bash "$0" "$bin" &
  inner=$!   # unshare execs the inner bash: this is its pid
  trap 'kill -TERM $inner 2>/dev/null' INT TERM   # the inner cleans up, then exits
  rc=0
  while wait $inner; rc=$?; kill -0 $inner 2>/dev/null; do :; done
  exit $rc
fi

# ---- inside the mount namespace ----
tag=hp$$
work=$(mktemp -d "${TMPDIR:-/tmp}/hereabouts-podman.XXXXXX")
export TMPDIR=$work/tmp
# The networks below log to $work/hereabouts.log: a network config may log only in an allowed
# directory, and this environment (the node's, never a NAD's) adds one.
export HEREABOUTS_LOG_DIR=$work
mkdir -p "$work"/{cni-bin,cni-net,store,host-local,tmp,libpod,rootfs/bin} "$work/fixed"
pass=0 fail=0 bridges=()
podman_ready=0
cleanup() {
  if [ $podman_ready = 1 ]; then
    podman rm -af -t 0 >/dev/null 2>&1
    for f in "$work"/cni-net/*.conflist; do
      [ -e "$f" ] && podman network rm -f "$(basename "$f" .conflist)" >/dev/null 2>&1
    done
    podman rmi -af >/dev/null 2>&1
  fi
  for br in "${bridges[@]}"; do ip link del "$br" 2>/dev/null; done
  # leftovers of a killed run: container netns, overlay mounts, then our own bind mounts
  findmnt -rn -o TARGET | awk -v w="$work" 'index($0, w) == 1 || index($0, "/run/netns/") == 1' |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for d in $fixed_paths; do while umount -l "$d" 2>/dev/null; do :; done; done   # podman stacks a self-bind on /run/netns
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for d in $fixed_paths; do
  mkdir -p "$work/fixed$d"
  mount --bind "$work/fixed$d" "$d" || die "cannot bind-mount $work/fixed$d over $d in the mount namespace"
done

ok() { pass=$((pass+1)); echo "ok   $*"; }
bad() { fail=$((fail+1)); echo "FAIL $*"; }
check() { # description command…
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
# same WHAT GOT WANT: passes when GOT equals WANT, else says what came instead
same() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }

suite_t0=$(date +%s%N) step_name="" step_t0=0
step() { # the title of the next step; prints the time the previous one took
  local now; now=$(date +%s%N)
  [ -n "$step_name" ] && echo "    (${step_name%%:*}: $(( (now - step_t0) / 1000000 )) ms)"
  step_name=$1 step_t0=$now
  [ -n "$1" ] && echo "--- $1"
}

# ---- podman's configuration: all of it in $work ----
for p in /usr/lib/cni/*; do ln -s "$p" "$work/cni-bin/"; done
ln -s "$bin" "$work/cni-bin/hereabouts"
ln -s "$bin" "$work/cni-bin/whereabouts"
cat >"$work/containers.conf" <<EOF
[containers]
# runc raises RLIMIT_NOFILE and RLIMIT_NPROC to these; without nproc: "error setting rlimit type 6"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["$work/cni-bin"]
network_config_dir = "$work/cni-net"

[engine]
# crun fails on setrlimit on these machines
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/libpod/events.log"
tmp_dir = "$work/libpod"
image_copy_tmp_dir = "$work/tmp"
EOF
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/storage-run"
EOF
export CONTAINERS_CONF=$work/containers.conf CONTAINERS_STORAGE_CONF=$work/storage.conf

step "setup: podman configuration, an image from a busybox rootfs"
info=$(podman info --format '{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}} {{.Store.GraphRoot}}' 2>"$work/info.err") ||
  die "podman info failed: $(head -c 600 "$work/info.err")"
podman_ready=1
[ "$info" = "cni runc $work/storage" ] || die "podman does not use our config (backend, runtime, storage: $info)"
ok "podman $(podman --version | awk '{print $3}') uses the CNI backend, runc and the private storage"
busybox=$(readlink -f "$(command -v busybox)")
ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamically linked: the image needs Debian's busybox-static"
cp "$busybox" "$work/rootfs/bin/busybox"
for a in sh ip ping sleep cat; do ln -s busybox "$work/rootfs/bin/$a"; done
mkdir -p "$work"/rootfs/{proc,sys,dev,etc,tmp}
image=localhost/$tag-busybox
tar -C "$work/rootfs" -c . | podman import --quiet --change 'CMD ["/bin/sleep", "3600"]' - "$image" >/dev/null 2>"$work/import.err" ||
  die "podman import failed: $(head -c 600 "$work/import.err")"
podman run --rm --network none "$image" /bin/sh -c 'echo hi' >"$work/smoke.out" 2>&1 ||
  die "a container does not start (runc): $(head -c 600 "$work/smoke.out")"
ok "image $image imported from a busybox rootfs; a container runs with runc"

# ---- networks: hand-written conflists in network_config_dir, as podman network create writes them ----
# network NAME BRIDGE IPAM-JSON: a bridge conflist; "capabilities": {"ips": true} is what makes
# podman pass --ip (and, on reload, the current addresses) as runtimeConfig.ips.
network() {
  python3 - "$work/cni-net/$1.conflist" "$1" "$2" "$3" <<'PY'
import json, sys
path, name, bridge, ipam = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
json.dump({"cniVersion": "1.0.0", "name": name, "plugins": [
    {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False, "hairpinMode": True,
     "ipam": ipam, "capabilities": {"ips": True}}]}, open(path, "w"), indent=1)
PY
  bridges+=("$2")
}
hb() { # IPAM JSON for hereabouts: TYPE then the range keys as JSON members
  echo "{\"type\": \"$1\", $2, \"data_dir\": \"$work/store\", \"log_file\": \"$work/hereabouts.log\", \"log_level\": \"debug\"}"
}
network $tag-low $tag-b1 "$(hb hereabouts '"range": "10.240.0.0/24"')"
network $tag-par $tag-b2 "$(hb hereabouts '"range": "10.241.0.0/24"')"
network $tag-dual $tag-b3 "$(hb whereabouts '"ipRanges": [{"range": "10.242.0.0/24"}, {"range": "fd00:242::/64"}]')"
network $tag-static $tag-b4 "$(hb hereabouts '"range": "10.243.0.0/24"')"
network $tag-hl $tag-b5 "{\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"10.249.0.0/24\"}]], \"dataDir\": \"$work/host-local\"}"
listed=$(podman network ls --format '{{.Name}}' | grep "^$tag-" | sort | tr '\n' ' ')
same "podman network ls lists the five hand-written conflists" "$listed" "$tag-dual $tag-hl $tag-low $tag-par $tag-static "
drivers=$(for n in low dual hl; do podman network inspect --format '{{.Driver}}/{{index .IPAMOptions "driver"}}' $tag-$n; done | tr '\n' ' ')
same "podman sees them as bridge networks with their IPAM plugin" "$drivers" "bridge/hereabouts bridge/whereabouts bridge/host-local "

# ---- helpers ----
ctrs=()
run() { # NAME NETWORK [podman run options…] [-- command…]: a detached container; output in $work/run.NAME
  local name=$1 net=$2; shift 2
  local opts=() cmd=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && { shift; cmd=("$@"); }
  ctrs+=("$name")
  podman run -d --name "$tag-$name" --network "$net" "${opts[@]}" "$image" "${cmd[@]}" \
    >"$work/run.$name" 2>&1
}
why() { tail -c 400 "$work/run.$1" | tr '\n' ' '; }
id_of() { podman inspect --format '{{.Id}}' "$tag-$1" 2>/dev/null; }
# inside NAME [4|6]: the container's global addresses on eth0 as it sees them ('' without eth0)
inside() {
  podman exec "$tag-$1" ip -o -"${2:-4}" addr show dev eth0 scope global 2>/dev/null |
    awk '{print $4}' | sort | tr '\n' ' ' | sed 's/ $//'
}
pings() { podman exec "$tag-$1" ping -q -c 1 -W 3 "$2" >/dev/null 2>&1; }
has_eth0() { podman exec "$tag-$1" ip link show eth0 >/dev/null 2>&1; }
# dump: the hereabouts store as Whereabouts objects (`hereabouts store dump`, JSON)
dump() { "$bin" store dump --data-dir "$work/store" 2>/dev/null; }
# holders [ADDR]: "address container-id ifname" for every allocation in the hereabouts store
holders() {
  dump | python3 -c '
import ipaddress, json, sys
only = sys.argv[1]
for item in json.load(sys.stdin)["items"]:
    if item["kind"] != "IPPool":
        continue
    net = ipaddress.ip_network(item["spec"]["range"], strict=False)
    for offset, h in sorted(item["spec"]["allocations"].items()):
        address = str(net.network_address + int(offset))
        if not only or address == only:
            print(address, h["id"], h.get("ifname", ""))
' "${1:-}"
}
held_by() { # ADDR NAME: the store gives ADDR to NAME's container (and to nobody else)
  [ "$(holders "$1")" = "$1 $(id_of "$2") eth0" ]
}
all_held() { # ADDR NAME [ADDR NAME…]
  while [ $# -ge 2 ]; do held_by "$1" "$2" || return 1; shift 2; done
}
store_count() { # allocations in every pool plus overlapping-range reservations
  dump | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(len(i["spec"]["allocations"]) if i["kind"] == "IPPool" else 1 for i in items))'
}
pool_count() { dump | python3 -c 'import json,sys; print(sum(i["kind"] == "IPPool" for i in json.load(sys.stdin)["items"]))'; }
# cni_check NAME NETWORK [SAVED-CACHE]: the plugin's CHECK, as libcni would call it for the
# container: the network's bridge config with prevResult from podman's CNI cache entry.
cache_of() { echo "$work/fixed/var/lib/cni/results/$2-$(id_of "$1")-eth0"; }
cni_check() {
  local name=$1 net=$2 cache=${3:-$(cache_of "$1" "$2")} id
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["containerId"])' "$cache" 2>/dev/null)
  python3 - "$work/cni-net/$net.conflist" "$cache" >"$work/check.$name" <<'PY'
import json, sys
conflist, cache = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
conf = dict(conflist["plugins"][0], name=conflist["name"], cniVersion=conflist["cniVersion"])
conf["prevResult"] = cache["result"]
print(json.dumps(conf))
PY
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HEREABOUTS_LOG_DIR="$work" CNI_COMMAND=CHECK CNI_CONTAINERID="$id" CNI_IFNAME=eth0 \
    CNI_NETNS="$(podman inspect --format '{{.NetworkSettings.SandboxKey}}' "$tag-$name" 2>/dev/null || echo /proc/self/ns/net)" \
    CNI_PATH="$work/cni-bin" "$bin" <"$work/check.$name" >"$work/check.$name.out" 2>&1
}
check_code() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["code"])' "$work/check.$1.out" 2>/dev/null; }

# ---- 1. lowest free ----
step "1: lowest free: the first containers on a fresh network ($tag-low, 10.240.0.0/24)"
run a1 $tag-low --cap-add NET_RAW || bad "podman run a1: $(why a1)"
same "a1 has the range's first usable address on eth0" "$(inside a1)" 10.240.0.1/24
run a2 $tag-low || bad "podman run a2: $(why a2)"
same "a2 has the next one" "$(inside a2)" 10.240.0.2/24
same "podman reports the same address" "$(podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' $tag-a2)" 10.240.0.2
check "the store gives 10.240.0.1 to a1 and 10.240.0.2 to a2 (by podman's container id)" \
  all_held 10.240.0.1 a1 10.240.0.2 a2
if cni_check a1 $tag-low; then ok "the plugin's CHECK with podman's cached result passes for a1"
else bad "CHECK a1: $(head -c 300 "$work/check.a1.out")"; fi
check "a1 reaches a2 over the bridge (ping 10.240.0.2)" pings a1 10.240.0.2

# ---- 2. reuse after rm; DEL when a container exits by itself ----
step "2: reuse after rm, DEL on exit"
cp "$(cache_of a1 $tag-low)" "$work/a1.cache" 2>/dev/null
held_by 10.240.0.1 a1 && before=held || before="not held"
podman rm -f -t 0 $tag-a1 >/dev/null 2>&1 || bad "podman rm a1"
same "podman rm a1: 10.240.0.1, held before, is free in the store (DEL reached the plugin)" \
  "$before, $(holders 10.240.0.1)" "held, "
cni_check a1 $tag-low "$work/a1.cache"
same "the plugin's CHECK for the removed a1 fails with code 3 (unknown container)" "$(check_code a1)" 3
run a3 $tag-low || bad "podman run a3: $(why a3)"
same "a new container gets the freed lowest address" "$(inside a3)" 10.240.0.1/24
run a4 $tag-low -- /bin/sleep 2 || bad "podman run a4: $(why a4)"
check "a short-lived container (sleep 2) gets the next free address in the store" held_by 10.240.0.3 a4
if held_by 10.240.0.3 a4; then
  for _ in $(seq 50); do [ -z "$(holders 10.240.0.3)" ] && break; sleep 0.2; done
  same "once it exits by itself, conmon's cleanup (podman container cleanup) has DELeted it" "$(holders 10.240.0.3)" ""
else
  bad "DEL on exit not checked: a4 never held 10.240.0.3"
fi

# ---- 3. parallel ----
n=8
step "3: $n podman run at once ($tag-par, 10.241.0.0/24)"
t0=$(date +%s%N)
for i in $(seq $n); do run p$i $tag-par & done
wait
echo "    $n containers started in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
got=() failed_runs=0
for i in $(seq $n); do
  a=$(inside p$i)
  if [ -z "$a" ]; then failed_runs=$((failed_runs+1)); echo "    p$i: no address: $(why p$i)"; else got+=("$a"); fi
done
same "all $n containers run with an address on eth0" "$failed_runs" 0
same "$n distinct addresses" "$(printf '%s\n' "${got[@]}" | sort -u | wc -l)" $n
same "exactly the lowest $n: 10.241.0.1 … 10.241.0.$n" "$(printf '%s\n' "${got[@]}" | sort -V | tr '\n' ' ')" \
  "$(for i in $(seq $n); do printf '10.241.0.%s/24 ' "$i"; done)"
matched=0
for i in $(seq $n); do a=$(inside p$i); [ -n "$a" ] && held_by "${a%/*}" p$i && matched=$((matched+1)); done
same "the store gives each of the $n containers the address it has" "$matched" $n
held=$(holders | grep -c '^10\.241\.')
t0=$(date +%s%N)
for i in $(seq $n); do podman rm -f -t 0 $tag-p$i >/dev/null 2>&1 & done
wait
echo "    $n containers removed in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
same "$n parallel podman rm: the range's allocations go from $n to 0" "$held $(holders | grep -c '^10\.241\.')" "$n 0"

# ---- 4. dual stack ----
step "4: dual stack, \"type\": \"whereabouts\" ($tag-dual, 10.242.0.0/24 + fd00:242::/64)"
run d1 $tag-dual || bad "podman run d1: $(why d1)"
run d2 $tag-dual || bad "podman run d2: $(why d2)"
same "d1 has one IPv4 address, the first" "$(inside d1 4)" 10.242.0.1/24
same "d1 has one IPv6 address, the first" "$(inside d1 6)" fd00:242::1/64
same "d2 has the next of each" "$(inside d2 4) $(inside d2 6)" "10.242.0.2/24 fd00:242::2/64"
same "d1's IPv6 address is usable (not tentative, not dadfailed)" \
  "$(podman exec $tag-d1 ip -o -6 addr show dev eth0 scope global | grep -cvE 'tentative|dadfailed')" 1
check "the store gives both of d1's addresses to d1" all_held 10.242.0.1 d1 fd00:242::1 d1
if cni_check d1 $tag-dual; then ok "the plugin's CHECK passes for d1 (two addresses)"
else bad "CHECK d1: $(head -c 300 "$work/check.d1.out")"; fi

# ---- 5. --ip ----
step "5: --ip ($tag-static, 10.243.0.0/24)"
run s1 $tag-static --ip 10.243.0.2 || bad "podman run --ip: $(why s1)"
same "podman run --ip 10.243.0.2 gets exactly that address" "$(inside s1)" 10.243.0.2/24
check "the store gives 10.243.0.2 to s1" held_by 10.243.0.2 s1
run s2 $tag-static || bad "podman run s2: $(why s2)"
run s3 $tag-static || bad "podman run s3: $(why s3)"
same "later dynamic containers get .1 and .3, never the static .2" "$(inside s2) $(inside s3)" "10.243.0.1/24 10.243.0.3/24"
if run s4 $tag-static --ip 10.243.0.1; then bad "podman run --ip of an address s2 holds succeeded: $(inside s4)"
elif grep -q "10\.243\.0\.1" "$work/run.s4"; then ok "podman run --ip of an address s2 holds fails: $(grep -o 'failed (add).*' "$work/run.s4" | head -c 160)"
else bad "podman run --ip of an address s2 holds fails, but not naming the address: $(why s4)"; fi
check "s2 keeps 10.243.0.1 in the store" held_by 10.243.0.1 s2
same "s2 keeps 10.243.0.1 on eth0" "$(inside s2)" 10.243.0.1/24
podman rm -f -t 0 $tag-s4 >/dev/null 2>&1

# ---- 6. podman network reload ----
# podman 4.3's CNI backend passes requested addresses as CNI_ARGS IP=A when there is one, as
# runtimeConfig.ips when there are more. A reload is DEL then ADD with the container's current
# addresses appended to its --ip ones (and CNI_ARGS MAC=): a dynamic v4 container gets IP=A, a
# dual-stack one ips [A4, A6], and a --ip A container ips [A, A] — the same address twice.
# reload NAME NETWORK V4 [V6]: after the reload the container still has eth0 and exactly its
# addresses (and, with hereabouts, the store still gives them to it).
reload() {
  local name=$1 net=$2 v4=$3 v6=${4:-} what="podman network reload $1 ($5)"
  if podman network reload "$tag-$name" >"$work/reload.$name" 2>&1; then ok "$what succeeds"
  else bad "$what: $(grep -v level=warning "$work/reload.$name" | tail -c 300 | tr '\n' ' ')"; fi
  check "$name still has eth0 after the reload" has_eth0 "$name"
  same "$name keeps its IPv4 address" "$(inside "$name" 4)" "$v4"
  [ -n "$v6" ] && same "$name keeps its IPv6 address" "$(inside "$name" 6)" "$v6"
  if [ "$net" != $tag-hl ]; then
    check "the store still gives ${v4%/*} to $name" held_by "${v4%/*}" "$name"
    [ -n "$v6" ] && check "the store still gives ${v6%/*} to $name" held_by "${v6%/*}" "$name"
  fi
  return 0
}
step "6: podman network reload"
reload s1 $tag-static 10.243.0.2/24 "" "started with --ip"
reload a2 $tag-low 10.240.0.2/24 "" "dynamic"
reload d1 $tag-dual 10.242.0.1/24 fd00:242::1/64 "dynamic, dual stack"
step "6b: cross-check of the reload checks with Debian's host-local IPAM ($tag-hl, 10.249.0.0/24)"
run h1 $tag-hl --ip 10.249.0.70 || bad "podman run h1 --ip: $(why h1)"
run h2 $tag-hl || bad "podman run h2: $(why h2)"
same "host-local: --ip 10.249.0.70 gets exactly that address" "$(inside h1)" 10.249.0.70/24
h2addr=$(inside h2)
check "host-local: h2 gets a dynamic address ($h2addr)" [ -n "$h2addr" ]
reload h1 $tag-hl 10.249.0.70/24 "" "host-local, started with --ip"
reload h2 $tag-hl "$h2addr" "" "host-local, dynamic"

# ---- 7. DEL under a config the core refuses ----
# The network's conflist is edited while a container runs so that it hands out nothing (its
# whole range excluded): ADD now fails, and `podman rm` — DEL with the edited config — must
# remove the container without an error and free its address (DEL always lets the pod go).
step "7: podman rm after the network config was edited to exclude its whole range ($tag-edit, 10.7.0.4/30)"
network $tag-edit $tag-b6 "$(hb hereabouts '"range": "10.7.0.4/30"')"
run e1 $tag-edit || bad "podman run e1: $(why e1)"
same "e1 has the range's first address" "$(inside e1)" 10.7.0.5/30
network $tag-edit $tag-b6 "$(hb hereabouts '"range": "10.7.0.4/30", "exclude": ["10.7.0.4/30"]')"
if run e2 $tag-edit; then bad "podman run on the edited network succeeded: $(inside e2)"
elif grep -q 'leaves no address to hand out' "$work/run.e2"; then ok "a new container on the edited network fails its ADD, naming why"
else bad "podman run on the edited network fails, but not saying why: $(why e2)"; fi
podman rm -f -t 0 $tag-e2 >/dev/null 2>&1
if podman rm -f -t 0 $tag-e1 >"$work/rm.e1" 2>&1; then ok "podman rm e1 exits 0"; else bad "podman rm e1 failed: $(tail -c 300 "$work/rm.e1")"; fi
if grep -qiE 'error|level=warn' "$work/rm.e1"; then bad "podman rm e1 reported an error: $(tr '\n' ' ' <"$work/rm.e1" | head -c 400)"
else ok "podman rm e1 reported no error tearing down its network"; fi
same "e1's DEL freed 10.7.0.5 although the config now hands out nothing" "$(holders 10.7.0.5)" ""
same "podman no longer lists e1" "$(podman ps -a --format '{{.Names}}' | grep -c "^$tag-e1\$")" 0

# ---- the end: rm of every container leaves nothing in the store ----
step "end: rm of every container"
for c in "${ctrs[@]}"; do podman rm -f -t 0 "$tag-$c" >/dev/null 2>&1; done
same "no container left" "$(podman ps -aq | wc -l)" 0
same "the store has the pools of the 6 ranges, with no allocation and no reservation (every DEL reached the plugin)" \
  "$(pool_count) $(store_count)" "6 0"
same "podman's CNI cache has no entry left" "$(ls "$work/fixed/var/lib/cni/results" 2>/dev/null | wc -l)" 0
step ""
echo "    (total: $(( ($(date +%s%N) - suite_t0) / 1000000 )) ms)"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
