#!/usr/bin/env bash
# The etcd store against real etcds (Debian's etcd-server and etcd-client): starts a private
# single-node etcd, a TLS + password-auth etcd and a three-member cluster on free loopback ports
# with temporary data dirs, runs the tests, and always stops them. Ends with "N passed, N failed".
#
#   host-cni/tests/etcd/run.sh [BIN]     (BIN: target/release/hereabouts, for process-level tests)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin=${1:-$root/target/release/hereabouts}
node="$here/node.sh"
for tool in etcd etcdctl openssl python3; do
  command -v $tool >/dev/null || { echo "etcd tests need $tool (Debian: etcd-server etcd-client openssl python3)"; echo "0 passed, 1 failed"; exit 1; }
done

work=$(mktemp -d /tmp/hereabouts-etcd.XXXXXX)
cleanup() {
  for d in "$work"/*/; do [ -f "$d/pid" ] && bash "$node" down "$d"; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
port() { bash "$node" port; }
passed=0 failed=0 failures=""
result() { # name status
  if [ "$2" = 0 ]; then passed=$((passed+1)); echo "ok: $1"; else failed=$((failed+1)); failures="$failures $1"; echo "FAILED: $1"; fi
}

# --- a single member -------------------------------------------------------------------------
start_single() { # dir -> prints endpoint
  local dir=$1 c p; c=$(port); p=$(port)
  bash "$node" init "$dir" --name solo \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "solo=http://127.0.0.1:$p" || return 1
  bash "$node" wait "127.0.0.1:$c" || return 1
  echo "127.0.0.1:$c"
}
single=$(start_single "$work/single") || { echo "cannot start etcd"; tail "$work/single/etcd.log"; echo "0 passed, 1 failed"; exit 1; }
echo "etcd (single member) at $single, version $(etcd --version | head -1)"
ctl="$work/single-ctl.sh"
printf 'case $1 in stop) bash %q down %q ;; start) bash %q up %q && bash %q wait %q ;; esac\n' \
  "$node" "$work/single" "$node" "$work/single" "$node" "$single" >"$ctl"

# --- TLS with client certificates and password auth --------------------------------------------
tls="$work/tls"; mkdir -p "$tls"
(
  cd "$tls"
  ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@" 2>/dev/null; }
  ec -x509 -days 1 -keyout ca-key.pem -out ca.pem -subj /CN=hereabouts-test-ca
  ec -x509 -days 1 -keyout other-ca-key.pem -out other-ca.pem -subj /CN=some-other-ca
  ec -keyout server-key.pem -out server.csr -subj /CN=etcd
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -out server.pem -extfile server.ext 2>/dev/null
  ec -keyout client-key.pem -out client.csr -subj /CN=hereabouts-client
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -out client.pem -extfile client.ext 2>/dev/null
) || echo "certificate generation failed"
tc=$(port); tp=$(port)
tls_endpoint="https://127.0.0.1:$tc"
tlsctl=(--cacert "$tls/ca.pem" --cert "$tls/client.pem" --key "$tls/client-key.pem")
bash "$node" init "$work/tlsnode" --name secure \
  --listen-client-urls "$tls_endpoint" --advertise-client-urls "$tls_endpoint" \
  --cert-file "$tls/server.pem" --key-file "$tls/server-key.pem" --trusted-ca-file "$tls/ca.pem" --client-cert-auth \
  --listen-peer-urls "http://127.0.0.1:$tp" --initial-advertise-peer-urls "http://127.0.0.1:$tp" \
  --initial-cluster "secure=http://127.0.0.1:$tp"
if bash "$node" wait "$tls_endpoint" "${tlsctl[@]}"; then
  e() { ETCDCTL_API=3 etcdctl --endpoints "$tls_endpoint" "${tlsctl[@]}" "$@" >/dev/null; }
  e role add root; e user add root:s3cret --interactive=false; e user grant-role root root; e auth enable \
    || echo "enabling auth failed"
  export HEREABOUTS_ETCD_TLS_ENDPOINT=$tls_endpoint HEREABOUTS_ETCD_TLS_DIR=$tls
else
  echo "the TLS etcd did not start:"; tail -5 "$work/tlsnode/etcd.log"
fi

# --- three members, the leader stopped ---------------------------------------------------------------
declare -a cports pports
for i in 0 1 2; do cports[$i]=$(port); pports[$i]=$(port); done
initial="m0=http://127.0.0.1:${pports[0]},m1=http://127.0.0.1:${pports[1]},m2=http://127.0.0.1:${pports[2]}"
for i in 0 1 2; do
  bash "$node" init "$work/m$i" --name "m$i" --initial-cluster-token hereabouts-test --initial-cluster "$initial" \
    --listen-client-urls "http://127.0.0.1:${cports[$i]}" --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${pports[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}"
done
cluster="127.0.0.1:${cports[0]},127.0.0.1:${cports[1]},127.0.0.1:${cports[2]}"
if bash "$node" wait "$cluster"; then
  # Stop the leader, the hardest member to lose; the other two elect a new one.
  leader=$(ETCDCTL_API=3 etcdctl --endpoints "$cluster" endpoint status -w json \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); print(next(i for i,e in enumerate(s) if e["Status"]["leader"]==e["Status"]["header"]["member_id"]))')
  bash "$node" down "$work/m${leader:-0}"
  echo "three-member cluster at $cluster; stopped member m${leader:-0} (the leader)"
  alive=$(echo "$cluster" | tr , '\n' | grep -v ":${cports[${leader:-0}]}$" | paste -sd,)
  for _ in $(seq 50); do
    ETCDCTL_API=3 etcdctl --endpoints "$alive" --command-timeout=1s endpoint status -w json 2>/dev/null \
      | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if all(e["Status"]["leader"] for e in s) else 1)' && break
    sleep 0.2
  done
  export HEREABOUTS_ETCD_CLUSTER_ENDPOINTS=$cluster
else
  echo "the three-member cluster did not start"
fi

# --- the Rust tests (one at a time: the fault test stops the single member) --------------------
# The tests that need these etcds are #[ignore = "needs etcd"]: --ignored runs exactly them
# (not the worker processes they start, nor the benchmarks of host-cni/bench/etcd.sh and one-pool.sh). They
# are the store crate's (they need no CLI), built with the etcd store alone.
export HEREABOUTS_ETCD_ENDPOINTS=$single HEREABOUTS_ETCD_CTL=$ctl
export HEREABOUTS_CACHE_DIR="$work/cache"
log="$work/cargo-test.log"
# --show-output: the measurements the tests print, after clean "test NAME ... ok" lines.
(cd "$root" && cargo test --release --locked -p hereabouts-stores --no-default-features \
  --features etcd --test etcd -- --ignored --skip worker --skip bench_stores --skip bench_one_pool --test-threads 1 \
  --show-output) >"$log" 2>&1
status=$?
grep -E '^(contract|contention|kill test|faults|large pool|unreachable|bad data|tls|cluster|thread|  left|  right|called)' "$log" | cut -c1-400
while read -r name verdict; do
  result "$name" "$([ "$verdict" = ok ] && echo 0 || echo 1)"
done < <(sed -n 's/^test \([a-z0-9_:]*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$log")
grep -q '^test .* \.\.\. ok$' "$log" || result "cargo test --test etcd ran its tests" 1
if [ $status -ne 0 ] && ! grep -q '^test .* FAILED$' "$log"; then tail -30 "$log"; result "cargo test --test etcd" 1; fi

# --- the binary's commands that need etcd and an API server (the emulation): reconcile,
# `slices release --gone` ---------------------------------------------------------------------
log="$work/cargo-test-cli.log"
(cd "$root" && cargo test --release --locked -p hereabouts --test kube_cli --test etcd_slices \
  -- --ignored \
  --skip bench_ --skip on_the_real_server --test-threads 1) >"$log" 2>&1
status=$?
while read -r name verdict; do
  result "cli: $name" "$([ "$verdict" = ok ] && echo 0 || echo 1)"
done < <(sed -n 's/^test \([a-z0-9_:]*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$log")
grep -q '^test .* \.\.\. ok$' "$log" || result "cargo test --test kube_cli --ignored ran its tests" 1
if [ $status -ne 0 ] && ! grep -q '^test .* FAILED$' "$log"; then tail -30 "$log"; result "cargo test --test kube_cli --ignored" 1; fi
if grep -q '^test .* FAILED$' "$log"; then sed -n '/^failures:$/,/^test result/p' "$log" | head -60; fi

# --- process-level: the CNI plugin itself against etcd ----------------------------------------
if [ -x "$bin" ] && echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$bin" >/dev/null 2>&1; then
  python3 "$here/cni.py" "$bin" "$single" "$ctl" >"$work/cni.log" 2>&1; cni_status=$?
  while IFS= read -r line; do
    case $line in
      "ok: "*) result "cni: ${line#ok: }" 0 ;;
      "FAILED: "*) result "cni: ${line#FAILED: }" 1 ;;
      *) echo "$line" ;;
    esac
  done <"$work/cni.log"
  [ $cni_status -ne 0 ] && ! grep -q '^FAILED' "$work/cni.log" && result "cni.py ran to the end" 1
else
  echo "NOTE: $bin does not answer CNI VERSION yet; the plugin-level etcd tests did not run"
  result "cni plugin available" 1
fi

echo
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
