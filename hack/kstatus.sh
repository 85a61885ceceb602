#!/usr/bin/env bash
# Provides the kstatus helper (hack/kstatus/main.go) that the integration tests run to
# read catalogsync objects the way kstatus (sigs.k8s.io/cli-utils) and Flux's
# healthCheckExprs (github.com/fluxcd/pkg/runtime/cel) do.
#
# Prints the helper's path as the last line on stdout; progress goes to stderr.
#
#   export CATALOGSYNC_KSTATUS="$(hack/kstatus.sh)"
#
# If CATALOGSYNC_KSTATUS already names an executable, it is used as is. Otherwise the
# helper is built from the modules pinned in hack/kstatus/go.{mod,sum} into
# ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/kstatus/<cli-utils>-<flux-runtime>/, with a
# stamp of the inputs' hashes, so a second run with unchanged pins takes a second.
set -euo pipefail

log() { printf 'kstatus: %s\n' "$*" >&2; }
die() { printf 'kstatus: error: %s\n' "$*" >&2; exit 1; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/hack/kstatus"

if [[ -n "${CATALOGSYNC_KSTATUS:-}" ]]; then
	[[ -x "$CATALOGSYNC_KSTATUS" ]] || die "CATALOGSYNC_KSTATUS=$CATALOGSYNC_KSTATUS is not executable"
	log "using CATALOGSYNC_KSTATUS=$CATALOGSYNC_KSTATUS"
	printf '%s\n' "$CATALOGSYNC_KSTATUS"
	exit 0
fi

# The version of a required module, read from the pinning go.mod.
module_version() {
	local v
	v="$(awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")"
	[[ -n "$v" ]] || die "cannot find $1 in $src/go.mod"
	printf '%s' "$v"
}

versions="$(module_version sigs.k8s.io/cli-utils)-$(module_version github.com/fluxcd/pkg/runtime)"
cache="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}/kstatus/$versions"
bin="$cache/kstatus"
stamp="$cache/kstatus.stamp"

stamp_of() {
	# The build inputs: the pins, the helper's source and the Go toolchain.
	(cd "$src" && sha256sum go.mod go.sum main.go) | awk '{ print $1 }' | tr '\n' ' '
	go env GOVERSION 2>/dev/null || echo "no-go"
}

mkdir -p "$cache"
if [[ -x "$bin" && -f "$stamp" ]] && ! command -v go >/dev/null; then
	# Without Go the stamp cannot be compared; a built helper is still usable.
	log "go not found; using the previously built $bin"
elif [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$(stamp_of)" ]]; then
	log "up to date in $cache"
else
	command -v go >/dev/null || die "go is required to build the kstatus helper (or set CATALOGSYNC_KSTATUS)"
	log "building into $cache; the first build downloads and compiles its modules (a few minutes)"
	start=$SECONDS
	tmp="$bin.tmp.$$"
	# Build into a temporary name and rename, so an interrupted build never leaves a
	# half-written binary that looks usable.
	if ! (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$tmp" .) >&2; then
		rm -f "$tmp"
		die "building the kstatus helper failed"
	fi
	mv -f "$tmp" "$bin"
	stamp_of >"$stamp"
	log "built in $((SECONDS - start))s"
fi

printf '%s\n' "$bin"
