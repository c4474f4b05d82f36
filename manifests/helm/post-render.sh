#!/usr/bin/env bash
# Helm post-renderer for Istio's istiod chart: the chart has no hook for extra containers, so the agent is added
# to the rendered istiod Deployment by the kustomize overlay in ../overlays/istiod.
#   helm install istiod istio/istiod -n istio-system -f manifests/helm/istiod-values.yaml \
#     --post-renderer manifests/helm/post-render.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here/../overlays/istiod/." "$work/"
cat > "$work/istiod.yaml"
kubectl kustomize "$work"
