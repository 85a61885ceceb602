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

tool=kstatus
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/gobuild.sh
source "$repo/hack/lib/gobuild.sh"
src="$repo/hack/kstatus"

if [[ -n "${CATALOGSYNC_KSTATUS:-}" ]]; then
	[[ -x "$CATALOGSYNC_KSTATUS" ]] || die "CATALOGSYNC_KSTATUS=$CATALOGSYNC_KSTATUS is not executable"
	log "using CATALOGSYNC_KSTATUS=$CATALOGSYNC_KSTATUS"
	printf '%s\n' "$CATALOGSYNC_KSTATUS"
	exit 0
fi

versions="$(module_version "$src/go.mod" sigs.k8s.io/cli-utils)-$(module_version "$src/go.mod" github.com/fluxcd/pkg/runtime)"
bin="$cache_root/kstatus/$versions/kstatus"
go_build_cached "the kstatus helper" "$src" "$bin" "" "or set CATALOGSYNC_KSTATUS" \
	-ldflags "-s -w" .
printf '%s\n' "$bin"
