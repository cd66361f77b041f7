#!/usr/bin/env bash
# Builds the operator image from a release build of the `nestor` binary, with no
# registry or Docker engine involved, and imports it into the meta cluster's
# containerd when that is running:
#
#   $NESTOR_CACHE/images/nestor-operator-dev.oci.tar
#     nestor.local/nestor-operator:dev            what deploy/operator.yaml names
#     nestor.local/nestor-operator:sha-<12 hex>   the binary's sha256 prefix: set it
#                                                 on the Deployment to roll new code
#
# The image holds the binary, the shared libraries `ldd` reports (glibc is linked
# dynamically; the dynamic loader included), etcdutl (static, from the upstream build of
# ETCD_VERSION: `nestor etcd-restore` runs `etcdutl snapshot restore`, and the etcd image has
# no shell to run it in), /etc/passwd with nonroot (65532), the user it runs as, and the
# host's CA bundle (/etc/ssl/certs/ca-certificates.crt, when it has one): the operator itself
# only talks to the meta apiserver (service-account CA) and tenant apiservers (tenant CA),
# but the backup agent and the restore verify an https:// S3 endpoint against it.
#
# Re-running is cheap: cargo rebuilds only on changes, and the archive and the
# import are skipped when the binary's sha256 did not change.
#
# NESTOR_OPERATOR_BINARY=path packs that binary instead of running cargo (debug
# symbols stripped in the image). Tests use it with the binary cargo built for
# them: a `cargo build` inside `cargo test` would wait forever for the build
# directory lock that the running `cargo test` holds.
# Prints the sha-tagged image reference on stdout (logs go to stderr), so
#   image=$(hack/build-operator-image.sh)
# is all a caller needs. Usage: hack/build-operator-image.sh
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=hack/oci.sh
source "$HACK_DIR/oci.sh"

IMAGE_NAME="$LOCAL_IMAGE_REPOSITORY/nestor-operator"
IMAGE_DIR="$NESTOR_CACHE/images"
# One archive, overwritten on every change: meta-up imports every archive in
# IMAGE_DIR, so stale per-sha archives would re-point :dev at old code on restart.
ARCHIVE="$IMAGE_DIR/nestor-operator-dev.oci.tar"
STAMP="$ARCHIVE.sha256"


build_binary() {
  local target_dir=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
  log "cargo build --release -p nestor (target dir $target_dir)"
  (cd "$REPO_ROOT" && cargo build --release --locked -p nestor >&2)
  BINARY="$target_dir/release/nestor"
  [[ -x $BINARY ]] || die "cargo did not produce $BINARY"
}

# copy_shared_libraries BINARY ROOTFS: every library the dynamic loader resolves,
# and the loader itself, at the same path (symlinks dereferenced: the rootfs has
# no merged /usr, so /lib/x86_64-linux-gnu is a real directory there).
copy_shared_libraries() {
  local binary=$1 rootfs=$2 line library
  local -a libraries=()
  while read -r line; do
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)";
    # "linux-vdso.so.1 (0x...)" lives in the kernel and has no path.
    case $line in
      *'=> not found'*) die "$binary needs a library the host lacks: $line" ;;
      *'=> /'*) library=${line#*=> }; libraries+=("${library%% (*}") ;;
      /*) libraries+=("${line%% (*}") ;;
    esac
  done < <(ldd "$binary")
  [[ ${#libraries[@]} -gt 0 ]] || die "ldd reports no shared libraries for $binary: is it static?"
  for library in "${libraries[@]}"; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
  done
}

build_archive() {
  local sha_ref=$1 rootfs
  rootfs=$(mktemp -d)
  base_rootfs "$rootfs"
  # Release builds are stripped already (Cargo.toml); a debug build's symbols are most of its size.
  strip --strip-all -o "$rootfs/usr/local/bin/nestor" "$BINARY"
  chmod 0755 "$rootfs/usr/local/bin/nestor"
  cp "$ETCDUTL" "$rootfs/usr/local/bin/etcdutl"
  chmod 0755 "$rootfs/usr/local/bin/etcdutl"
  if [[ -f $CA_BUNDLE ]]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  copy_shared_libraries "$BINARY" "$rootfs"
  # The binary must start inside the image alone, not only on this host.
  if [[ $(id -u) == 0 ]] && ! chroot "$rootfs" /usr/local/bin/nestor --version >/dev/null; then
    rm -rf "$rootfs"
    die "the image's binary does not start in its own root filesystem (missing library?)"
  fi
  mkdir -p "$IMAGE_DIR"
  write_oci_archive "$rootfs" "$ARCHIVE" '["/usr/local/bin/nestor","operator"]' 65532:65532 "$IMAGE_NAME:dev" "$sha_ref"
  rm -rf "$rootfs"
  log "image $IMAGE_NAME:dev = $sha_ref ($(( $(stat -c %s "$ARCHIVE") / 1024 / 1024 )) MiB archive)"
}

main() {
  if [[ -n ${NESTOR_OPERATOR_BINARY:-} ]]; then
    BINARY=$NESTOR_OPERATOR_BINARY
    [[ -x $BINARY ]] || die "NESTOR_OPERATOR_BINARY=$BINARY is not an executable"
    log "packing $BINARY (NESTOR_OPERATOR_BINARY): no cargo build"
  else
    build_binary
  fi
  ETCDUTL=$(etcd_bin etcdutl)
  [[ -x $ETCDUTL ]] || die "$ETCDUTL is missing: run hack/build-upstream.sh (the image bundles etcdutl for restores)"
  local binary_sha sha_ref
  CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
  # The image changes with etcdutl and the CA bundle too.
  binary_sha=$(cat "$BINARY" "$ETCDUTL" "$CA_BUNDLE" 2>/dev/null | sha256sum | cut -d' ' -f1)
  sha_ref="$IMAGE_NAME:sha-${binary_sha:0:12}"
  if [[ -f $ARCHIVE && $(cat "$STAMP" 2>/dev/null) == "$binary_sha" ]]; then
    log "image $sha_ref is up to date"
  else
    build_archive "$sha_ref"
    echo "$binary_sha" >"$STAMP"
  fi
  if containerd_running; then
    # :dev may still point at an older build; the sha tag only ever names this one.
    local imported
    imported=$(image_digest "$sha_ref")
    if [[ -n $imported && $(image_digest "$IMAGE_NAME:dev") == "$imported" ]]; then
      log "already imported into the meta cluster's containerd"
    else
      import_archive "$ARCHIVE"
      log "imported $IMAGE_NAME:dev and $sha_ref into the meta cluster's containerd"
    fi
  else
    log "meta cluster containerd not running: archive written, not imported (meta-up imports it)"
  fi
  echo "$sha_ref"
}

main "$@"
