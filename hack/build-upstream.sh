#!/usr/bin/env bash
# Builds the pinned upstream binaries (hack/versions.env) with this machine's Go
# through the Go module proxy, into a cache outside the repository keyed by
# component and version:
#
#   $NESTOR_CACHE/bin/<component>-<version>/<binary>
#
# A component whose directory holds a `.complete` marker is not rebuilt, so a
# second run is a no-op. Usage: hack/build-upstream.sh [component ...]
# (components: kubernetes kubernetes-upgrade etcd coredns local-path-provisioner konnectivity kwok
# kubernetes-peer etcd-peer kamaji helm versitygw; default all but kwok and the peer four, which
# only the benchmarks use: bench/scale.sh and hack/build-peer.sh build them on demand, and
# versitygw, the local S3 store, which hack/s3-up.sh builds on demand). kubernetes-upgrade is
# KUBERNETES_UPGRADE_VERSION's kube-apiserver and kube-controller-manager only: a second tenant
# version to upgrade to.
#
# Why wrapper modules: k8s.io/kubernetes requires its staging modules at v0.0.0
# and replaces them with ./staging/src paths, and etcd's server module replaces
# its siblings with ../ paths, so `go install pkg@version` is refused for both.
# A tiny module that requires the real module and replaces each sibling with
# its published version builds the same sources.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false
export GOTOOLCHAIN=local
GO_BUILD_PARALLELISM=${GO_BUILD_PARALLELISM:-$(nproc)}

# build_in_wrapper NAME VERSION LDFLAGS PACKAGE... : builds the packages from the
# wrapper module in $src (go.mod already written) into the cache.
build_in_wrapper() {
  local name=$1 version=$2 ldflags=$3
  shift 3
  local out src stamp
  out=$(upstream_bin_dir "$name" "$version")
  src="$NESTOR_CACHE/src/$name-$version"
  local packages=("$@")
  (
    cd "$src"
    log "resolving modules for $name $version (go get, go mod tidy)"
    # Each package at the pinned version: a bare `go get -tool` would take the newest.
    go get -tool "${packages[@]/%/@$version}" >resolve.log 2>&1 && go mod tidy >>resolve.log 2>&1 \
      || { cat resolve.log >&2; die "$name $version: resolving modules failed (log above)"; }
    local resolved
    resolved=$(go list -m all)
    grep -qF " $version" <<<"$resolved" || die "$name: wrapper module did not resolve to $version"
    log "compiling ${#packages[@]} binaries of $name $version with -p $GO_BUILD_PARALLELISM (a cold build takes many minutes on 2 cores)"
    mkdir -p "$out.partial"
    stamp=$(date +%s)
    # Progress: a heartbeat every 60 s, since `go build` is silent for minutes.
    ( while sleep 60; do log "  still compiling $name ($(( $(date +%s) - stamp ))s)"; done ) &
    local heartbeat=$!
    trap 'kill $heartbeat 2>/dev/null || true' RETURN
    /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS of the go command" \
      go build -p "$GO_BUILD_PARALLELISM" -trimpath -ldflags "-s -w $ldflags" -o "$out.partial/" "${packages[@]}" \
      2> >(tee "$out.partial.build.log" >&2)
    kill $heartbeat 2>/dev/null || true
  )
}

# publish_component NAME VERSION: moves a finished build into place and marks it.
publish_component() {
  local out
  out=$(upstream_bin_dir "$1" "$2")
  rm -rf "$out"
  mv "$out.partial" "$out"
  touch "$out/.complete"
  log "built $1 $2 into $out"
}

wrapper_module() {
  local name=$1 version=$2
  local src="$NESTOR_CACHE/src/$name-$version"
  rm -rf "$src"
  mkdir -p "$src"
  # `go 1.24` is only a floor: `go get` raises it to the required module's own go line
  # (go 1.25.0 for k8s.io/kubernetes v1.35.4, 1.26.0 for kwok v0.8.0), and with
  # GOTOOLCHAIN=local an installed Go older than that fails there. Raising the floor
  # would change the language version and GODEBUG defaults of components that declare less.
  printf 'module nestor.dev/upstream-build/%s\n\ngo 1.24\n' "$name" >"$src/go.mod"
  echo "$src"
}

# build_kubernetes_at VERSION BINARY...: the given cmd/ binaries of k8s.io/kubernetes
# at VERSION into $NESTOR_CACHE/bin/kubernetes-VERSION/.
build_kubernetes_at() {
  local v=$1
  shift
  # Cached only when every wanted binary is there: the list grows (kubeadm joined it for
  # worker hosts), and a cache built from a shorter list must not hide a missing binary.
  local binary missing=()
  for binary in "$@"; do
    [[ -x "$(upstream_bin_dir kubernetes "$v")/$binary" ]] || missing+=("$binary")
  done
  if upstream_complete kubernetes "$v" && [[ ${#missing[@]} -eq 0 ]]; then log "kubernetes $v: cached"; return; fi
  local src minor major staging_version
  src=$(wrapper_module kubernetes "$v")
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  staging_version="v0.${v#v*.}"
  (
    cd "$src"
    go mod edit -require "k8s.io/kubernetes@$v"
    # Every staging module k8s.io/kubernetes replaces with a ./staging path is
    # pinned to its published v0.<minor>.<patch>.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | while read -r module; do
      go mod edit -replace "$module=$module@$staging_version"
    done
  )
  local ldflags="" key value packages=()
  for pair in "gitVersion=$v" "gitMajor=$major" "gitMinor=$minor" "gitTreeState=clean" \
              "buildDate=1970-01-01T00:00:00Z" "gitCommit=0000000000000000000000000000000000000000"; do
    key=${pair%%=*}; value=${pair#*=}
    ldflags+=" -X k8s.io/client-go/pkg/version.$key=$value -X k8s.io/component-base/version.$key=$value"
  done
  for binary in "$@"; do packages+=("k8s.io/kubernetes/cmd/$binary"); done
  build_in_wrapper kubernetes "$v" "$ldflags" "${packages[@]}"
  publish_component kubernetes "$v"
}

# The meta cluster's own binaries, which are also the tenant images of KUBERNETES_VERSION.
build_kubernetes() {
  build_kubernetes_at "$KUBERNETES_VERSION" \
    kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm
}

# The upgrade target: the tenant images that follow a tenant's version (control plane and
# the kube-proxy addon). Workers keep the meta cluster's kubelet, within the skew policy.
build_kubernetes_upgrade() {
  build_kubernetes_at "$KUBERNETES_UPGRADE_VERSION" kube-apiserver kube-controller-manager kube-scheduler kube-proxy
}

# The peer benchmark's tenant version (bench/peer.sh): the newest Kubernetes that the pinned
# Kamaji release accepts (KAMAJI_VERSION refuses anything above its kubeadm's version), for
# both Nestor and Kamaji tenants. Control-plane binaries only: neither side runs workers there.
build_kubernetes_peer() {
  build_kubernetes_at "$PEER_KUBERNETES_VERSION" kube-apiserver kube-controller-manager kube-scheduler
}

# Kamaji, the peer the benchmark compares Nestor with: its operator binary from the Go module
# proxy at KAMAJI_VERSION. Its go.mod replaces the k8s.io staging modules with their published
# versions already, so it is built as its own Dockerfile does: `go build` in the module's root,
# with the module's own go.mod and go.sum (a copy of the downloaded module, made writable). The
# module's config/ (CRDs, webhook manifests) is kept beside the binary for bench/peer.sh.
build_kamaji() {
  local v=$KAMAJI_VERSION
  if upstream_complete kamaji "$v"; then log "kamaji $v: cached"; return; fi
  local module src out
  module=$(go mod download -json "github.com/clastix/kamaji@$v" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  [[ -d $module ]] || die "kamaji $v: the Go module proxy did not serve github.com/clastix/kamaji@$v"
  src="$NESTOR_CACHE/src/kamaji-$v"
  out=$(upstream_bin_dir kamaji "$v")
  rm -rf "$src" "$out.partial"
  cp -r "$module" "$src"
  chmod -R u+w "$src"
  mkdir -p "$out.partial"
  log "compiling kamaji $v (its own go.mod; a cold build takes many minutes on 2 cores)"
  (
    cd "$src"
    /usr/bin/time -f "kamaji: %e s wall, %M KiB peak RSS of the go command" \
      go build -p "$GO_BUILD_PARALLELISM" -trimpath \
      -ldflags "-s -w -X github.com/clastix/kamaji/internal.GitTag=$v -X github.com/clastix/kamaji/internal.GitRepo=github.com/clastix/kamaji" \
      -o "$out.partial/kamaji" . 2> >(tee "$out.partial.build.log" >&2)
  )
  cp -r "$src/config" "$out.partial/config"
  chmod -R u+w "$out.partial/config"
  publish_component kamaji "$v"
}

# Helm, only to render Kamaji's own chart (charts/kamaji of the Kamaji module) for the peer
# benchmark with `helm template`, so its install is Kamaji's manifests, not a copy of them.
build_helm() {
  local v=$HELM_VERSION
  if upstream_complete helm "$v"; then log "helm $v: cached"; return; fi
  local src
  src=$(wrapper_module helm "$v")
  (cd "$src" && go mod edit -require "helm.sh/helm/v3@$v")
  build_in_wrapper helm "$v" "-X helm.sh/helm/v3/internal/version.version=$v" helm.sh/helm/v3/cmd/helm
  publish_component helm "$v"
}

# build_etcd_at VERSION: etcd, etcdctl and etcdutl at VERSION. 3.5 also has client/v2 and
# raft/v3 among the siblings its server module replaces with ../ paths.
build_etcd_at() {
  local v=$1
  if upstream_complete etcd "$v"; then log "etcd $v: cached"; return; fi
  local src siblings=(api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3 etcdctl/v3 etcdutl/v3)
  [[ $v != v3.5.* ]] || siblings+=(client/v2 raft/v3)
  src=$(wrapper_module etcd "$v")
  (
    cd "$src"
    go mod edit -require "go.etcd.io/etcd/server/v3@$v" -require "go.etcd.io/etcd/etcdctl/v3@$v" \
      -require "go.etcd.io/etcd/etcdutl/v3@$v"
    local module version
    for module in "${siblings[@]}"; do
      # client/v2 numbers its 3.5 releases v2.305.<patch>.
      version=$v
      [[ $module != client/v2 ]] || version="v2.305.${v##*.}"
      go mod edit -replace "go.etcd.io/etcd/$module=go.etcd.io/etcd/$module@$version"
    done
  )
  build_in_wrapper etcd "$v" "" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3
  # `go build` names go.etcd.io/etcd/server/v3's binary "server".
  local out
  out=$(upstream_bin_dir etcd "$v")
  mv "$out.partial/server" "$out.partial/etcd"
  publish_component etcd "$v"
}

build_etcd() { build_etcd_at "$ETCD_VERSION"; }

build_coredns() {
  local v=$COREDNS_VERSION
  if upstream_complete coredns "$v"; then log "coredns $v: cached"; return; fi
  local src
  src=$(wrapper_module coredns "$v")
  (cd "$src" && go mod edit -require "github.com/coredns/coredns@$v")
  build_in_wrapper coredns "$v" "" github.com/coredns/coredns
  publish_component coredns "$v"
}

build_local_path_provisioner() {
  local v=$LOCAL_PATH_PROVISIONER_VERSION
  if upstream_complete local-path-provisioner "$v"; then log "local-path-provisioner $v: cached"; return; fi
  local src
  src=$(wrapper_module local-path-provisioner "$v")
  (cd "$src" && go mod edit -require "github.com/rancher/local-path-provisioner@$v")
  build_in_wrapper local-path-provisioner "$v" "" github.com/rancher/local-path-provisioner
  publish_component local-path-provisioner "$v"
}

# konnectivity (sigs.k8s.io/apiserver-network-proxy): proxy-server, the apiserver's sidecar,
# and proxy-agent, the tenant addon on every node. Its minor follows Kubernetes' minor; the
# module replaces its konnectivity-client with a ./ path, so the wrapper pins the published
# konnectivity-client of the same version.
build_konnectivity() {
  local v=$KONNECTIVITY_VERSION
  if upstream_complete konnectivity "$v"; then log "konnectivity $v: cached"; return; fi
  local src
  src=$(wrapper_module konnectivity "$v")
  (
    cd "$src"
    go mod edit -require "sigs.k8s.io/apiserver-network-proxy@$v" \
      -replace "sigs.k8s.io/apiserver-network-proxy/konnectivity-client=sigs.k8s.io/apiserver-network-proxy/konnectivity-client@$v"
  )
  build_in_wrapper konnectivity "$v" "" sigs.k8s.io/apiserver-network-proxy/cmd/server sigs.k8s.io/apiserver-network-proxy/cmd/agent
  # `go build` names the binaries after their directories; upstream ships them as
  # proxy-server and proxy-agent.
  local out
  out=$(upstream_bin_dir konnectivity "$v")
  mv "$out.partial/server" "$out.partial/proxy-server"
  mv "$out.partial/agent" "$out.partial/proxy-agent"
  publish_component konnectivity "$v"
}

# kwok: fake nodes and pod lifecycles for the scale benchmark (bench/scale.sh). A plain
# module without sibling replaces, so the wrapper only requires it.
build_kwok() {
  local v=$KWOK_VERSION
  if upstream_complete kwok "$v"; then log "kwok $v: cached"; return; fi
  local src
  src=$(wrapper_module kwok "$v")
  (cd "$src" && go mod edit -require "sigs.k8s.io/kwok@$v")
  build_in_wrapper kwok "$v" "" sigs.k8s.io/kwok/cmd/kwok
  # The kwok binary ships no lifecycle: its stages (node initialization and lease heartbeat,
  # pods becoming Ready and being deleted) come from the module's kustomize/ directory.
  local module out
  module=$(cd "$src" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  out=$(upstream_bin_dir kwok "$v")
  mkdir -p "$out.partial/stages"
  cp "$module"/kustomize/stage/node/fast/node-initialize.yaml \
    "$module"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$module"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$out.partial/stages/"
  chmod u+w "$out.partial/stages/"*
  publish_component kwok "$v"
}

# versitygw: the S3 gateway of the local object store (hack/s3-up.sh) that etcd backup tests
# write to; its posix backend keeps each object as a plain file. A plain module without
# replaces (and pure Go: its CUDA/RDMA parts live in other commands), so the wrapper only
# requires it. main.Version and friends are what its own Makefile sets.
build_versitygw() {
  local v=$VERSITYGW_VERSION
  if upstream_complete versitygw "$v"; then log "versitygw $v: cached"; return; fi
  local src
  src=$(wrapper_module versitygw "$v")
  (cd "$src" && go mod edit -require "github.com/versity/versitygw@$v")
  build_in_wrapper versitygw "$v" \
    "-X main.Version=$v -X main.Build=release -X main.BuildTime=1970-01-01T00:00:00Z" \
    github.com/versity/versitygw/cmd/versitygw
  publish_component versitygw "$v"
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd coredns local-path-provisioner kubernetes kubernetes-upgrade konnectivity)
command -v go >/dev/null || die "go is not installed; the upstream build needs Go 1.25 or newer" \
  "(k8s.io/kubernetes $KUBERNETES_UPGRADE_VERSION declares go 1.25.0, kwok $KWOK_VERSION 1.26.0;" \
  "GOTOOLCHAIN=local never downloads a newer toolchain)"
for component in "${components[@]}"; do
  case $component in
    kubernetes) build_kubernetes ;;
    kubernetes-upgrade) build_kubernetes_upgrade ;;
    etcd) build_etcd ;;
    coredns) build_coredns ;;
    local-path-provisioner) build_local_path_provisioner ;;
    konnectivity) build_konnectivity ;;
    kwok) build_kwok ;;
    kubernetes-peer) build_kubernetes_peer ;;
    etcd-peer) build_etcd_at "$PEER_ETCD_VERSION" ;;
    kamaji) build_kamaji ;;
    helm) build_helm ;;
    versitygw) build_versitygw ;;
    *) die "unknown component '$component' (want kubernetes, kubernetes-upgrade, etcd, coredns, local-path-provisioner, konnectivity, kwok, kubernetes-peer, etcd-peer, kamaji, helm or versitygw)" ;;
  esac
done
