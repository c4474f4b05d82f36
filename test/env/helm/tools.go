//go:build tools

// Package tools pins Helm so `go build` can build the helm CLI that renders Istio's own istiod chart in the
// real-node tests.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
