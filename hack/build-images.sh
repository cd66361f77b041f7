#!/usr/bin/env bash
# Builds OCI image archives from the locally built upstream binaries, with the
# same in-image layout as the upstream images (binaries in /usr/local/bin, a
# nonroot user), and no registry or Docker engine involved:
#
#   $NESTOR_CACHE/images/<name>-<tag>.oci.tar   (imported by meta-up; a "/" in the
#                                                name becomes "-" in the file name)
#
# Image names are "$LOCAL_IMAGE_REPOSITORY/<name>:<tag>", so a tenant pod spec
# differs from one using registry.k8s.io only by the repository prefix.
# kube-proxy's images also carry Debian's iptables (nf_tables backend), which its
# iptables mode runs (see stage_iptables).
#
# Caching: next to each archive, <archive>.key holds a hash of everything that goes
# into it (this script and oci.sh, the image name, entrypoint, and the content of
# every file put in it). An archive whose key is missing or differs is rebuilt;
# the build is deterministic, so a rebuild from the same inputs gives the same
# digest. Archives from before the keys existed therefore get rebuilt once. When
# the meta cluster's containerd is running, an image it lacks, or holds at another
# digest than the archive's, is imported right away, so a version pinned after the
# cluster started is usable without restarting it. Usage: hack/build-images.sh
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
# shellcheck source=hack/oci.sh
source "$HACK_DIR/oci.sh"

IMAGE_DIR="$NESTOR_CACHE/images"
mkdir -p "$IMAGE_DIR"

# image [--overlay DIR] NAME TAG ENTRYPOINT_JSON FILE... : one image with FILEs in
# /usr/local/bin, and DIR's tree (if given) copied over the base.
image() {
  local overlay=""
  if [[ $1 == --overlay ]]; then overlay=$2; shift 2; fi
  local name=$1 tag=$2 entrypoint=$3
  shift 3
  local out="$IMAGE_DIR/${name//\//-}-$tag.oci.tar" ref="$LOCAL_IMAGE_REPOSITORY/$name:$tag" key
  key=$(image_key "$ref" "$entrypoint" "$overlay" "$@")
  if ! archive_current "$out" "$key"; then
    local rootfs
    rootfs=$(mktemp -d)
    base_rootfs "$rootfs"
    [[ -z $overlay ]] || cp -a "$overlay/." "$rootfs/"
    for file in "$@"; do install -m 0755 "$file" "$rootfs/usr/local/bin/"; done
    write_oci_archive "$rootfs" "$out" "$entrypoint" "" "$ref"
    printf '%s\n' "$key" >"$out.key"
    rm -rf "$rootfs"
    log "image $ref"
  fi
  import_if_missing "$out" "$ref"
}

# image_key REF ENTRYPOINT_JSON OVERLAY_DIR FILE...: a hash of every input of an
# image: the recipe (this script and oci.sh), its name and entrypoint, each file's
# name and content, and the overlay's tree (names, modes, link targets, contents).
image_key() {
  local ref=$1 entrypoint=$2 overlay=$3
  shift 3
  {
    echo "recipe $(cat "$HACK_DIR/build-images.sh" "$HACK_DIR/oci.sh" | sha256sum | cut -d' ' -f1)"
    echo "ref $ref"
    echo "entrypoint $entrypoint"
    local file
    for file in "$@"; do echo "file ${file##*/} $(sha256_of "$file")"; done
    [[ -z $overlay ]] || echo "overlay $(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
      -C "$overlay" -cf - . | sha256sum | cut -d' ' -f1)"
  } | sha256sum | cut -d' ' -f1
}

# archive_current ARCHIVE KEY: ARCHIVE exists and was built from inputs hashing to KEY.
archive_current() {
  [[ -f $1 && -f $1.key && $(cat "$1.key") == "$2" ]]
}

# import_if_missing ARCHIVE REF: imports ARCHIVE when the meta cluster's containerd
# runs and lacks REF, or holds it at another digest (a rebuilt archive); meta-up
# imports every archive into a containerd it starts. Pods already running keep
# their image; containers started afterwards get the new one.
import_if_missing() {
  [[ $CONTAINERD_RUNNING == yes ]] || return 0
  local held
  held=$(image_digest "$2")
  [[ $held != "$(archive_digest "$1")" ]] || return 0
  import_archive "$1"
  log "imported $2 into the meta cluster's containerd${held:+ (replacing $held)}"
}

# stage_iptables DIR: writes into DIR what kube-proxy's iptables mode runs, taken
# from this machine's Debian iptables (1.8.x, nf_tables backend), as the upstream
# image (distroless-iptables) carries it: xtables-nft-multi in /usr/sbin under the
# names kube-proxy execs (iptables, iptables-save, iptables-restore and the ip6tables
# ones; the version probe `iptables --version` reports nf_tables), the -nft names,
# the extension modules libxtables loads for each match and target (comment, mark,
# statistic, conntrack, MASQUERADE, ...), every shared library those need (ldd), the
# loader, and /etc/ethertypes and /etc/protocols. Only nf_tables: no legacy backend,
# so the worker's kernel needs nf_tables with the xt compatibility modules.
stage_iptables() {
  local root=$1 multi=/usr/sbin/xtables-nft-multi xtdir=/usr/lib/x86_64-linux-gnu/xtables
  [[ -x $multi && -d $xtdir ]] || die "$multi or $xtdir missing (apt-get install iptables)"
  mkdir -p "$root/usr/sbin" "$root$xtdir" "$root/run"
  install -m 0755 "$multi" "$root/usr/sbin/xtables-nft-multi"
  local name
  for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
    iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore; do
    ln -s xtables-nft-multi "$root/usr/sbin/$name"
  done
  cp -a "$xtdir/." "$root$xtdir/"
  # The libraries of the binary and of every module, at the paths the loader
  # resolved them to here (/lib/x86_64-linux-gnu is among its default directories).
  local libs lib
  libs=$(ldd "$multi" "$xtdir"/*.so) || die "ldd failed on $multi or its modules"
  grep -q 'not found' <<<"$libs" && die "a library of iptables is missing: $(grep 'not found' <<<"$libs" | sort -u)"
  for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' <<<"$libs" | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    install -m 0755 "$lib" "$root$lib"
  done
  mkdir -p "$root/etc"
  install -m 0644 /etc/ethertypes /etc/protocols "$root/etc/"
  # It must run from that tree alone (no ld.so.cache, nothing of this machine).
  chroot "$root" /usr/sbin/iptables --version | grep -q nf_tables ||
    die "iptables staged in $root does not run by itself"
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
  local k8s k8s_upgrade etcd coredns lpp konnectivity
  k8s=$(upstream_bin_dir kubernetes "$KUBERNETES_VERSION")
  k8s_upgrade=$(upstream_bin_dir kubernetes "$KUBERNETES_UPGRADE_VERSION")
  etcd=$(upstream_bin_dir etcd "$ETCD_VERSION")
  coredns=$(upstream_bin_dir coredns "$COREDNS_VERSION")
  lpp=$(upstream_bin_dir local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION")
  konnectivity=$(upstream_bin_dir konnectivity "$KONNECTIVITY_VERSION")
  for dir in "$k8s" "$k8s_upgrade" "$etcd" "$coredns" "$lpp" "$konnectivity"; do
    [[ -f $dir/.complete ]] || die "$dir is missing: run hack/build-upstream.sh first"
  done
  CONTAINERD_RUNNING=no
  containerd_running && CONTAINERD_RUNNING=yes
  build_pause_binary
  image pause "$PAUSE_VERSION" '["/usr/local/bin/pause"]' "$NESTOR_CACHE/bin/pause-$PAUSE_VERSION/pause"
  local iptables
  iptables=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the directory is local to main
  trap "rm -rf '$iptables'" EXIT
  stage_iptables "$iptables"
  for component in kube-apiserver kube-controller-manager kube-scheduler; do
    image "$component" "$KUBERNETES_VERSION" "[\"/usr/local/bin/$component\"]" "$k8s/$component"
  done
  image --overlay "$iptables" kube-proxy "$KUBERNETES_VERSION" '["/usr/local/bin/kube-proxy"]' "$k8s/kube-proxy"
  # The upgrade target: a tenant control plane (and its kube-proxy addon) at
  # KUBERNETES_UPGRADE_VERSION.
  for component in kube-apiserver kube-controller-manager kube-scheduler; do
    image "$component" "$KUBERNETES_UPGRADE_VERSION" "[\"/usr/local/bin/$component\"]" "$k8s_upgrade/$component"
  done
  image --overlay "$iptables" kube-proxy "$KUBERNETES_UPGRADE_VERSION" '["/usr/local/bin/kube-proxy"]' \
    "$k8s_upgrade/kube-proxy"
  # The upstream etcd image tag carries a "-0" revision suffix (registry.k8s.io/etcd:3.6.5-0).
  image etcd "${ETCD_VERSION#v}-0" '["/usr/local/bin/etcd"]' "$etcd/etcd" "$etcd/etcdctl" "$etcd/etcdutl"
  image coredns "$COREDNS_VERSION" '["/usr/local/bin/coredns"]' "$coredns/coredns"
  image local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" '["/usr/local/bin/local-path-provisioner"]' \
    "$lpp/local-path-provisioner"
  # konnectivity, at upstream's path (registry.k8s.io/kas-network-proxy/proxy-server):
  # the server is the apiserver's sidecar, the agent a tenant addon on every node.
  image kas-network-proxy/proxy-server "$KONNECTIVITY_VERSION" '["/usr/local/bin/proxy-server"]' \
    "$konnectivity/proxy-server"
  image kas-network-proxy/proxy-agent "$KONNECTIVITY_VERSION" '["/usr/local/bin/proxy-agent"]' \
    "$konnectivity/proxy-agent"
  build_busybox_image
  build_tunnel_probe_image
}

# tunnel-probe (hack/tunnel-probe, standard library only): the webhook and aggregated
# API server the tunnel e2e test runs on a worker. Built from the repository's source,
# cached by a hash of it; no module download.
build_tunnel_probe_image() {
  local src="$HACK_DIR/tunnel-probe" hash out
  hash=$(cat "$src/go.mod" "$src/main.go" | sha256sum | cut -c1-16)
  out="$NESTOR_CACHE/bin/tunnel-probe-$hash/tunnel-probe"
  if [[ ! -x $out ]]; then
    mkdir -p "$(dirname "$out")"
    (cd "$src" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
      go build -trimpath -ldflags "-s -w" -o "$out.partial" .) || die "building hack/tunnel-probe failed"
    mv "$out.partial" "$out"
  fi
  image tunnel-probe "$TUNNEL_PROBE_TAG" '["/usr/local/bin/tunnel-probe"]' "$out"
}

# busybox: the local-path provisioner's helper pods and the smoke tests' client
# pods run shell scripts. Debian's busybox-static is one static binary.
build_busybox_image() {
  local out="$IMAGE_DIR/busybox-$BUSYBOX_TAG.oci.tar" ref="$LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG" key
  [[ -x /bin/busybox ]] || die "/bin/busybox missing (apt-get install busybox-static)"
  key=$(image_key "$ref" '["/bin/sh"]' "" /bin/busybox)
  if archive_current "$out" "$key"; then import_if_missing "$out" "$ref"; return; fi
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
  printf '%s\n' "$key" >"$out.key"
  rm -rf "$rootfs"
  log "image $ref"
  import_if_missing "$out" "$ref"
}

main "$@"
