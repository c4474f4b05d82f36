#!/usr/bin/env bash
# End-to-end on a kind cluster, run by hand by operators who have Docker and kind (the project's CI proves the same
# install on a real kubelet instead: test/e2e/real-node.test.ts). It uses exactly the install that test proves: the
# CRD and RBAC from the project chart (charts/istiod-vault-agent), a RootTrustPolicy per istiod Deployment, and
# manifests/helm/istiod-values.yaml for Istio's own istiod chart. Creates a kind cluster and a Vault dev server, configures Vault with setup-vault, installs
# istiod with the agent as a native sidecar, deploys a sample workload and checks its certificate chain.
# Needs: docker, kind, kubectl, helm, istioctl, jq, openssl. Set KEEP=1 to keep the cluster.
set -euo pipefail
cd "$(dirname "$0")/../../.."

cluster=${CLUSTER:-iva-e2e}
# the shipped reference (manifests/helm/istiod-values.yaml), built here from this checkout and loaded into kind
image=${IMAGE:-ghcr.io/istiod-vault-agent/istiod-vault-agent:$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)}
istio_version=${ISTIO_VERSION:-1.30.3}
vault_addr=http://vault.vault:8200 # the dev server speaks plain HTTP; a real Vault is https:// with caBundle set

kind create cluster --name "$cluster"
trap '[ "${KEEP:-}" = 1 ] || kind delete cluster --name "$cluster"' EXIT
docker build -t "$image" --build-arg "VERSION=${image##*:}" --build-arg "REVISION=$(git rev-parse HEAD)" .
kind load docker-image "$image" --name "$cluster"

# Vault dev server in the cluster (root token "root"; a dev server is for this test only).
kubectl create namespace vault
kubectl -n vault run vault --image=hashicorp/vault:1.17 --port=8200 \
  --env=VAULT_DEV_ROOT_TOKEN_ID=root --env=VAULT_DEV_LISTEN_ADDRESS=0.0.0.0:8200
kubectl -n vault expose pod vault --port=8200
kubectl -n vault wait --for=condition=Ready pod/vault --timeout=120s

# setup-vault runs inside the cluster so Vault can reach the apiserver it is told about.
kubectl create namespace istio-system
kubectl -n vault run setup-vault --rm -i --restart=Never --image="$image" --env=VAULT_TOKEN=root \
  -- setup-vault --vault-addr="$vault_addr" --kubernetes-host=https://kubernetes.default.svc

# The project chart (CRD and the agent's RBAC), then the policy the agent reads (named after the istiod Deployment).
helm install istiod-vault-agent charts/istiod-vault-agent -n istio-system --wait
sed -e "s#server: https://vault.vault.svc:8200#server: $vault_addr#" \
  -e 's#serviceAccountTokenPath: .*#serviceAccountTokenPath: /var/run/secrets/vault/vault-token#' \
  manifests/examples/root-trust-policy.yaml | kubectl apply -f -

helm repo add istio https://istio-release.storage.googleapis.com/charts >/dev/null
helm install istio-base istio/base -n istio-system --version "$istio_version" --wait
# (--set on a list would replace the whole initContainers list, so the image is substituted in a copy instead)
values=$(mktemp)
sed "s#image: ghcr.io/istiod-vault-agent/istiod-vault-agent:.*#image: $image#" manifests/helm/istiod-values.yaml >"$values"
helm install istiod istio/istiod -n istio-system --version "$istio_version" -f "$values" --wait

kubectl create namespace sample
kubectl label namespace sample istio-injection=enabled
kubectl -n sample create deployment sleep --image=curlimages/curl -- sleep infinity
kubectl -n sample rollout status deployment/sleep --timeout=180s

pod=$(kubectl -n sample get pod -l app=sleep -o jsonpath='{.items[0].metadata.name}')
istioctl proxy-config secret "$pod" -n sample -o json |
  jq -r '.dynamicActiveSecrets[] | select(.name=="default") | .secret.tlsCertificate.certificateChain.inlineBytes' |
  base64 -d >/tmp/iva-workload-chain.pem
kubectl -n vault exec vault -- vault read -field=certificate pki/cert/ca >/tmp/iva-vault-root.pem
openssl verify -CAfile /tmp/iva-vault-root.pem -untrusted /tmp/iva-workload-chain.pem /tmp/iva-workload-chain.pem
echo "workload certificate chains to the Vault root"
