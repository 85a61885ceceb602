//go:build tools

// Package tools only records the build dependency on promtool, which the
// integration tests run to check and unit-test deploy/monitoring's rules.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
