//go:build tools

// Package tools pins the OpenBao server module so `go build` can build its main package.
package tools

import _ "github.com/openbao/openbao"
