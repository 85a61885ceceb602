//go:build tools

// Package tools only records the build dependency on kube-apiserver.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
