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
# ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/envtest/<k8s-version>-<etcd-version>/.
# A stamp file records the hashes of the pinning go.mod/go.sum files, so a
# second run with unchanged pins only checks the stamp and takes a second.
set -euo pipefail

tool=envtest
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/gobuild.sh
source "$repo/hack/lib/gobuild.sh"
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

k8s_version="$(module_version "$pins/kube-apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(module_version "$pins/etcd/go.mod" go.etcd.io/etcd/server/v3)"
cache="$cache_root/envtest/${k8s_version}-${etcd_version}"
hint="install Go, or set KUBEBUILDER_ASSETS to a directory with kube-apiserver and etcd"
go_build_cached kube-apiserver "$pins/kube-apiserver" "$cache/kube-apiserver" "" "$hint" \
	-ldflags "-s -w" k8s.io/kubernetes/cmd/kube-apiserver
go_build_cached etcd "$pins/etcd" "$cache/etcd" "" "$hint" \
	-ldflags "-s -w" go.etcd.io/etcd/server/v3
printf '%s\n' "$cache"
