//go:build tools

// Package tools pins the zlint module so `go build` can build its command-line linter (cmd/zlint).
package tools

import _ "github.com/zmap/zlint/v3/cmd/zlint"
