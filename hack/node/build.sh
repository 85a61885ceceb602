#!/usr/bin/env bash
# Provides the node components that hack/node.sh runs next to the control plane of
# hack/envtest.sh: kube-controller-manager, kube-scheduler, kubelet and kube-proxy, built
# from the same pinned k8s.io/kubernetes as kube-apiserver (hack/node/components/go.mod;
# a separate module so that the envtest stamp stays valid).
#
# Prints their directory as the last line on stdout; progress goes to stderr. Built into
# ${CATALOGSYNC_CACHE:-~/.cache/catalogsync}/node/<k8s-version>/ with a stamp per binary,
# so a second run with unchanged pins takes a second. Cold: ~6 minutes on 2 cores.
set -euo pipefail

tool=node-build
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/gobuild.sh
source "$repo/hack/lib/gobuild.sh"
pins="$repo/hack/node/components"

k8s_version="$(module_version "$pins/go.mod" k8s.io/kubernetes)"
api_version="$(module_version "$repo/hack/envtest/kube-apiserver/go.mod" k8s.io/kubernetes)"
[[ "$k8s_version" == "$api_version" ]] ||
	die "hack/node/components pins k8s.io/kubernetes $k8s_version but kube-apiserver is $api_version"
cache="$cache_root/node/$k8s_version"
minor="${k8s_version#v*.}"
minor="${minor%%.*}"
major="${k8s_version#v}"
major="${major%%.*}"
# Without them the components report v0.0.0-master, which kubectl and skew checks refuse.
v=k8s.io/component-base/version
ldflags="-s -w -X $v.gitVersion=$k8s_version -X $v.gitMajor=$major -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
hint="install Go, or build the node components on a machine with Go into $cache"
export CGO_ENABLED=0
for cmd in kube-controller-manager kube-scheduler kube-proxy kubelet; do
	go_build_cached "$cmd" "$pins" "$cache/$cmd" "$ldflags" "$hint" \
		-ldflags "$ldflags" "k8s.io/kubernetes/cmd/$cmd"
done
printf '%s\n' "$cache"
