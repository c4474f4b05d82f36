#!/usr/bin/env bash
# Builds the real servers the tests run against (etcd, kube-apiserver, the node components kubelet,
# kube-controller-manager and kube-scheduler, OpenBao, istiod and its workload agent pilot-agent), the zlint certificate linter and Prometheus's promtool
# (rule checks) from their Go modules.
#
# Each server has its own wrapper module in test/env/<name>/ (go.mod + go.sum pin every module). A binary is cached
# outside the repo under $IVA_CACHE_DIR (default ~/.cache/istiod-vault-agent), keyed by a hash of the wrapper's
# go.mod, go.sum, build settings and the Go version, so a warm machine skips the build entirely.
#
# Usage: test/env/build.sh [name ...]      (default: etcd kube-apiserver openbao istiod)
# Prints, for each server, the path of its binary on stdout as NAME=PATH; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_dir=${IVA_CACHE_DIR:-$HOME/.cache/istiod-vault-agent}
# Never download a toolchain; build with the machine's Go. Every module is pinned by the committed go.sum, so the
# build needs no checksum-database round trip, and -mod=readonly makes a stale go.mod an error instead of an edit.
export GOTOOLCHAIN=local GOSUMDB=off GOFLAGS=-mod=readonly

# Build settings per server: main package, binary name, build tags, CGO and extra ldflags.
settings() {
  wrapper=$1
  case "$1" in
    etcd)
      pkg=go.etcd.io/etcd/server/v3; bin=etcd; tags=""; cgo=0; ldflags="" ;;
    kube-apiserver)
      pkg=k8s.io/kubernetes/cmd/kube-apiserver; bin=kube-apiserver; tags=""; cgo=0; kube_version_ldflags ;;
    kubelet | kube-controller-manager | kube-scheduler)
      # The node components come from the same k8s.io/kubernetes version as the apiserver, in their own wrapper so
      # that the apiserver's go.mod (and its cache key) stays as small as it was. The Go build cache shares the
      # packages they have in common.
      wrapper=kube-node; pkg=k8s.io/kubernetes/cmd/$1; bin=$1; tags=""; cgo=0; kube_version_ldflags ;;
    openbao)
      pkg=github.com/openbao/openbao; bin=bao; tags=""; cgo=0
      ldflags="-X github.com/openbao/openbao/version.fullVersion=2.4.0" ;;
    istiod)
      pkg=istio.io/istio/pilot/cmd/pilot-discovery; bin=pilot-discovery; tags="vtprotobuf,disable_pgv"; cgo=0
      local rev; rev=$(module_version "$1" istio.io/istio | sed -E 's/.*-([0-9a-f]{12})$/\1/')
      ldflags="-X istio.io/istio/pkg/version.buildVersion=1.31-dev+$rev -X istio.io/istio/pkg/version.buildGitRevision=$rev"
      ldflags+=" -X istio.io/istio/pkg/version.buildStatus=Clean" ;;
    pilot-agent)
      # Istio's workload agent, built from the same istio.io/istio commit as istiod: its own wrapper module
      # (test/env/pilot-agent) pins that commit, and every module the two share at the same version, while istiod's
      # go.mod (and so its cache key) stays as it was. The mesh-CA test runs it as a workload's agent.
      pkg=istio.io/istio/pilot/cmd/pilot-agent; bin=pilot-agent; tags="vtprotobuf,disable_pgv"; cgo=0
      local rev; rev=$(module_version "$1" istio.io/istio | sed -E 's/.*-([0-9a-f]{12})$/\1/')
      ldflags="-X istio.io/istio/pkg/version.buildVersion=1.31-dev+$rev -X istio.io/istio/pkg/version.buildGitRevision=$rev"
      ldflags+=" -X istio.io/istio/pkg/version.buildStatus=Clean" ;;
    helm)
      # Renders Istio's own istiod chart (from the pinned istio.io/istio module) with the project's values.
      pkg=helm.sh/helm/v3/cmd/helm; bin=helm; tags=""; cgo=0
      ldflags="-X helm.sh/helm/v3/internal/version.version=$(module_version helm helm.sh/helm/v3)" ;;
    zlint)
      # Not a server: the X.509 linter the certificate tests feed every kind of certificate the agent makes.
      pkg=github.com/zmap/zlint/v3/cmd/zlint; bin=zlint; tags=""; cgo=0; ldflags="" ;;
    promtool)
      # Not a server: checks and unit-tests the chart's Prometheus rules (promtool check rules / test rules).
      pkg=github.com/prometheus/prometheus/cmd/promtool; bin=promtool; tags=""; cgo=0
      ldflags="-X github.com/prometheus/common/version.Version=$(module_version promtool github.com/prometheus/prometheus)" ;;
    *) echo "build.sh: unknown server '$1' (expected etcd, kube-apiserver, kubelet, kube-controller-manager," \
         "kube-scheduler, openbao, istiod, pilot-agent, helm, zlint or promtool)" >&2; return 1 ;;
  esac
}

kube_version_ldflags() { # without these the Kubernetes binaries report v0.0.0 (and kubelet's version skew checks fail)
  local v major minor
  v=$(module_version "$wrapper" k8s.io/kubernetes)
  major=$(echo "$v" | sed -E 's/^v([0-9]+)\..*/\1/'); minor=$(echo "$v" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  ldflags="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
}

module_version() { # wrapper, module -> the version the wrapper's go.mod requires
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$here/$1/go.mod"
}

build_one() {
  local name=$1 wrapper pkg bin tags cgo ldflags
  settings "$name"
  local key
  key=$( { cat "$here/$wrapper/go.mod" "$here/$wrapper/go.sum"; go version; echo "$pkg|$tags|$cgo|$ldflags"; } | sha256sum | cut -c1-16)
  local out="$cache_dir/bin/$name-$key/$bin"
  if [ -x "$out" ]; then
    echo "build.sh: $name cached ($out)" >&2
  else
    echo "build.sh: building $name from $pkg (cold builds take minutes) ..." >&2
    local start=$SECONDS tmp="$out.tmp.$$"
    mkdir -p "$(dirname "$out")"
    (cd "$here/$wrapper" && CGO_ENABLED=$cgo go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$tmp" "$pkg")
    mv -f "$tmp" "$out"
    echo "build.sh: built $name in $((SECONDS - start)) s" >&2
  fi
  echo "$name=$out"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(etcd kube-apiserver openbao istiod)
for n in "${names[@]}"; do build_one "$n"; done
