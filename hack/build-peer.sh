#!/usr/bin/env bash
# Builds what the peer benchmark (bench/peer.sh) compares Nestor with, from the Go module
# proxy and this machine only, the way the upstream binaries and images are built:
#   - Kamaji KAMAJI_VERSION (its manager binary, and its chart kept from the module) and Helm
#     HELM_VERSION, which renders that chart (hack/build-upstream.sh kamaji helm);
#   - kube-apiserver, kube-controller-manager and kube-scheduler at PEER_KUBERNETES_VERSION, the
#     newest Kubernetes that Kamaji release accepts, and etcd PEER_ETCD_VERSION
#     (hack/build-upstream.sh kubernetes-peer etcd-peer);
#   - OCI image archives of them in $NESTOR_CACHE/images, keyed like hack/build-images.sh's (a
#     hash of this script, oci.sh, the name, entrypoint and every file), imported into the meta
#     cluster's containerd when it runs and lacks them. No registry: a Kamaji tenant names
#     `nestor.local` in spec.controlPlane.deployment.registrySettings, as a Nestor tenant does
#     in spec.imageRepository.
# Usage: hack/build-peer.sh. Nothing here is part of `make test`.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=hack/oci.sh
source "$HACK_DIR/oci.sh"

IMAGE_DIR="$NESTOR_CACHE/images"
mkdir -p "$IMAGE_DIR"

# peer_image NAME TAG ENTRYPOINT_JSON USER DIR FILE...: one image with FILEs in DIR.
peer_image() {
  local name=$1 tag=$2 entrypoint=$3 user=$4 dir=$5
  shift 5
  local out="$IMAGE_DIR/$name-$tag.oci.tar" ref="$LOCAL_IMAGE_REPOSITORY/$name:$tag" key file
  key=$({
    echo "recipe $(cat "$HACK_DIR/build-peer.sh" "$HACK_DIR/oci.sh" | sha256sum | cut -d' ' -f1)"
    echo "ref $ref entrypoint $entrypoint user $user dir $dir"
    for file in "$@"; do echo "file ${file##*/} $(sha256_of "$file")"; done
  } | sha256sum | cut -d' ' -f1)
  if [[ ! -f $out || ! -f $out.key || $(cat "$out.key") != "$key" ]]; then
    local rootfs
    rootfs=$(mktemp -d)
    base_rootfs "$rootfs"
    mkdir -p "$rootfs$dir"
    for file in "$@"; do install -m 0755 "$file" "$rootfs$dir/"; done
    write_oci_archive "$rootfs" "$out" "$entrypoint" "$user" "$ref"
    printf '%s\n' "$key" >"$out.key"
    rm -rf "$rootfs"
    log "image $ref"
  fi
  if containerd_running && [[ $(image_digest "$ref") != "$(archive_digest "$out")" ]]; then
    import_archive "$out"
    log "imported $ref into the meta cluster's containerd"
  fi
}

"$HACK_DIR/build-upstream.sh" kamaji helm kubernetes-peer etcd-peer

kamaji=$(upstream_bin_dir kamaji "$KAMAJI_VERSION")
k8s=$(upstream_bin_dir kubernetes "$PEER_KUBERNETES_VERSION")
etcd=$(upstream_bin_dir etcd "$PEER_ETCD_VERSION")
# Kamaji's own image is distroless/static with /kamaji as its entrypoint and user 65532 (its
# Dockerfile); its chart runs `command: [/kamaji]`, so the binary sits at the root here too.
peer_image kamaji "$KAMAJI_VERSION" '["/kamaji"]' 65532:65532 / "$kamaji/kamaji"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
  peer_image "$component" "$PEER_KUBERNETES_VERSION" "[\"/usr/local/bin/$component\"]" "" /usr/local/bin "$k8s/$component"
done
peer_image etcd "${PEER_ETCD_VERSION#v}-0" '["/usr/local/bin/etcd"]' "" /usr/local/bin \
  "$etcd/etcd" "$etcd/etcdctl" "$etcd/etcdutl"
log "peer images ready: kamaji $KAMAJI_VERSION, Kubernetes $PEER_KUBERNETES_VERSION, etcd $PEER_ETCD_VERSION"
