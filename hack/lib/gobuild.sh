# Sourced by the scripts that provide a Go-built tool (envtest.sh, helm.sh, kstatus.sh,
# promtool.sh): build it once from the modules pinned in hack/<tool>/, cache it, and
# only compare a stamp on later runs. The caller sets $tool, the prefix of its messages.

log() { printf '%s: %s\n' "$tool" "$*" >&2; }
die() { printf '%s: error: %s\n' "$tool" "$*" >&2; exit 1; }

# Where every Go-built tool is cached, one folder per tool and pinned version.
cache_root="${CATALOGSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalogsync}"

# module_version GOMOD MODULE: the version GOMOD requires of MODULE, in a one-line
# `require` or a `require ( … )` block.
module_version() {
	local v
	v="$(awk -v m="$2" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1")"
	[[ -n "$v" ]] || die "cannot find $2 in $1"
	printf '%s' "$v"
}

# The build inputs of a tool: its pins and sources in DIR, EXTRA (flags that change
# the binary) and the Go toolchain.
build_stamp() {
	(cd "$1" && sha256sum go.mod go.sum ./*.go) | awk '{ print $1 }' | tr '\n' ' '
	printf '%s ' "$2" | sha256sum | awk '{ printf "%s ", $1 }'
	go env GOVERSION
}

# go_build_cached NAME DIR BIN EXTRA HINT GO_BUILD_ARGS...: BIN, built in DIR with
# `go build GO_BUILD_ARGS` unless its stamp says the inputs are unchanged. Without Go,
# a BIN built before is used as is; HINT says what else to do when there is none.
go_build_cached() {
	local name="$1" dir="$2" bin="$3" extra="$4" hint="$5"
	shift 5
	local stamp="$bin.stamp"
	if ! command -v go >/dev/null; then
		[[ -x "$bin" && -f "$stamp" ]] || die "go is required to build $name ($hint)"
		# Without Go the stamp cannot be compared; a built binary is still usable.
		log "go not found; using the previously built $bin"
		return
	fi
	local want
	want="$(build_stamp "$dir" "$extra")"
	if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		log "$name is up to date in $(dirname "$bin")"
		return
	fi
	log "building $name into $(dirname "$bin"); the first build takes several minutes"
	mkdir -p "$(dirname "$bin")"
	local start=$SECONDS tmp="$bin.tmp.$$"
	# Build into a temporary name and rename, so an interrupted build never leaves a
	# half-written binary that looks usable.
	if ! (cd "$dir" && go build -trimpath -o "$tmp" "$@") >&2; then
		rm -f "$tmp"
		die "building $name failed"
	fi
	mv -f "$tmp" "$bin"
	printf '%s\n' "$want" >"$stamp"
	log "built $name in $((SECONDS - start))s"
}
