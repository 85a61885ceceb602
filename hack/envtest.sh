#!/usr/bin/env bash
# Provides the kube-apiserver and etcd binaries that the integration tests run
# as a local control plane, in a KUBEBUILDER_ASSETS-style directory.
#
# Prints that directory as the last line on stdout; progress goes to stderr.
#
#   export KUBEBUILDER_ASSETS="$(hack/envtest.sh)"
#
# If KUBEBUILDER_ASSETS already points at a directory with executable
# kube-apiserver and etcd, it is used as is. Otherwise the binaries are built
# from the Go modules pinned in hack/envtest/{kube-apiserver,etcd} into
# ${CATALOGSYNC_CACHE:-<repo>/.cache}/envtest/<k8s-version>-<etcd-version>/.
# A stamp file records the hashes of the pinning go.mod/go.sum files, so a
# second run with unchanged pins only checks the stamp and takes a second.
set -euo pipefail

log() { printf 'envtest: %s\n' "$*" >&2; }
die() { printf 'envtest: error: %s\n' "$*" >&2; exit 1; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$repo/hack/envtest"

is_assets_dir() {
	[[ -n "$1" && -x "$1/kube-apiserver" && -x "$1/etcd" ]]
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
	if is_assets_dir "$KUBEBUILDER_ASSETS"; then
		log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
		printf '%s\n' "$KUBEBUILDER_ASSETS"
		exit 0
	fi
	log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks executable kube-apiserver and etcd; building the pinned ones"
fi

# The version of a required module, read from the pinning go.mod.
module_version() {
	local gomod="$1" module="$2" v
	v="$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$gomod")"
	[[ -n "$v" ]] || die "cannot find $module in $gomod"
	printf '%s' "$v"
}

k8s_version="$(module_version "$pins/kube-apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(module_version "$pins/etcd/go.mod" go.etcd.io/etcd/server/v3)"
cache="${CATALOGSYNC_CACHE:-$repo/.cache}/envtest/${k8s_version}-${etcd_version}"

# name, module directory, main package
targets=(
	"kube-apiserver $pins/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver"
	"etcd $pins/etcd go.etcd.io/etcd/server/v3"
)

stamp_of() {
	# The build inputs: the pins and the Go toolchain that compiles them.
	(cd "$2" && sha256sum go.mod go.sum) | awk '{ print $1 }' | tr '\n' ' '
	go env GOVERSION 2>/dev/null || echo "no-go"
}

mkdir -p "$cache"
for t in "${targets[@]}"; do
	read -r name dir pkg <<<"$t"
	bin="$cache/$name"
	stamp="$cache/$name.stamp"
	if [[ -x "$bin" && -f "$stamp" ]] && command -v go >/dev/null && [[ "$(cat "$stamp")" == "$(stamp_of "$name" "$dir")" ]]; then
		log "$name is up to date in $cache"
		continue
	fi
	if [[ -x "$bin" && -f "$stamp" ]] && ! command -v go >/dev/null; then
		# Without Go the stamp cannot be compared; a built binary is still usable.
		log "go not found; using the previously built $bin"
		continue
	fi
	command -v go >/dev/null || die "go is required to build $name (install Go, or set KUBEBUILDER_ASSETS to a directory with kube-apiserver and etcd)"
	log "building $name ($pkg) into $cache; the first build takes several minutes"
	start=$SECONDS
	tmp="$bin.tmp.$$"
	# Build into a temporary name and rename, so an interrupted build never
	# leaves a half-written binary that looks usable.
	if ! (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$tmp" "$pkg") >&2; then
		rm -f "$tmp"
		die "building $name failed"
	fi
	mv -f "$tmp" "$bin"
	stamp_of "$name" "$dir" >"$stamp"
	log "built $name in $((SECONDS - start))s"
done

printf '%s\n' "$cache"
