#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, from the binaries build.sh makes: etcd,
# kube-apiserver (RBAC, an audit log), kube-controller-manager, kube-scheduler and kwok for
# nodes. Certificates are generated per plane; every process is recorded by PID in the state
# folder, so `stop` ends exactly what `start` began.
#
#   e2e/cluster/plane.sh start DIR   # start a plane in DIR (created); prints the KUBECONFIG line
#   e2e/cluster/plane.sh stop DIR    # stop it (the folder stays, with the logs and audit log)
#
# Pods are not run by kwok: the stages in kwok-stages.yaml cover nodes only, and the cluster
# test's pod runner acts as the kubelet (see tests/cluster/podlet.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop_plane() {
  [ -f "$dir/pids" ] || return 0
  # Reverse order: nodes and controllers before the apiserver, etcd last.
  tac "$dir/pids" | while read -r pid name; do
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/pids"
}

if [ "$cmd" = stop ]; then stop_plane; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

bin="$("$here/build.sh")"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
stop_plane
rm -rf "$dir/etcd" "$dir/pki" "$dir/logs"
mkdir -p "$dir/pki" "$dir/logs" "$dir/etcd"
started=$(date +%s.%N)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kubelet_port=$(free_port)

# --- certificates: one CA; serving certs of the apiserver and of kwok's kubelet server; client
# certs of the admin and of the apiserver towards kubelets; the service account signing key.
pki="$dir/pki"
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=hearth-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
sign() { # name, subject, extensions file
  openssl_quiet req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  openssl_quiet x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$3" -out "$pki/$1.crt"
}
cat >"$pki/server.ext" <<EOF
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$pki/kubelet.ext"
sign apiserver "/CN=kube-apiserver" "$pki/server.ext"
sign kubelet "/CN=kwok-kubelet" "$pki/kubelet.ext"
sign admin "/O=system:masters/CN=hearth-test-admin" "$pki/client.ext"
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$pki/client.ext"
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

server="https://127.0.0.1:$api_port"
kubeconfig="$dir/kubeconfig"
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hearth-test
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key"}
contexts:
- name: hearth-test
  context: {cluster: hearth-test, user: admin}
current-context: hearth-test
EOF

# Everything the apiserver is asked is written down: the cluster test reads it to bound the
# calls Hearth makes while idle.
cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOF

launch() { # name, command...
  local name="$1"; shift
  "$@" >"$dir/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$dir/pids"
}

launch etcd "$bin/etcd" --data-dir "$dir/etcd" --name hearth-test \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "hearth-test=http://127.0.0.1:$peer_port" \
  --unsafe-no-fsync --quota-backend-bytes 1073741824 --log-level warn

launch kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode RBAC \
  --kubelet-preferred-address-types InternalIP --kubelet-certificate-authority "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" \
  --audit-log-format json --audit-log-maxsize 200 \
  --storage-media-type application/json \
  --profiling=false --v 1

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
for _ in $(seq 600); do
  kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl get --raw /readyz >/dev/null || { echo "plane.sh: kube-apiserver did not become ready; see $dir/logs" >&2; exit 1; }

launch kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route' \
  --node-monitor-grace-period 60s --v 1
launch kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --v 1
# kwok also serves the kubelet API of its nodes, so `kubectl port-forward` reaches a pod through
# the apiserver as on a real node: the pod runner writes a PortForward object per pod.
kubectl apply --server-side -f "$bin/../crds/kwok" >/dev/null
launch kwok "$bin/kwok" --kubeconfig "$kubeconfig" --config "$here/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 --node-ip 127.0.0.1 \
  --server-address "127.0.0.1:$kubelet_port" --node-port "$kubelet_port" \
  --tls-cert-file "$pki/kubelet.crt" --tls-private-key-file "$pki/kubelet.key" \
  --enable-crds PortForward

# Ready when the controllers have made the default ServiceAccount (pods need it).
for _ in $(seq 600); do
  kubectl -n default get serviceaccount default >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl -n default get serviceaccount default >/dev/null || { echo "plane.sh: kube-controller-manager made no ServiceAccount; see $dir/logs" >&2; exit 1; }

elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
echo "$bin" >"$dir/bin"
echo "plane.sh: control plane up in ${elapsed}s (kube-apiserver $server; logs in $dir/logs)" >&2
echo "export KUBECONFIG=$kubeconfig PATH=$bin:\$PATH"
