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

log() { printf 'helm: %s\n' "$*" >&2; }
die() { printf 'helm: error: %s\n' "$*" >&2; exit 1; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$repo/hack/helm"

if [[ -n "${CATALOGSYNC_HELM:-}" ]]; then
	[[ -x "$CATALOGSYNC_HELM" ]] || die "CATALOGSYNC_HELM=$CATALOGSYNC_HELM is not an executable"
	log "using CATALOGSYNC_HELM=$CATALOGSYNC_HELM"
	printf '%s\n' "$CATALOGSYNC_HELM"
	exit 0
fi

version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3; exit }' "$pins/go.mod")"
[[ -n "$version" ]] || die "cannot find helm.sh/helm/v3 in $pins/go.mod"
# Like helm's own Makefile: the Kubernetes version that `helm template` and
# `helm lint` assume (else v1.20, which the chart's kubeVersion refuses) is that of
# the client-go it is built with (v0.35.x -> 1.35).
k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2]; exit }' "$pins/go.mod")"
[[ -n "$k8s_minor" ]] || die "cannot find k8s.io/client-go in $pins/go.mod"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
cache="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}/helm/$version"
bin="$cache/helm"
stamp="$cache/helm.stamp"

stamp_of() {
	# The build inputs: the pins and the Go toolchain that compiles them.
	(cd "$pins" && sha256sum go.mod go.sum) | awk '{ print $1 }' | tr '\n' ' '
	printf '%s ' "$ldflags" | sha256sum | awk '{ printf "%s ", $1 }'
	go env GOVERSION 2>/dev/null || echo "no-go"
}

if [[ -x "$bin" && -f "$stamp" ]]; then
	if ! command -v go >/dev/null; then
		# Without Go the stamp cannot be compared; a built binary is still usable.
		log "go not found; using the previously built $bin"
		printf '%s\n' "$bin"
		exit 0
	fi
	if [[ "$(cat "$stamp")" == "$(stamp_of)" ]]; then
		log "helm $version is up to date in $cache"
		printf '%s\n' "$bin"
		exit 0
	fi
fi

command -v go >/dev/null || die "go is required to build helm (install Go, or set CATALOGSYNC_HELM to a helm binary)"
mkdir -p "$cache"
log "building helm $version into $cache; the first build takes a few minutes"
start=$SECONDS
tmp="$bin.tmp.$$"
# Build into a temporary name and rename, so an interrupted build never leaves
# a half-written binary that looks usable.
if ! (cd "$pins" && go build -trimpath -ldflags "$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm) >&2; then
	rm -f "$tmp"
	die "building helm failed"
fi
mv -f "$tmp" "$bin"
stamp_of >"$stamp"
log "built helm $version in $((SECONDS - start))s"
printf '%s\n' "$bin"
