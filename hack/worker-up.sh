#!/usr/bin/env bash
# Starts a worker host: a stand-in for a real machine that joins a tenant cluster with
# the real `kubeadm join`, on this machine, next to the meta cluster.
#
#   hack/worker-up.sh NAME -- [kubeadm join] ENDPOINT --token ID.SECRET \
#       --discovery-token-ca-cert-hash sha256:HASH [more kubeadm join flags]
#
# Everything after `--` goes to `kubeadm join`; a leading `kubeadm join` is dropped, so
# the output of `kubeadm token create --print-join-command` can be pasted as it is.
# ENDPOINT is the tenant's node endpoint: a NodePort on the meta node address
# (spec.network {serviceType: NodePort, externalHost: 10.200.0.1, nodePort: N} gives
# 10.200.0.1:N). NAME (a DNS label of at most 12 characters) becomes the Node's name.
# WORKER_IMAGES (default "pause kube-proxy coredns busybox kas-network-proxy-proxy-agent") names the image archives of
# hack/build-images.sh imported into the worker's containerd; nothing is ever pulled.
#
# What a worker is (see docs/development.md, "Worker hosts"):
# - network namespace nestor-w-NAME, reached through a veth pair from the host
#   (10.202.N.1 on the host, 10.202.N.2 in the namespace, the default route via the host
#   end); pods on a bridge inside it, 10.203.N.0/24, masqueraded behind 10.202.N.2.
#   iptables chains NESTOR-W-NAME (filter and mangle) let the worker reach only the meta
#   node address (the tenants' NodePorts), never a meta Service or pod, and let the meta cluster's pods (a tenant's apiserver:
#   logs, exec) reach only the worker's own address, past the meta cluster's egress fence.
#   That last rule is direct routing (spec.network.tunnel.enabled: false); a tenant with the
#   konnectivity tunnel (the default) does not use it, and operator/tests/tunnel.rs drops every
#   connection from the meta pod network on the worker to prove so.
# - a mount namespace of its own, pinned at /run/nestor-workers/ns/NAME.mnt, where /etc
#   is an overlay (writes land in /var/lib/nestor-workers/NAME/root/etc) and
#   /var/lib/kubelet is /var/lib/nestor-workers/NAME/root/var/lib/kubelet. kubeadm,
#   containerd and the kubelet all run in it, so kubeadm writes its usual paths
#   (/etc/kubernetes, /var/lib/kubelet) without two workers sharing them, and the
#   kubelet's volume mounts are seen by containerd and runc.
# - containerd with its own root, state, sockets, opt path and CNI configuration, and the
#   kubelet kubeadm configures, both entered with `nsenter --net --mount` (never
#   `ip netns exec`, which would give each process a mount namespace of its own).
# - cgroup nestor-w-NAME under every hierarchy: the kubelet's cgroupRoot, and home of
#   every process of the worker (containerd, shims, kubelet, kubeadm, pods), which is how
#   worker-down finds them.
# kubeadm join runs unmodified. There is no systemd to start the kubelet, so the
# kubelet is started the way kubeadm's systemd drop-in would start it: once kubeadm has
# written /var/lib/kubelet/config.yaml and kubeadm-flags.env, with
# --bootstrap-kubeconfig, --kubeconfig and --config at kubeadm's paths. What belongs to
# this machine rather than to the cluster (cgroup driver and root, addresses, log and
# plugin directories) is a kubeadm patch (--patches) over the cluster's KubeletConfiguration.
#
# Idempotent: a running, healthy worker is left alone. The state of a worker that was
# killed without worker-down is removed with hack/worker-down.sh NAME first.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $(id -u) == 0 ]] || die "worker-up needs root (network and mount namespaces, cgroups, iptables)"
[[ $# -ge 1 ]] || usage
NAME=$1
shift
[[ $NAME =~ ^[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?$ ]] ||
  die "worker name '$NAME' must be a DNS label of at most 12 characters (it names the Node and a veth)"
JOIN_ARGS=()
if [[ $# -gt 0 ]]; then
  [[ $1 == -- ]] || usage
  shift
  [[ ${1:-} == kubeadm ]] && shift
  [[ ${1:-} == join ]] && shift
  JOIN_ARGS=("$@")
fi

WORKER_IMAGES=${WORKER_IMAGES:-pause kube-proxy coredns busybox kas-network-proxy-proxy-agent}
STATE="$WORKER_DIR/$NAME"
RUN="$WORKER_RUN_DIR/$NAME"
LOGS="$META_LOG_DIR/worker-$NAME"
NETNS=$(worker_netns "$NAME")
HOST_VETH=$(worker_host_veth "$NAME")
CGROUP=$(worker_cgroup "$NAME")
CHAIN=$(worker_chain "$NAME")
MOUNT_NS="$WORKER_RUN_DIR/ns/$NAME.mnt"
SOCKET="$RUN/containerd/containerd.sock"
# The worker's own view: /etc (overlay upper dir) and /var/lib/kubelet.
ROOT="$STATE/root"
KUBELET_DIR="$ROOT/var/lib/kubelet"
KUBERNETES_DIR="$ROOT/etc/kubernetes"

worker_pid_file() { echo "$RUN/pids/$1.pid"; }
# worker_pid_alive COMPONENT: its recorded process runs (a zombie not yet reaped does not).
worker_pid_alive() {
  local file state
  file=$(worker_pid_file "$1")
  [[ -f $file ]] || return 1
  state=$(awk '{print $3}' "/proc/$(cat "$file")/stat" 2>/dev/null)
  [[ -n $state && $state != Z ]]
}

worker_healthy() {
  worker_pid_alive containerd && worker_pid_alive kubelet && [[ -f $KUBERNETES_DIR/kubelet.conf ]]
}

has_state() {
  [[ -d $STATE || -d $RUN || -e $MOUNT_NS ]] || ip netns list 2>/dev/null | grep -qw "^$NETNS" ||
    ip link show "$HOST_VETH" >/dev/null 2>&1 || iptables-save 2>/dev/null | grep -q "^:$CHAIN " ||
    [[ -d /sys/fs/cgroup/cpu/$CGROUP ]]
}

# allocate_number: the lowest worker number no other worker holds, recorded in
# $STATE/number (under a lock, so two worker-ups at once get different ones).
allocate_number() {
  mkdir -p "$WORKER_DIR" "$STATE"
  exec 9>"$WORKER_DIR/.lock"
  flock 9
  local taken number
  taken=$(cat "$WORKER_DIR"/*/number 2>/dev/null || true)
  for number in $(seq 1 254); do
    grep -qx "$number" <<<"$taken" && continue
    ip -o addr show 2>/dev/null | grep -q " $WORKER_LINK_PREFIX.$number.1/" && continue
    echo "$number" >"$STATE/number"
    flock -u 9
    exec 9>&-
    WORKER_NUMBER=$number
    return
  done
  die "no free worker number (1-254)"
}

setup_network() {
  HOST_ADDRESS="$WORKER_LINK_PREFIX.$WORKER_NUMBER.1"
  WORKER_ADDRESS="$WORKER_LINK_PREFIX.$WORKER_NUMBER.2"
  POD_SUBNET="$WORKER_POD_PREFIX.$WORKER_NUMBER.0/24"
  ip netns add "$NETNS"
  ip link add "$HOST_VETH" type veth peer name eth0 netns "$NETNS"
  ip addr add "$HOST_ADDRESS/30" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" addr add "$WORKER_ADDRESS/30" dev eth0
  ip -n "$NETNS" link set eth0 up
  ip -n "$NETNS" route add default via "$HOST_ADDRESS"
  # Per network namespace: the pods' bridge routes and (with kube-proxy) filters.
  nsenter --net="/run/netns/$NETNS" sysctl -qw net.ipv4.ip_forward=1
  nsenter --net="/run/netns/$NETNS" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

  # Before the meta cluster's egress fence (NESTOR-META-FORWARD) and kube-proxy's
  # accept rules: the worker is a machine outside the meta cluster, so it reaches the
  # meta node address (the tenants' NodePorts, DNATed to apiserver pods) and nothing
  # else; the meta cluster's pods reach the worker's own address (a tenant apiserver
  # asking the kubelet for logs and exec) and nothing else of it.
  local comment="nestor worker $NAME"
  iptables -N "$CHAIN"
  iptables -A "$CHAIN" -i "$HOST_VETH" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT -m comment --comment "$comment"
  iptables -A "$CHAIN" -i "$HOST_VETH" -o "$META_BRIDGE" -m conntrack --ctorigdst "$META_NODE_IP/32" -j ACCEPT \
    -m comment --comment "$comment: NodePorts on the meta node address"
  iptables -A "$CHAIN" -i "$HOST_VETH" -j DROP -m comment --comment "$comment: nothing else leaves the worker"
  iptables -A "$CHAIN" -o "$HOST_VETH" -s "$META_POD_CIDR" -d "$WORKER_ADDRESS/32" -j ACCEPT \
    -m comment --comment "$comment: meta pods (tenant apiservers) to the kubelet"
  iptables -A "$CHAIN" -o "$HOST_VETH" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT -m comment --comment "$comment"
  iptables -A "$CHAIN" -o "$HOST_VETH" -j DROP -m comment --comment "$comment: nothing else enters the worker"
  iptables -I FORWARD 1 -j "$CHAIN"
  # The meta cluster's Services and pods are not on the worker's network either, even
  # those whose endpoints are host processes (the meta apiserver behind 10.201.0.1),
  # which the FORWARD chain never sees: new connections to them are dropped in mangle
  # PREROUTING, after conntrack (replies to meta pods pass) and before kube-proxy's DNAT.
  iptables -t mangle -N "$CHAIN"
  iptables -t mangle -A "$CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN -m comment --comment "$comment"
  iptables -t mangle -A "$CHAIN" -d "$META_NODE_IP/32" -j RETURN -m comment --comment "$comment: the meta node address"
  iptables -t mangle -A "$CHAIN" -d "$META_SERVICE_CIDR" -j DROP -m comment --comment "$comment: no meta Service"
  iptables -t mangle -A "$CHAIN" -d "$META_POD_CIDR" -j DROP -m comment --comment "$comment: no meta pod"
  iptables -t mangle -I PREROUTING 1 -i "$HOST_VETH" -j "$CHAIN"
}

setup_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -f ${hierarchy}cgroup.procs ]] || continue
    mkdir -p "$hierarchy$CGROUP/system"
    if [[ -f ${hierarchy}cpuset.cpus ]]; then
      local dir
      for dir in "$hierarchy$CGROUP" "$hierarchy$CGROUP/system"; do
        cat "${hierarchy}cpuset.cpus" >"$dir/cpuset.cpus"
        cat "${hierarchy}cpuset.mems" >"$dir/cpuset.mems"
      done
    fi
  done
}

# setup_mount_namespace: the worker's mount namespace, pinned to $MOUNT_NS so that
# kubeadm, containerd and the kubelet (started one by one) share it.
setup_mount_namespace() {
  mkdir -p "$WORKER_RUN_DIR/ns" "$ROOT/etc" "$STATE/overlay-work" "$KUBELET_DIR"
  # A namespace file can only be bind-mounted onto a private mount.
  if ! mountpoint -q "$WORKER_RUN_DIR/ns"; then
    mount --bind "$WORKER_RUN_DIR/ns" "$WORKER_RUN_DIR/ns"
    mount --make-private "$WORKER_RUN_DIR/ns"
  fi
  # The kubelet of any node on this machine (the meta cluster's among them) creates
  # /var/lib/kubelet/device-plugins whatever its root directory; the mount point exists.
  mkdir -p /var/lib/kubelet
  touch "$MOUNT_NS"
  # The machine's own /etc/hosts (its name resolves to its address, as kubeadm's
  # hostname check wants) and a resolver at its own address, where nothing listens: a
  # lookup is refused at once (port unreachable), none leaves the machine, and none
  # waits for a timeout. Not loopback: CoreDNS forwards to the node's resolver, and
  # 127.0.0.1 inside its pod is CoreDNS itself (its loop plugin then stops it).
  { cat /etc/hosts; echo "$WORKER_ADDRESS $NAME"; } >"$ROOT/etc/hosts"
  printf '# worker %s: no resolver off this machine\nnameserver %s\n' "$NAME" "$WORKER_ADDRESS" >"$ROOT/etc/resolv.conf"
  # Inside: drop the copies of mounts that belong to others (the meta cluster's volumes,
  # snapshots and pod network namespaces, other workers' namespaces), which would
  # otherwise stay alive here; put the worker's own /etc and /var/lib/kubelet in place;
  # and make / shared within the namespace, as on a real node (the host's / is private).
  ROOT=$ROOT STATE=$STATE KUBELET_DIR=$KUBELET_DIR unshare --mount="$MOUNT_NS" --propagation private bash -ec '
    for prefix in "$@"; do
      awk -v p="$prefix" "index(\$5, p) == 1 {print \$5}" /proc/self/mountinfo | sort -r |
        while read -r mount_point; do umount -l "$mount_point" 2>/dev/null || true; done
    done
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ROOT/etc,workdir=$STATE/overlay-work" /etc
    mount --bind "$KUBELET_DIR" /var/lib/kubelet
    mount --make-rshared /
  ' worker-mounts "$META_DIR/" "$META_RUN_DIR/" "$WORKER_DIR/" "$WORKER_RUN_DIR/" /run/netns/
}

# start_in_worker COMPONENT COMMAND...: runs COMMAND in its own session inside the
# worker's cgroup, network and mount namespaces; logs to $LOGS/COMPONENT.log.
start_in_worker() {
  local component=$1
  shift
  CGROUP=$CGROUP setsid bash -c '
    for procs in /sys/fs/cgroup/*/"$CGROUP"/system/cgroup.procs; do echo $$ >"$procs"; done
    exec "$@"' "$component" nsenter --net="/run/netns/$NETNS" --mount="$MOUNT_NS" -- "$@" \
    >>"$LOGS/$component.log" 2>&1 </dev/null &
  echo $! >"$(worker_pid_file "$component")"
}

# The meta cluster's containerd configuration (write_containerd_config in lib.sh), every
# path its own, registry fence included (127.0.0.1:9 is the worker's own loopback: still
# closed), and the worker's CNI configuration.
write_worker_containerd_config() {
  mkdir -p "$RUN/containerd" "$RUN/cni"
  write_containerd_config "$STATE/containerd/config.toml" "$STATE/containerd/root" \
    "$RUN/containerd/state" "$SOCKET" "$STATE/containerd/opt" "$STATE/cni/net.d" \
    "$STATE/containerd/certs.d"
  # Pods on a bridge inside the worker, masqueraded behind the worker's address as a
  # machine's containers are; portmap serves hostPorts on the worker's address.
  cat >"$STATE/cni/net.d/10-nestor-worker.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "nestor-worker",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$RUN/cni/networks",
               "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "${POD_SUBNET%.*}.1"}]],
               "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
EOF
}

start_containerd() {
  write_worker_containerd_config
  start_in_worker containerd containerd --config "$STATE/containerd/config.toml"
  wait_until "worker $NAME containerd" 60 ctr --address "$SOCKET" version
  local name archive count=0
  for name in $WORKER_IMAGES; do
    for archive in "$NESTOR_CACHE/images/$name"-*.oci.tar; do
      [[ -f $archive ]] || die "no image archive $NESTOR_CACHE/images/$name-*.oci.tar: run hack/build-images.sh"
      ctr --address "$SOCKET" -n k8s.io images import --no-unpack=false "$archive" >/dev/null
      count=$((count + 1))
    done
  done
  log "imported $count images into the worker's containerd ($WORKER_IMAGES)"
}

# Machine-specific kubelet settings, applied by kubeadm over the cluster's
# KubeletConfiguration (kube-system/kubelet-config) when it writes config.yaml.
write_kubelet_patch() {
  mkdir -p "$STATE/patches" "$STATE/pod-logs" "$STATE/volume-plugins"
  cat >"$STATE/patches/kubeletconfiguration+merge.yaml" <<EOF
# This machine mounts cgroup v1 only, and has no systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$CGROUP
address: $WORKER_ADDRESS
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
podLogsDir: $STATE/pod-logs
volumePluginDir: $STATE/volume-plugins
# The worker's own (see setup_mount_namespace): pods with dnsPolicy Default never get a
# resolver off this machine.
resolvConf: /etc/resolv.conf
failSwapOn: false
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
enforceNodeAllocatable: [pods]
EOF
}

# start_kubelet: what kubeadm's systemd drop-in (10-kubeadm.conf) does, waiting for
# the files kubeadm join writes instead of restarting until they exist.
start_kubelet() {
  local kubelet
  kubelet=$(k8s_bin kubelet)
  KUBELET_DIR=$KUBELET_DIR KUBELET=$kubelet WORKER_ADDRESS=$WORKER_ADDRESS CGROUP=$CGROUP \
    NETNS=$NETNS MOUNT_NS=$MOUNT_NS setsid bash -c '
    for procs in /sys/fs/cgroup/*/"$CGROUP"/system/cgroup.procs; do echo $$ >"$procs"; done
    until [[ -f $KUBELET_DIR/config.yaml && -f $KUBELET_DIR/kubeadm-flags.env ]]; do sleep 0.2; done
    source "$KUBELET_DIR/kubeadm-flags.env"
    echo "starting the kubelet: $KUBELET_KUBEADM_ARGS"
    # shellcheck disable=SC2086
    exec nsenter --net="/run/netns/$NETNS" --mount="$MOUNT_NS" -- "$KUBELET" \
      --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf \
      --config=/var/lib/kubelet/config.yaml $KUBELET_KUBEADM_ARGS --node-ip="$WORKER_ADDRESS"' \
    >>"$LOGS/kubelet.log" 2>&1 </dev/null &
  echo $! >"$(worker_pid_file kubelet)"
}

kubeadm_join() {
  local bin_dir
  bin_dir=$(dirname "$(k8s_bin kubeadm)")
  # kubeadm's preflight runs `kubelet --version`. It passes here with two warnings:
  # cgroup v1 is in maintenance mode, and there is no systemd kubelet service.
  start_in_worker kubeadm env PATH="$bin_dir:$PATH" "$bin_dir/kubeadm" join "${JOIN_ARGS[@]}" \
    --node-name "$NAME" --cri-socket "unix://$SOCKET" --patches "$STATE/patches"
  local pid
  pid=$(cat "$(worker_pid_file kubeadm)")
  # setsid's child is the kubeadm process: wait for it, whatever its parent.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
  rm -f "$(worker_pid_file kubeadm)"
  grep -q "This node has joined the cluster" "$LOGS/kubeadm.log" && return
  tail -30 "$LOGS/kubeadm.log" >&2
  # kubeadm's own rule: a worker that died without leaving the tenant still has a
  # Ready Node for up to the node monitor grace period.
  grep -q "already exists in the cluster" "$LOGS/kubeadm.log" &&
    log "the tenant still has a Ready Node $NAME: delete it (kubectl delete node $NAME) or wait until it is NotReady"
  die "kubeadm join failed (log: $LOGS/kubeadm.log)"
}

node_ready() {
  [[ $(nsenter --net="/run/netns/$NETNS" --mount="$MOUNT_NS" -- "$(k8s_bin kubectl)" \
    --kubeconfig /etc/kubernetes/kubelet.conf get node "$NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

main() {
  local started
  started=$(date +%s)
  if worker_healthy; then
    log "worker $NAME already running (kubelet pid $(cat "$(worker_pid_file kubelet)")); nothing to do"
    return 0
  fi
  [[ ${#JOIN_ARGS[@]} -gt 0 ]] || usage
  ip link show "$META_BRIDGE" >/dev/null 2>&1 ||
    die "no meta cluster bridge $META_BRIDGE: a worker joins a tenant of the meta cluster (hack/meta-up.sh)"
  if has_state; then
    log "found state of an earlier worker $NAME that is not healthy: cleaning up with worker-down first"
    "$HACK_DIR/worker-down.sh" "$NAME"
  fi
  mkdir -p "$LOGS" "$RUN/pids"
  rm -f "$LOGS"/*.log
  # A worker that failed to join leaves nothing running; its logs stay.
  trap 'status=$?; if [[ $status != 0 ]]; then log "worker-up $NAME failed: removing what it started"; "$HACK_DIR/worker-down.sh" "$NAME"; fi' EXIT
  allocate_number
  setup_network
  setup_cgroups
  setup_mount_namespace
  start_containerd
  write_kubelet_patch
  start_kubelet
  local join_started
  join_started=$(date +%s)
  log "kubeadm join as $NAME (worker address $WORKER_ADDRESS, pods $POD_SUBNET)"
  kubeadm_join
  wait_until "node $NAME Ready" 180 node_ready
  log "worker $NAME Ready $(( $(date +%s) - join_started ))s after kubeadm join started" \
    "($(( $(date +%s) - started ))s in all); logs: $LOGS"
}

main "$@"
