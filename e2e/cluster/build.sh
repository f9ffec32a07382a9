#!/usr/bin/env bash
# Builds the cluster test's tools from Go modules, once per machine: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and etcd (plane/), kwok (kwok/) and Helm 4
# (helm/), each folder a Go module of its own so no tool moves another's dependency versions. The binaries go into a cache folder named after the Go version and the modules'
# go.mod/go.sum, so a change of version builds a new set and an unchanged one is reused.
# Also copies the CRDs the cluster test installs beside Hearth's from their projects' Go modules:
# KEDA's, the Gateway API's and kwok's (its PortForward and Logs resources).
# Prints the folder holding the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v go >/dev/null || { echo "build.sh: Go is required (apt-get install golang, or go.dev)" >&2; exit 1; }

# Modules whose CRD files the test applies (their Go code is not built).
crd_modules=(github.com/kedacore/keda/v2@v2.20.2 sigs.k8s.io/gateway-api@v1.6.3 sigs.k8s.io/kwok@v0.8.0)
key="$( { go env GOVERSION; echo "${crd_modules[@]}"; cat "$here"/{plane,kwok,helm}/go.{mod,sum}; } | sha256sum | cut -c1-16)"
cache="${HEARTH_CLUSTER_CACHE:-$HOME/.cache/hearth/cluster}/$key"
bin="$cache/bin"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)
complete=1
for tool in "${tools[@]}"; do [ -x "$bin/$tool" ] || complete=0; done
[ -f "$cache/crds/.complete" ] || complete=0
if [ "$complete" = 1 ]; then echo "$bin"; exit 0; fi

mkdir -p "$bin"
# Go's module and build caches for this build only (about 7 GB), removed once everything is in
# place: the binaries are the cache. A failed build keeps them, so a rerun resumes.
go_work="$cache/go"
export GOMODCACHE="$go_work/mod" GOCACHE="$go_work/build" GOFLAGS="${GOFLAGS:-} -modcacherw"
kube_version="$(cd "$here/plane" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
[ -n "$kube_version" ] || { echo "build.sh: no k8s.io/kubernetes version in plane/go.mod" >&2; exit 1; }
minor="$(echo "$kube_version" | cut -d. -f2)"
# The version the servers and kubectl report (Helm checks a chart's kubeVersion against it).
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
build() { # module dir, output name, package
  echo "build.sh: building $2 ($3)" >&2
  (cd "$here/$1" && go build -trimpath -ldflags "$ldflags" -o "$bin/$2.tmp.$$" "$3") && mv "$bin/$2.tmp.$$" "$bin/$2"
}
[ -x "$bin/kube-apiserver" ] || build plane kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
[ -x "$bin/kube-controller-manager" ] || build plane kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
[ -x "$bin/kube-scheduler" ] || build plane kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
[ -x "$bin/kubectl" ] || build plane kubectl k8s.io/kubernetes/cmd/kubectl
[ -x "$bin/etcd" ] || build plane etcd go.etcd.io/etcd/server/v3
[ -x "$bin/kwok" ] || build kwok kwok sigs.k8s.io/kwok/cmd/kwok
[ -x "$bin/helm" ] || build helm helm helm.sh/helm/v4/cmd/helm

module_dir() { (cd "$cache" && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
if [ ! -f "$cache/crds/.complete" ]; then
  mkdir -p "$cache/crds/keda" "$cache/crds/gateway-api" "$cache/crds/kwok"
  cp "$(module_dir "${crd_modules[0]}")"/config/crd/bases/keda.sh_*.yaml "$cache/crds/keda/"
  cp "$(module_dir "${crd_modules[1]}")"/config/crd/standard/gateway.networking.k8s.io_{gatewayclasses,gateways,httproutes,referencegrants}.yaml "$cache/crds/gateway-api/"
  cp "$(module_dir "${crd_modules[2]}")"/kustomize/crd/bases/kwok.x-k8s.io_{portforwards,logs}.yaml "$cache/crds/kwok/"
  chmod -R u+w "$cache/crds"
  touch "$cache/crds/.complete"
fi
rm -rf "$go_work"
echo "$bin"
