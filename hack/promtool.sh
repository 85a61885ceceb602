#!/usr/bin/env bash
# Provides promtool, which the integration tests run to check and unit-test the
# alerting rules of deploy/monitoring.
#
# Prints the binary's path as the last line on stdout; progress goes to stderr.
#
#   PROMTOOL="$(hack/promtool.sh)"
#
# If PROMTOOL already points at an executable, it is used as is. Otherwise
# promtool is built from the Go module pinned in hack/promtool into
# ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/promtool/<version>/, like
# hack/envtest.sh: a stamp of the pins and the Go toolchain makes a second run
# with unchanged pins take a second.
set -euo pipefail

log() { printf 'promtool: %s\n' "$*" >&2; }
die() { printf 'promtool: error: %s\n' "$*" >&2; exit 1; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$repo/hack/promtool"
module=github.com/prometheus/prometheus

if [[ -n "${PROMTOOL:-}" ]]; then
	[[ -x "$PROMTOOL" ]] || die "PROMTOOL=$PROMTOOL is not executable"
	log "using PROMTOOL=$PROMTOOL"
	printf '%s\n' "$PROMTOOL"
	exit 0
fi

version="$(awk -v m="$module" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$pins/go.mod")"
[[ -n "$version" ]] || die "cannot find $module in $pins/go.mod"
cache="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}/promtool/$version"
bin="$cache/promtool"
stamp="$cache/promtool.stamp"
# Rules need no service discovery: leaving out its cloud SDKs cuts the build to a
# fraction.
tags=remove_all_sd

stamp_of() {
	# The build inputs: the pins and the Go toolchain that compiles them.
	(cd "$pins" && sha256sum go.mod go.sum) | awk '{ print $1 }' | tr '\n' ' '
	printf 'tags=%s ' "$tags"
	go env GOVERSION 2>/dev/null || echo "no-go"
}

mkdir -p "$cache"
if [[ -x "$bin" && -f "$stamp" ]] && ! command -v go >/dev/null; then
	# Without Go the stamp cannot be compared; a built binary is still usable.
	log "go not found; using the previously built $bin"
elif [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$(stamp_of)" ]]; then
	log "promtool is up to date in $cache"
else
	command -v go >/dev/null || die "go is required to build promtool (install Go, or set PROMTOOL to a promtool binary)"
	log "building promtool ($module $version) into $cache; the first build takes several minutes"
	start=$SECONDS
	tmp="$bin.tmp.$$"
	# Build into a temporary name and rename, so an interrupted build never
	# leaves a half-written binary that looks usable.
	if ! (cd "$pins" && go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$tmp" "$module/cmd/promtool") >&2; then
		rm -f "$tmp"
		die "building promtool failed"
	fi
	mv -f "$tmp" "$bin"
	stamp_of >"$stamp"
	log "built promtool in $((SECONDS - start))s"
fi

printf '%s\n' "$bin"
