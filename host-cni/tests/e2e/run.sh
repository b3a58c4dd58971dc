#!/usr/bin/env bash
# Real-client end-to-end test of the hereabouts IPAM plugin.
#
# Debian's `bridge` plugin (containernetworking-plugins) is the main plugin, as in a cluster:
# it creates a veth into a network namespace and delegates addressing to `"ipam": {"type":
# "hereabouts"}`. For cniVersion 0.3.1, 0.4.0 and 1.0.0 we check, from inside each namespace,
# that the address the plugin reported is configured; that 50 ADDs in parallel get 50 distinct
# lowest-packed addresses; that DEL frees (the next ADD reuses the lowest) and a second DEL
# succeeds; CHECK (called on the IPAM plugin directly with prevResult, as bridge delegates
# it); GC (1.1.0, direct) frees exactly the attachments not listed; STATUS.
#
# usage: host-cni/tests/e2e/run.sh PATH/TO/hereabouts
# needs: root, iproute2, containernetworking-plugins, python3. Every namespace, bridge and
# file it creates is removed on exit. Without the right to create namespaces it says so
# loudly and tests the plugin by direct calls only. Ends with "N passed, N failed".
set -u
bin=$(readlink -f "${1:?usage: run.sh PATH/TO/hereabouts}")
[ -x "$bin" ] || { echo "run.sh: $bin is not executable" >&2; exit 2; }
plugins=/usr/lib/cni; [ -x $plugins/bridge ] || plugins=/opt/cni/bin
command -v python3 >/dev/null || { echo "run.sh: python3 is needed" >&2; exit 2; }

tag=hb$$
work=$(mktemp -d "${TMPDIR:-/tmp}/hereabouts-e2e.XXXXXX")
mkdir -p "$work/bin"
ln -s "$bin" "$work/bin/hereabouts"
[ -x $plugins/bridge ] && ln -s "$plugins/bridge" "$work/bin/bridge"
namespaces=() bridges=()
cleanup() {
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null; done
  for br in "${bridges[@]}"; do ip link del "$br" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass=0 fail=0
ok() { pass=$((pass+1)); echo "ok   $*"; }
bad() { fail=$((fail+1)); echo "FAIL $*"; }
check() { # description command…
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
# inns: a check that only means something with real namespaces; never counted without them.
inns() { if [ $real = 1 ]; then check "$@"; else echo "SKIP $1 (no network namespaces)"; fi; }

# Can we make namespaces (root, a kernel that allows it, the bridge plugin present)?
real=1
if [ ! -x "$work/bin/bridge" ]; then
  real=0 why="no bridge plugin in $plugins (apt-get install containernetworking-plugins)"
elif ! ip netns add "$tag-probe" 2>"$work/probe.err"; then
  real=0 why="cannot create network namespaces: $(cat "$work/probe.err")"
else
  ip netns del "$tag-probe"
fi
if [ $real = 0 ]; then
  cat <<EOF
########################################################################################
# WARNING: $why
# The real-client part of this test (bridge plugin, network namespaces, in-namespace
# address checks) is NOT RUN. Falling back to calling the IPAM plugin directly.
########################################################################################
EOF
fi

# json FILE EXPR: evaluates a Python expression on the parsed JSON in FILE (as `r`).
json() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null; }

# conf VERSION NAME SUBNET [extra ipam JSON]: a bridge network config delegating to hereabouts.
conf() {
  python3 - "$@" "$work" <<'PY'
import json, sys
version, name, subnet, extra, work = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ipam = {"type": "hereabouts", "range": subnet, "data_dir": f"{work}/store-{name}", "log_file": f"{work}/{name}.log",
        "log_level": "debug"}
ipam.update(json.loads(extra or "{}"))
print(json.dumps({"cniVersion": version, "name": name, "type": "bridge", "bridge": f"br-{name}",
                  "isGateway": False, "ipMasq": False, "ipam": ipam}))
PY
}

# cni VERB NET POD CONFFILE [PLUGIN]: one call as a runtime makes it; output in $work/out.NET.POD.VERB
cni() {
  local verb=$1 net=$2 pod=$3 file=$4 plugin=${5:-bridge}
  [ $real = 0 ] && plugin=hereabouts
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$verb" CNI_CONTAINERID="ctr-$net-$pod" \
    CNI_NETNS="/var/run/netns/$tag-$net-$pod" CNI_IFNAME=eth0 CNI_PATH="$work/bin" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=pod-$pod" \
    HEREABOUTS_LOG_DIR="$work" \
    "$work/bin/$plugin" <"$file" >"$work/out.$net.$pod.$verb" 2>"$work/err.$net.$pod.$verb"
}
out() { echo "$(head -c 400 "$work/out.$1.$2.$3") $(head -c 300 "$work/err.$1.$2.$3")"; }
netns() { # NET POD: create the pod's namespace
  [ $real = 1 ] || return 0
  ip netns add "$tag-$1-$2" && namespaces+=("$tag-$1-$2")
}
addr_of() { json "$work/out.$1.$2.ADD" 'r["ips"][0]["address"]'; }
# configured NET POD CIDR: the address is on eth0 inside the pod's namespace
configured() {
  ip -n "$tag-$1-$2" -o addr show dev eth0 | grep -qF " $3 "
}
# with_prev CONFFILE NET POD VERSION: the config plus prevResult (and a new version) for direct calls
with_prev() {
  python3 - "$1" "$work/out.$2.$3.ADD" "$4" <<'PY'
import json, sys
conf = json.load(open(sys.argv[1])); conf["prevResult"] = json.load(open(sys.argv[2])); conf["cniVersion"] = sys.argv[3]
print(json.dumps(conf))
PY
}
allocations() { # NET: number of allocations in the network's pools (`hereabouts store dump`)
  "$bin" store dump --data-dir "$work/store-$1" 2>/dev/null | python3 -c '
import json, sys
print(sum(len(i["spec"]["allocations"]) for i in json.load(sys.stdin)["items"] if i["kind"] == "IPPool"))'
}

# ---- each cniVersion through the bridge plugin ----
k=0
for version in 0.3.1 0.4.0 1.0.0; do
  k=$((k+1)); net="v$k"; subnet="10.$((200+k)).0.0/24"; prefix="10.$((200+k)).0"
  conf "$version" "$net" "$subnet" "" >"$work/$net.conf"
  [ $real = 1 ] && bridges+=("br-$net")
  echo "--- cniVersion $version: bridge + hereabouts on $subnet"
  for pod in 1 2 3; do
    netns "$net" "$pod"
    if cni ADD "$net" "$pod" "$work/$net.conf"; then
      a=$(addr_of "$net" "$pod")
      if [ "$a" = "$prefix.$pod/24" ]; then ok "$version ADD pod $pod got the lowest free address $a"
      else bad "$version ADD pod $pod: expected $prefix.$pod/24, got '$a'"; fi
      inns "$version pod $pod: $a is configured on eth0 inside its namespace" configured "$net" "$pod" "$a"
      v=$(json "$work/out.$net.$pod.ADD" 'r["ips"][0].get("version", "-")')
      case $version in
        1.*) check "$version result has no per-IP version" [ "$v" = "-" ] ;;
        *) check "$version result carries the per-IP version (\"$v\")" [ "$v" = 4 ] ;;
      esac
    else
      bad "$version ADD pod $pod: $(out "$net" "$pod" ADD)"
    fi
  done
  # CHECK, as bridge delegates it: the IPAM plugin with prevResult.
  with_prev "$work/$net.conf" "$net" 1 "$version" >"$work/$net.check"
  if [ "$version" = 0.3.1 ]; then
    cni CHECK "$net" 1 "$work/$net.check" hereabouts
    check "$version CHECK is refused with code 1 (CHECK came with 0.4.0)" [ "$(json "$work/out.$net.1.CHECK" 'r["code"]')" = 1 ]
  else
    if cni CHECK "$net" 1 "$work/$net.check" hereabouts; then ok "$version CHECK of pod 1"; else bad "$version CHECK pod 1: $(out "$net" 1 CHECK)"; fi
  fi
  check "$version DEL pod 1" cni DEL "$net" 1 "$work/$net.conf"
  inns "$version pod 1's address is gone from its namespace" bash -c "! ip -n $tag-$net-1 -o addr show dev eth0 2>/dev/null | grep -qF ' $prefix.1/'"
  check "$version a second DEL of pod 1 succeeds" cni DEL "$net" 1 "$work/$net.conf"
  netns "$net" 4
  if cni ADD "$net" 4 "$work/$net.conf"; then
    a=$(addr_of "$net" 4)
    check "$version the next ADD reuses the freed lowest address ($a)" [ "$a" = "$prefix.1/24" ]
    inns "$version pod 4: $a is configured inside its namespace" configured "$net" 4 "$a"
  else
    bad "$version ADD pod 4: $(out "$net" 4 ADD)"
  fi
  if [ "$version" != 0.3.1 ]; then
    cni CHECK "$net" 1 "$work/$net.check" hereabouts
    check "$version CHECK of the deleted pod 1 fails with code 3" [ "$(json "$work/out.$net.1.CHECK" 'r["code"]')" = 3 ]
  fi
  for pod in 2 3 4; do cni DEL "$net" "$pod" "$work/$net.conf" || bad "$version DEL pod $pod: $(out "$net" "$pod" DEL)"; done
  check "$version the store is empty after every DEL" [ "$(allocations "$net")" = 0 ]
done

# ---- 50 pods at once ----
net=par; subnet=10.210.0.0/24; n=50
echo "--- $n parallel ADDs through bridge (cniVersion 1.0.0) on $subnet"
conf 1.0.0 "$net" "$subnet" "" >"$work/$net.conf"
[ $real = 1 ] && bridges+=("br-$net")
for i in $(seq $n); do netns "$net" "$i"; done
t0=$(date +%s%N)
for i in $(seq $n); do cni ADD "$net" "$i" "$work/$net.conf" & done
wait
echo "    $n ADDs done in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
got=() failed_adds=0 unconfigured=0
for i in $(seq $n); do
  a=$(addr_of "$net" "$i")
  if [ -z "$a" ]; then failed_adds=$((failed_adds+1)); echo "    pod $i: $(out "$net" "$i" ADD)"; continue; fi
  got+=("${a%/*}")
  [ $real = 1 ] && ! configured "$net" "$i" "$a" && { unconfigured=$((unconfigured+1)); echo "    pod $i: $a not configured in its namespace"; }
done
check "all $n parallel ADDs succeeded" [ $failed_adds = 0 ]
inns "every parallel pod has its address configured inside its namespace" [ $unconfigured = 0 ]
distinct=$(printf '%s\n' "${got[@]}" | sort -u | wc -l)
check "$n distinct addresses" [ "$distinct" = $n ]
expected=$(for i in $(seq $n); do echo "10.210.0.$i"; done | sort)
check "lowest-packed: exactly 10.210.0.1 … 10.210.0.$n" [ "$(printf '%s\n' "${got[@]}" | sort)" = "$expected" ]
check "the store records $n allocations" [ "$(allocations "$net")" = $n ]
for i in $(seq $n); do (cni DEL "$net" "$i" "$work/$net.conf"; echo $? >"$work/rc.$net.$i.DEL") & done
wait
dels=0; for i in $(seq $n); do [ "$(cat "$work/rc.$net.$i.DEL")" = 0 ] || { dels=$((dels+1)); echo "    DEL $i: $(out "$net" "$i" DEL)"; }; done
check "all $n parallel DELs succeeded" [ $dels = 0 ]
check "the store is empty after the parallel DELs" [ "$(allocations "$net")" = 0 ]

# ---- GC and STATUS (cniVersion 1.1.0, which this bridge plugin predates: direct calls) ----
net=gc
echo "--- GC and STATUS (cniVersion 1.1.0, the IPAM plugin called directly)"
conf 1.1.0 "$net" 10.211.0.0/24 "" >"$work/$net.conf"
for pod in 1 2 3 4; do cni ADD "$net" "$pod" "$work/$net.conf" hereabouts || bad "GC setup ADD $pod: $(out "$net" "$pod" ADD)"; done
python3 - "$work/$net.conf" <<'PY' >"$work/$net.gc"
import json, sys
conf = json.load(open(sys.argv[1]))
conf["cni.dev/valid-attachments"] = [{"containerID": "ctr-gc-2", "ifname": "eth0"}, {"containerID": "ctr-gc-4", "ifname": "eth0"}]
print(json.dumps(conf))
PY
check "GC with pods 2 and 4 listed" cni GC "$net" 0 "$work/$net.gc" hereabouts
left=$("$bin" store dump --data-dir "$work/store-$net" | python3 -c 'import json,sys
p = [i for i in json.load(sys.stdin)["items"] if i["metadata"]["name"] == "10.211.0.0-24"][0]["spec"]
print(" ".join(sorted(h["id"] for h in p["allocations"].values())))')
check "GC freed exactly the unlisted pods 1 and 3 (left: $left)" [ "$left" = "ctr-gc-2 ctr-gc-4" ]
cni ADD "$net" 5 "$work/$net.conf" hereabouts
check "the address GC freed is handed out again ($(addr_of "$net" 5))" [ "$(addr_of "$net" 5)" = 10.211.0.1/24 ]
check "STATUS reports the store usable" cni STATUS "$net" 0 "$work/$net.conf" hereabouts
[ -s "$work/gc.log" ] && check "the plugin logged to its log_file, not stdout" grep -q "garbage-collected" "$work/gc.log"

# This suite is about real namespaces: without them it fails, however much else passed.
[ $real = 0 ] && bad "network namespaces with the bridge plugin: $why"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
