//go:build tools

// Package tools only records the build dependency on the helm command.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
