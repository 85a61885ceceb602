#!/usr/bin/env bash
# Install (idempotently) the scimmy peer's node modules from package-lock.json into the
# shared cache, and print the node_modules directory as the last stdout line (the
# NODE_PATH for hack/scimmy/server.js). Re-runs are a stamp comparison, so fast.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}"
lock="$here/package-lock.json"
want="$(cat "$here/package.json" "$lock" | sha256sum | cut -d' ' -f1)"
dir="$cache/scimmy-${want:0:12}"
stamp="$dir/.lock.sha256"
mkdir -p "$cache"
exec 9>"$cache/scimmy.lock"
flock 9
if [[ ! -d "$dir/node_modules" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    command -v npm >/dev/null || { echo "npm is required for the scimmy peer (Node.js >= 18)" >&2; exit 1; }
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$here/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$stamp"
fi
echo "$dir/node_modules"
