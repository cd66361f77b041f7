# Shared helpers for the hack/ scripts: pinned versions, cache paths, logging.
# Sourced, never run.
# shellcheck shell=bash
HACK_DIR=${HACK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=hack/versions.env
source "$HACK_DIR/versions.env"

# Built upstream binaries and images live outside the repository so a fresh
# clone (and CI) reuses them; delete this directory to force a cold build.
NESTOR_CACHE=${NESTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nestor}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

upstream_bin_dir() { echo "$NESTOR_CACHE/bin/$1-$2"; }
upstream_complete() { [[ -f "$(upstream_bin_dir "$1" "$2")/.complete" ]]; }

# Images built by hack/build-images.sh are named "$LOCAL_IMAGE_REPOSITORY/<name>:<tag>";
# a TenantCluster uses them with spec.imageRepository set to this prefix.
LOCAL_IMAGE_REPOSITORY=${LOCAL_IMAGE_REPOSITORY:-nestor.local}
BUSYBOX_TAG=1.35-debian
# The tunnel e2e test's webhook and aggregated API server (hack/tunnel-probe).
TUNNEL_PROBE_TAG=dev

# --- the local meta cluster (hack/meta-*.sh) ---
# Persistent state (PKI, etcd, kubelet, containerd content, logs) and runtime
# state (sockets, pids, network namespaces). Both are removed by meta-down,
# except the logs of the last run.
META_DIR=${NESTOR_META_DIR:-/var/lib/nestor-meta}
META_RUN_DIR=${NESTOR_META_RUN_DIR:-/run/nestor-meta}
META_LOG_DIR="$META_DIR/logs"
META_KUBECONFIG="$META_DIR/admin.kubeconfig"
# Address plan: everything stays on this machine. The node address sits on our
# own bridge (this kernel has no dummy interfaces), which is also the pods'
# gateway; a blackhole route drops pod-range traffic no pod claims, the Service
# range is routed onto the bridge (see meta-up), and a FORWARD rule drops pod
# traffic headed anywhere but the bridge.
META_BRIDGE=nestor0
META_NODE_IP=10.200.0.1
META_NODE_NAME=nestor-meta
META_POD_CIDR=10.200.0.0/16
META_NODE_POD_SUBNET=10.200.0.0/24
META_SERVICE_CIDR=10.201.0.0/16
META_KUBERNETES_SERVICE_IP=10.201.0.1
META_DNS_SERVICE_IP=10.201.0.10
META_ETCD_CLIENT_PORT=12379
META_ETCD_PEER_PORT=12380
META_IPTABLES_CHAIN=NESTOR-META-FORWARD
META_CONTAINERD_SOCKET="$META_RUN_DIR/containerd/containerd.sock"
# containerd's registry hosts directory, whose _default/hosts.toml sends every image pull
# to REGISTRY_FENCE, a closed loopback port (see write_containerd_config below).
REGISTRY_HOSTS_DIR="$META_DIR/containerd/certs.d"
REGISTRY_FENCE=https://127.0.0.1:9

k8s_bin() { echo "$(upstream_bin_dir kubernetes "$KUBERNETES_VERSION")/$1"; }
etcd_bin() { echo "$(upstream_bin_dir etcd "$ETCD_VERSION")/$1"; }
kwok_bin() { echo "$(upstream_bin_dir kwok "$KWOK_VERSION")/kwok"; }
meta_kubectl() { "$(k8s_bin kubectl)" --kubeconfig "$META_KUBECONFIG" "$@"; }

# wait_until DESCRIPTION TIMEOUT_SECONDS COMMAND...: polls once a second,
# printing progress every 10 s; fails with the description on timeout.
wait_until() {
  local what=$1 timeout=$2 start
  shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    local elapsed=$(( $(date +%s) - start ))
    (( elapsed >= timeout )) && { log "timed out after ${timeout}s waiting for $what"; return 1; }
    (( elapsed > 0 && elapsed % 10 == 0 )) && log "  waiting for $what (${elapsed}s)"
    sleep 1
  done
}

pid_file() { echo "$META_RUN_DIR/pids/$1.pid"; }
# pid_alive COMPONENT: its recorded process is still running.
pid_alive() {
  local file
  file=$(pid_file "$1")
  [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null
}

# start_meta_process COMPONENT COMMAND...: runs a host process of the meta cluster in its
# own session, logging to $META_LOG_DIR/COMPONENT.log, and records its pid for meta-down.
start_meta_process() {
  local component=$1
  shift
  setsid "$@" >>"$META_LOG_DIR/$component.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "$component")"
  log "started $component (pid $!)"
}

# --- the local S3 store (hack/s3-*.sh) ---
# versitygw's posix backend on the meta cluster's bridge address, which the host and the
# meta cluster's pods both reach; buckets are directories under S3_DATA_DIR. Fixed
# credentials: a development store on a private address, never exposed beyond this machine.
S3_PORT=9343
S3_ENDPOINT="http://$META_NODE_IP:$S3_PORT"
S3_ACCESS_KEY=nestor
S3_SECRET_KEY=nestor-dev-secret-not-for-production
S3_BUCKET=nestor-backups
S3_REGION=us-east-1
S3_DATA_DIR="$META_DIR/s3"
# What a test reads to find the store (written by s3-up, removed by s3-down).
S3_ENV_FILE="$META_RUN_DIR/s3.env"
versitygw_bin() { echo "$(upstream_bin_dir versitygw "$VERSITYGW_VERSION")/versitygw"; }

# s3_pid: the pid of the running S3 store started by s3-up, or nothing. The pid file alone
# is not trusted: after a reboot or a kill its pid may belong to another process.
s3_pid() {
  local file pid
  file=$(pid_file s3)
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == versitygw ]] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- " $S3_DATA_DIR " && echo "$pid"
  return 0
}

# s3_curl [--sha256 HEX] CURL_ARGS...: a request to the local S3 store signed (AWS SigV4)
# with its credentials. S3 wants the payload's hash in x-amz-content-sha256, which curl
# 7.88 does not add by itself: the given one, else UNSIGNED-PAYLOAD. curl signs the query
# string as written, so give it in canonical form: parameters sorted, values URI-encoded
# (`?list-type=2&prefix=a%2Fb`), or the server computes another signature.
s3_curl() {
  local payload_hash=UNSIGNED-PAYLOAD
  if [[ ${1:-} == --sha256 ]]; then payload_hash=$2; shift 2; fi
  curl -sS --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: $payload_hash" "$@"
}

# --- worker hosts (hack/worker-*.sh) ---
# A worker host stands in for a machine that joins a tenant cluster with `kubeadm join`:
# a network namespace, a mount namespace, a containerd and a kubelet of its own. Worker
# NAME keeps its state in $WORKER_DIR/NAME and $WORKER_RUN_DIR/NAME and its logs in
# $META_LOG_DIR/worker-NAME (kept after worker-down, like the meta cluster's logs).
WORKER_DIR=${NESTOR_WORKER_DIR:-/var/lib/nestor-workers}
WORKER_RUN_DIR=${NESTOR_WORKER_RUN_DIR:-/run/nestor-workers}
# Address plan: worker number N (1-254, the lowest free one) gets the link 10.202.N.0/30
# (host end .1, the worker's own address .2, its default route via .1) and the pod range
# 10.203.N.0/24 on a bridge inside its network namespace. Neither overlaps the meta
# cluster's ranges above nor a tenant's defaults (Services 10.96.0.0/12, pods 10.244.0.0/16).
WORKER_LINK_PREFIX=10.202
WORKER_POD_PREFIX=10.203
# Per-worker names derived from NAME: netns, host end of the veth (15 characters at most,
# hence NAME's 12), cgroup under every hierarchy, iptables chain.
worker_netns() { echo "nestor-w-$1"; }
worker_host_veth() { echo "nw-$1"; }
worker_cgroup() { echo "nestor-w-$1"; }
worker_chain() { echo "NESTOR-W-$1"; }
# worker_names: every worker with state on this machine, running or not.
worker_names() {
  {
    local dir
    for dir in "$WORKER_DIR"/*/ "$WORKER_RUN_DIR"/*/; do
      [[ -d $dir ]] || continue
      dir=${dir%/}
      [[ ${dir##*/} == ns ]] || echo "${dir##*/}"
    done
    ip netns list 2>/dev/null | awk '$1 ~ /^nestor-w-/ {print substr($1, 10)}'
  } | sort -u
}

# write_containerd_config CONFIG_FILE ROOT STATE SOCKET OPT_DIR CNI_CONF_DIR HOSTS_DIR
# The containerd configuration of the meta cluster and of every worker host, which differ
# only in their paths. Registries are fenced: every registry host falls back to the
# `_default` hosts.toml under the CRI's registry config_path (read by Debian 12's
# containerd 1.6.20), whose only endpoint is REGISTRY_FENCE, a closed loopback port: a
# pull fails at once with "connection refused" and no packet, not even a DNS query for
# the registry's name, leaves the machine (or the worker's network namespace).
# (`ctr images pull` resolves in the ctr process and ignores this unless given --hosts-dir.)
write_containerd_config() {
  local config=$1 root=$2 state=$3 socket=$4 opt=$5 cni_conf=$6 hosts=$7
  mkdir -p "$(dirname "$config")" "$hosts/_default" "$cni_conf"
  # containerd 1.6 rejects a hosts.toml without a [host] table ("invalid `host` tree")
  # and then silently uses the registry itself, so the endpoint is named twice.
  cat >"$hosts/_default/hosts.toml" <<EOF
# Any registry not configured otherwise (all of them): a dead loopback endpoint.
server = "$REGISTRY_FENCE"
[host."$REGISTRY_FENCE"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$config" <<EOF
version = 2
root = "$root"
state = "$state"
[grpc]
  address = "$socket"
[ttrpc]
  address = "$socket.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$LOCAL_IMAGE_REPOSITORY/pause:$PAUSE_VERSION"
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  # This sandbox lacks CAP_SYS_RESOURCE, so the kubelet's negative
  # oom_score_adj for pause and Guaranteed containers fails with EACCES
  # ("can't get final child's PID from pipe"). Clamp to containerd's own value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$hosts"
EOF
}
