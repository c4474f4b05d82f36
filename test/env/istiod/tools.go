//go:build tools

// Package tools pins the Istio module so `go build` can build pilot-discovery (istiod).
package tools

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
