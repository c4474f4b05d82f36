//go:build tools

// Package tools pins the Kubernetes module so `go build` can build the node components the real-node tests run:
// kubelet, kube-controller-manager and kube-scheduler (the same k8s.io/kubernetes version as the apiserver).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
