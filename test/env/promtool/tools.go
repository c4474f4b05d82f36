//go:build tools

// Package tools pins the Prometheus module so `go build` can build its rule checker and tester (cmd/promtool).
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
