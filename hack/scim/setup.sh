#!/usr/bin/env bash
# Create (idempotently) the virtualenv serving the test SCIM server, and print
# its python as the last stdout line. Re-runs are a stamp comparison, so fast.
# An argument names another requirements file (hack/canaille/requirements.txt): its own venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# Shared by every clone on this machine, so a fresh clone reuses what an earlier one built.
cache="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}"
req="$(realpath "${1:-$here/requirements.txt}")"
want="$(sha256sum "$req" | cut -d' ' -f1)"
# One venv per set of requirements: a checkout with other requirements never rebuilds a
# venv that another checkout's tests are using.
venv="$cache/venv-${want:0:12}"
stamp="$venv/.requirements.sha256"
mkdir -p "$cache"
# Parallel test processes may call this at once: one builds, the others wait.
exec 9>"$cache/venv.lock"
flock 9

if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    python="${PYTHON:-$(command -v python3)}"
    # A half-built venv from an interrupted run is rebuilt from scratch.
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
