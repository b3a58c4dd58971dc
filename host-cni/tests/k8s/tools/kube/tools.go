//go:build tools

// The Kubernetes components the test command runs, pinned by this module's go.mod: the real
// kube-apiserver and kubectl from k8s.io/kubernetes (its staging modules replaced by their
// published v0.37.x releases), and etcd (./cmd/etcd) from the etcd server module the API
// server itself pins. Built by ../build.sh; never part of the product.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
