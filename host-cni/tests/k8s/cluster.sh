#!/usr/bin/env bash
# A real Kubernetes control plane for the tests, on 127.0.0.1 only: etcd and kube-apiserver
# (built by tools/build.sh), with real authentication — client certificates signed by a CA
# this script makes, and service-account tokens from the TokenRequest API signed by a key it
# makes — and --authorization-mode=RBAC. No kubelet, scheduler or controller-manager: the
# tests create pods and nodes through the API and set their status as a kubelet would.
#
#   cluster.sh up DIR      start; writes DIR/admin.kubeconfig (system:masters), DIR/env
#   cluster.sh install DIR BIN   apply what a user applies, as they apply it (server-side):
#                          `BIN crds --ipamclaims`, Multus' NAD CRD (fixtures/), deploy/*.yaml
#   cluster.sh down DIR    stop both and remove their data (idempotent)
#   cluster.sh restart-apiserver DIR   stop the API server and start it again (same port)
#   cluster.sh compact DIR             compact etcd's history up to its current revision
#
# DIR/env holds KUBE_APISERVER_URL, ETCD_URL and the tool paths for the scripts that source it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?usage: cluster.sh up|install|down|restart-apiserver|compact DIR}
dir=${2:?usage: cluster.sh $cmd DIR}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_pid() { # file
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

wait_ready() { # seconds
  local deadline=$((SECONDS + $1))
  until curl -sf --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
      "$KUBE_APISERVER_URL/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
      echo "cluster.sh: kube-apiserver did not become ready; its log:" >&2
      tail -40 "$dir/apiserver.log" >&2
      return 1
    fi
    sleep 0.5
  done
}

start_apiserver() {
  "$TOOLS/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="$ETCD_URL" --etcd-compaction-interval=0 \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=RBAC --anonymous-auth=false --allow-privileged=true \
    --service-cluster-ip-range=10.96.0.0/16 --profiling=false \
    --enable-priority-and-fairness=false --endpoint-reconciler-type=none \
    ${HEREABOUTS_APISERVER_FLAGS:-} \
    >>"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"
  wait_ready 120
}

case $cmd in
up)
  mkdir -p "$dir/pki"
  TOOLS=$("$here/tools/build.sh")
  pki=$dir/pki
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=hereabouts-test-ca \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  sign() { # name subject [extfile]
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 2 -out "$pki/$1.crt" ${3:+-extfile "$3"} 2>/dev/null
  }
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$pki/server.ext"
  sign apiserver /CN=kube-apiserver "$pki/server.ext"
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
  sign admin "/O=system:masters/CN=hereabouts-test-admin" "$pki/client.ext"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key

  ETCD_PORT=$(free_port); PEER_PORT=$(free_port); APISERVER_PORT=$(free_port)
  ETCD_URL=http://127.0.0.1:$ETCD_PORT
  KUBE_APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
  cat >"$dir/env" <<ENV
TOOLS=$TOOLS
ETCD_URL=$ETCD_URL
APISERVER_PORT=$APISERVER_PORT
KUBE_APISERVER_URL=$KUBE_APISERVER_URL
KUBECTL=$TOOLS/kubectl
ENV
  "$TOOLS/etcd" --name test --data-dir "$dir/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "test=http://127.0.0.1:$PEER_PORT" --log-level warn \
    --quota-backend-bytes=4294967296 >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  for _ in $(seq 100); do curl -sf "$ETCD_URL/health" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "$ETCD_URL/health" >/dev/null || { echo "cluster.sh: etcd did not start" >&2; cat "$dir/etcd.log" >&2; exit 1; }
  start_apiserver
  "$TOOLS/kubectl" config set-cluster test --server="$KUBE_APISERVER_URL" --certificate-authority="$pki/ca.crt" \
    --embed-certs --kubeconfig="$dir/admin.kubeconfig" >/dev/null
  "$TOOLS/kubectl" config set-credentials admin --client-certificate="$pki/admin.crt" --client-key="$pki/admin.key" \
    --embed-certs --kubeconfig="$dir/admin.kubeconfig" >/dev/null
  "$TOOLS/kubectl" config set-context test --cluster=test --user=admin --kubeconfig="$dir/admin.kubeconfig" >/dev/null
  "$TOOLS/kubectl" config use-context test --kubeconfig="$dir/admin.kubeconfig" >/dev/null
  echo "cluster.sh: kube-apiserver $("$TOOLS/kube-apiserver" --version | cut -d' ' -f2) ready at $KUBE_APISERVER_URL" >&2
  ;;
install)
  . "$dir/env"
  bin=${3:?usage: cluster.sh install DIR BIN}
  export KUBECONFIG=$dir/admin.kubeconfig
  apply() { "$TOOLS/kubectl" apply --server-side --field-manager=hereabouts-test "$@"; }
  "$bin" crds --ipamclaims >"$dir/crds.yaml"
  apply -f "$dir/crds.yaml" && apply -f "$here/fixtures/nad-crd.yaml" &&
    "$TOOLS/kubectl" wait --for=condition=Established crd --all --timeout=60s &&
    apply -f "$here/../../../deploy/"
  ;;
down)
  stop_pid "$dir/apiserver.pid"
  stop_pid "$dir/etcd.pid"
  rm -rf "$dir/etcd"
  ;;
restart-apiserver)
  # shellcheck disable=SC1091
  . "$dir/env"
  stop_pid "$dir/apiserver.pid"
  start_apiserver
  ;;
compact)
  . "$dir/env"
  rev=$(curl -sf -X POST "$ETCD_URL/v3/kv/range" -d '{"key":"AA=="}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
  curl -sf -X POST "$ETCD_URL/v3/kv/compaction" -d "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
  echo "$rev"
  ;;
*) echo "usage: cluster.sh up|install|down|restart-apiserver|compact DIR" >&2; exit 2 ;;
esac
