#!/usr/bin/env bash
# Builds the catalogsync image's contents (and, for the local node, the image itself)
# without pulling anything:
#
#   hack/image.sh                 # static release binary + target/image/ (the Dockerfile's context)
#   docker build -f Dockerfile -t catalogsync:0.1.0 target/image
#   hack/image.sh --archive OUT   # also OUT: a docker-save archive of the catalogsync image
#                                 # (tag $CATALOGSYNC_IMAGE) and the node's pause image
#                                 # ($CATALOGSYNC_PAUSE_IMAGE), for `ctr images import`
#
# The binary is the release profile without the dev feature, linked statically (glibc,
# +crt-static) so that the image needs no libc. Prints the archive's path (or the
# context's) as the last line on stdout; progress goes to stderr.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive=""
if [[ "${1:-}" == "--archive" ]]; then
	archive="${2:?--archive needs a path}"
fi
image="${CATALOGSYNC_IMAGE:-catalogsync.local/catalogsync:test}"
pause_image="${CATALOGSYNC_PAUSE_IMAGE:-catalogsync.local/pause:1}"
tool=image
# shellcheck source=lib/gobuild.sh
source "$repo/hack/lib/gobuild.sh" # log, and the cache every built tool shares

triple=x86_64-unknown-linux-gnu
# Run from `cargo test` (the node tests), the environment carries the test crate's
# CARGO_PKG_* and friends; ring's build script reruns when they change, and everything
# above ring would be rebuilt each time the caller changes.
for v in $(compgen -e); do
	case "$v" in
	CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_BIN_* | CARGO_CRATE_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR) unset "$v" ;;
	esac
done
# Its own build directory, cached beside the Go-built tools: a fresh clone (CI) then
# recompiles only catalogsync, not the ~300 dependencies in the static release profile.
build_dir="${CATALOGSYNC_IMAGE_TARGET:-$cache_root/image-target}"
log "building the static release binary (in $build_dir)"
# --target keeps these RUSTFLAGS away from the host build of target/release.
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$build_dir" \
	cargo build --locked --release --target "$triple" --bin catalogsync >&2)
bin="$build_dir/$triple/release/catalogsync"
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
	echo "image: $bin is dynamically linked" >&2
	exit 1
fi

ctx="$repo/target/image"
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/pause"
install -m 0755 "$bin" "$ctx/rootfs/usr/local/bin/catalogsync"
# The system's CA bundle: SCIM endpoints are HTTPS with public certificates.
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
	>"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
cp "$repo/Dockerfile" "$ctx/Dockerfile"
log "context ready: $ctx ($(du -sh "$ctx/rootfs" | cut -f1))"
if [[ -z "$archive" ]]; then
	printf '%s\n' "$ctx"
	exit 0
fi

gcc -static -Os -s -o "$ctx/pause/pause" "$repo/hack/image/pause.c"
mkdir -p "$(dirname "$archive")"
python3 "$repo/hack/image/archive.py" "$archive" \
	"$repo/Dockerfile" "$ctx" "$image" \
	"$repo/hack/image/pause.Dockerfile" "$ctx/pause" "$pause_image"
log "archive ready: $archive ($image, $pause_image; $(du -h "$archive" | cut -f1))"
printf '%s\n' "$archive"
