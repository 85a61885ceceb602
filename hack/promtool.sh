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

tool=promtool
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/gobuild.sh
source "$repo/hack/lib/gobuild.sh"
pins="$repo/hack/promtool"
module=github.com/prometheus/prometheus

if [[ -n "${PROMTOOL:-}" ]]; then
	[[ -x "$PROMTOOL" ]] || die "PROMTOOL=$PROMTOOL is not executable"
	log "using PROMTOOL=$PROMTOOL"
	printf '%s\n' "$PROMTOOL"
	exit 0
fi

version="$(module_version "$pins/go.mod" "$module")"
bin="$cache_root/promtool/$version/promtool"
# Rules need no service discovery: leaving out its cloud SDKs cuts the build to a
# fraction.
tags=remove_all_sd
go_build_cached promtool "$pins" "$bin" "tags=$tags" \
	"install Go, or set PROMTOOL to a promtool binary" \
	-tags "$tags" -ldflags "-s -w" "$module/cmd/promtool"
printf '%s\n' "$bin"
