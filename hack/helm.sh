#!/usr/bin/env bash
# Provides the helm binary that lints and renders charts/catalogsync in the
# integration tests (tests/integration/helm.rs) and for users of this repo.
#
# Prints the binary's path as the last line on stdout; progress goes to stderr.
#
#   helm="$(hack/helm.sh)" && "$helm" lint charts/catalogsync
#
# If CATALOGSYNC_HELM points at an executable, it is used as is. Otherwise helm
# is built from the Go module pinned in hack/helm/ into
# ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/helm/<helm-version>/helm, like
# hack/envtest.sh: a stamp records the hashes of the pins, the link flags and the Go
# version, so a second run with unchanged pins only checks the stamp.
set -euo pipefail

tool=helm
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/gobuild.sh
source "$repo/hack/lib/gobuild.sh"
pins="$repo/hack/helm"

if [[ -n "${CATALOGSYNC_HELM:-}" ]]; then
	[[ -x "$CATALOGSYNC_HELM" ]] || die "CATALOGSYNC_HELM=$CATALOGSYNC_HELM is not an executable"
	log "using CATALOGSYNC_HELM=$CATALOGSYNC_HELM"
	printf '%s\n' "$CATALOGSYNC_HELM"
	exit 0
fi

version="$(module_version "$pins/go.mod" helm.sh/helm/v3)"
# Like helm's own Makefile: the Kubernetes version that `helm template` and
# `helm lint` assume (else v1.20, which the chart's kubeVersion refuses) is that of
# the client-go it is built with (v0.35.x -> 1.35).
k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2]; exit }' "$pins/go.mod")"
[[ -n "$k8s_minor" ]] || die "cannot find k8s.io/client-go in $pins/go.mod"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
bin="$cache_root/helm/$version/helm"
go_build_cached "helm $version" "$pins" "$bin" "$ldflags" \
	"install Go, or set CATALOGSYNC_HELM to a helm binary" \
	-ldflags "$ldflags" helm.sh/helm/v3/cmd/helm
printf '%s\n' "$bin"
