//go:build tools

// Package tools pins the Istio module so `go build` can build pilot-agent, Istio's workload agent, from the same
// istio.io/istio commit as istiod (test/env/istiod): the mesh-CA test runs the two together.
package tools

import _ "istio.io/istio/pilot/cmd/pilot-agent"
