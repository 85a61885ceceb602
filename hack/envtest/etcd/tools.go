//go:build tools

// Package tools only records the build dependency on etcd (the root package of
// go.etcd.io/etcd/server/v3 is etcd's main).
package tools

import _ "go.etcd.io/etcd/server/v3"
