# OCI image archives without a registry or a Docker engine: one uncompressed
# layer, a config, a manifest and an index in an OCI image layout tarball that
# `ctr images import` reads, and their import into the meta cluster's containerd.
# Sourced (after lib.sh) by build-images.sh and build-operator-image.sh, never run.
# shellcheck shell=bash

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# base_rootfs DIR: the files every Nestor image carries (distroless-like:
# passwd and group with root and nonroot 65532, a sticky /tmp).
base_rootfs() {
  local root=$1
  mkdir -p "$root/etc" "$root/tmp" "$root/usr/local/bin" "$root/var/run"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}

# write_oci_archive ROOTFS OUT ENTRYPOINT_JSON USER REF...: packs ROOTFS as one
# layer into OUT, an image named by every REF (one index entry each, same
# manifest). USER may be empty (the image then runs as root unless the pod
# says otherwise). Timestamps and owners are fixed, so the same files give the
# same image digest.
write_oci_archive() {
  local rootfs=$1 out=$2 entrypoint=$3 user=$4
  shift 4
  local layout
  layout=$(mktemp -d)
  mkdir -p "$layout/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$layout/layer.tar" .
  local layer_digest layer_size
  layer_digest=$(sha256_of "$layout/layer.tar")
  layer_size=$(stat -c %s "$layout/layer.tar")
  mv "$layout/layer.tar" "$layout/blobs/sha256/$layer_digest"
  local user_field=""
  [[ -n $user ]] && user_field="\"User\":\"$user\","
  cat >"$layout/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{$user_field"Env":["PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":$entrypoint,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_digest"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"nestor hack/oci.sh"}]}
JSON
  local config_digest config_size
  config_digest=$(sha256_of "$layout/config.json")
  config_size=$(stat -c %s "$layout/config.json")
  mv "$layout/config.json" "$layout/blobs/sha256/$config_digest"
  cat >"$layout/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
  local manifest_digest manifest_size
  manifest_digest=$(sha256_of "$layout/manifest.json")
  manifest_size=$(stat -c %s "$layout/manifest.json")
  mv "$layout/manifest.json" "$layout/blobs/sha256/$manifest_digest"
  printf '{"imageLayoutVersion":"1.0.0"}\n' >"$layout/oci-layout"
  local entries="" ref
  for ref in "$@"; do
    [[ -n $entries ]] && entries+=","
    entries+="{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_digest\",\"size\":$manifest_size,\"annotations\":{\"io.containerd.image.name\":\"$ref\",\"org.opencontainers.image.ref.name\":\"${ref##*:}\"}}"
  done
  printf '{"schemaVersion":2,"manifests":[%s]}\n' "$entries" >"$layout/index.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out.partial" oci-layout index.json blobs
  mv "$out.partial" "$out"
  rm -rf "$layout"
}

# archive_digest ARCHIVE: the manifest digest an archive of write_oci_archive names.
archive_digest() {
  tar -xOf "$1" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -1 | cut -d'"' -f4
}

# containerd_running: the meta cluster's containerd answers on its socket.
containerd_running() {
  [[ -S $META_CONTAINERD_SOCKET ]] && ctr --address "$META_CONTAINERD_SOCKET" version >/dev/null 2>&1
}

# image_digest REF: the manifest digest containerd holds under REF, empty when absent.
image_digest() {
  ctr --address "$META_CONTAINERD_SOCKET" -n k8s.io images ls "name==$1" 2>/dev/null | awk 'NR > 1 { print $3 }'
}

# import_archive ARCHIVE: imports ARCHIVE into the running meta cluster's containerd
# (namespace k8s.io, where the kubelet looks).
import_archive() {
  ctr --address "$META_CONTAINERD_SOCKET" -n k8s.io images import --no-unpack=false "$1" >/dev/null
}
