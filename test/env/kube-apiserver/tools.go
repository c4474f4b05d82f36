//go:build tools

// Package tools pins the Kubernetes module so `go build` can build kube-apiserver.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
