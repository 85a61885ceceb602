#!/usr/bin/env bash
# Writes deploy/argocd/argocd-cm.yaml: deploy/argocd/health.lua under one key per kind.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/deploy/argocd/argocd-cm.yaml"
{
	sed -n '1,/^$/p' "$out" | grep '^#'
	printf 'data:\n'
	for kind in IdentityDomain CatalogApp SyncPolicy SyncRun; do
		printf '  resource.customizations.health.catalogsync.io_%s: |\n' "$kind"
		sed 's/^/    /; s/^    $//' "$repo/deploy/argocd/health.lua"
	done
} >"$out.tmp"
mv "$out.tmp" "$out"
