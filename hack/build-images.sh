#!/usr/bin/env bash
# Builds OCI image archives from the locally built upstream binaries, with the
# same in-image layout as the upstream images (binaries in /usr/local/bin, a
# nonroot user), and no registry or Docker engine involved:
#
#   $NESTOR_CACHE/images/<name>-<tag>.oci.tar   (imported by meta-up)
#
# Image names are "$LOCAL_IMAGE_REPOSITORY/<name>:<tag>", so a tenant pod spec
# differs from one using registry.k8s.io only by the repository prefix.
# An archive that exists is not rebuilt. When the meta cluster's containerd is
# running, an image it lacks is imported right away, so a version pinned after
# the cluster started is usable without restarting it. Usage: hack/build-images.sh
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=hack/oci.sh
source "$HACK_DIR/oci.sh"

IMAGE_DIR="$NESTOR_CACHE/images"
mkdir -p "$IMAGE_DIR"

# image NAME TAG ENTRYPOINT_JSON FILE... : one image with FILEs in /usr/local/bin.
image() {
  local name=$1 tag=$2 entrypoint=$3
  shift 3
  local out="$IMAGE_DIR/$name-$tag.oci.tar" ref="$LOCAL_IMAGE_REPOSITORY/$name:$tag"
  if [[ ! -f $out ]]; then
    local rootfs
    rootfs=$(mktemp -d)
    base_rootfs "$rootfs"
    for file in "$@"; do install -m 0755 "$file" "$rootfs/usr/local/bin/"; done
    write_oci_archive "$rootfs" "$out" "$entrypoint" "" "$ref"
    rm -rf "$rootfs"
    log "image $ref"
  fi
  import_if_missing "$out" "$ref"
}

# import_if_missing ARCHIVE REF: imports ARCHIVE when the meta cluster's containerd
# runs and lacks REF (meta-up imports every archive into a containerd it starts).
import_if_missing() {
  [[ $CONTAINERD_RUNNING == yes && -z $(image_digest "$2") ]] || return 0
  import_archive "$1"
  log "imported $2 into the meta cluster's containerd"
}

build_pause_binary() {
  local out="$NESTOR_CACHE/bin/pause-$PAUSE_VERSION/pause"
  [[ -x $out ]] && return
  local src
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  [[ -f $src ]] || die "pause.c not found at $src (run hack/build-upstream.sh kubernetes first)"
  mkdir -p "$(dirname "$out")"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-nestor" -o "$out" "$src"
  strip "$out"
}

main() {
  local k8s k8s_upgrade etcd coredns lpp
  k8s=$(upstream_bin_dir kubernetes "$KUBERNETES_VERSION")
  k8s_upgrade=$(upstream_bin_dir kubernetes "$KUBERNETES_UPGRADE_VERSION")
  etcd=$(upstream_bin_dir etcd "$ETCD_VERSION")
  coredns=$(upstream_bin_dir coredns "$COREDNS_VERSION")
  lpp=$(upstream_bin_dir local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION")
  for dir in "$k8s" "$k8s_upgrade" "$etcd" "$coredns" "$lpp"; do
    [[ -f $dir/.complete ]] || die "$dir is missing: run hack/build-upstream.sh first"
  done
  CONTAINERD_RUNNING=no
  containerd_running && CONTAINERD_RUNNING=yes
  build_pause_binary
  image pause "$PAUSE_VERSION" '["/usr/local/bin/pause"]' "$NESTOR_CACHE/bin/pause-$PAUSE_VERSION/pause"
  for component in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    image "$component" "$KUBERNETES_VERSION" "[\"/usr/local/bin/$component\"]" "$k8s/$component"
  done
  # The upgrade target: a tenant control plane (and its kube-proxy addon) at
  # KUBERNETES_UPGRADE_VERSION.
  for component in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    image "$component" "$KUBERNETES_UPGRADE_VERSION" "[\"/usr/local/bin/$component\"]" "$k8s_upgrade/$component"
  done
  # The upstream etcd image tag carries a "-0" revision suffix (registry.k8s.io/etcd:3.6.5-0).
  image etcd "${ETCD_VERSION#v}-0" '["/usr/local/bin/etcd"]' "$etcd/etcd" "$etcd/etcdctl" "$etcd/etcdutl"
  image coredns "$COREDNS_VERSION" '["/usr/local/bin/coredns"]' "$coredns/coredns"
  image local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" '["/usr/local/bin/local-path-provisioner"]' \
    "$lpp/local-path-provisioner"
  build_busybox_image
}

# busybox: the local-path provisioner's helper pods and the smoke tests' client
# pods run shell scripts. Debian's busybox-static is one static binary.
build_busybox_image() {
  local out="$IMAGE_DIR/busybox-$BUSYBOX_TAG.oci.tar" ref="$LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG"
  if [[ -f $out ]]; then import_if_missing "$out" "$ref"; return; fi
  [[ -x /bin/busybox ]] || die "/bin/busybox missing (apt-get install busybox-static)"
  local rootfs
  rootfs=$(mktemp -d)
  base_rootfs "$rootfs"
  mkdir -p "$rootfs/bin"
  install -m 0755 /bin/busybox "$rootfs/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
  done
  write_oci_archive "$rootfs" "$out" '["/bin/sh"]' "" "$ref"
  rm -rf "$rootfs"
  log "image $ref"
  import_if_missing "$out" "$ref"
}

main "$@"
