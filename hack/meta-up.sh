#!/usr/bin/env bash
# Starts the local meta cluster: a single-node Kubernetes built from upstream
# (hack/build-upstream.sh), with etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet and kube-proxy as host processes, and
# CoreDNS plus the local-path provisioner as pods from locally built images.
#
#   kubeconfig: /var/lib/nestor-meta/admin.kubeconfig   logs: /var/lib/nestor-meta/logs/
#
# NESTOR_META_PROFILING=true serves the meta kube-apiserver's /debug/pprof (off by
# default, as kubeadm's hardening guides have it) to profile it under a benchmark:
#   kubectl get --raw '/debug/pprof/profile?seconds=60' > apiserver.pprof
# A running cluster keeps the setting it was started with: meta-down first.
#
# Idempotent: on a healthy cluster it does nothing. A cluster whose processes
# were killed without meta-down (mounts, bridge, iptables left behind) is
# cleaned up by hack/meta-down.sh and started afresh.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

[[ $(id -u) == 0 ]] || die "meta-up needs root (it runs a kubelet, containerd and changes iptables)"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

cluster_healthy() {
  local component
  for component in "${COMPONENTS[@]}"; do pid_alive "$component" || return 1; done
  meta_kubectl get --raw /readyz >/dev/null 2>&1 || return 1
  node_ready 2>/dev/null || return 1
  [[ $(meta_kubectl -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null) -ge 1 ]] &&
    [[ $(meta_kubectl -n local-path-storage get deployment local-path-provisioner -o jsonpath='{.status.readyReplicas}' 2>/dev/null) -ge 1 ]]
}

ensure_packages() {
  local missing=() tool package
  for pair in containerd:containerd runc:runc iptables:iptables conntrack:conntrack socat:socat \
              ip:iproute2 busybox:busybox-static /usr/lib/cni/bridge:containernetworking-plugins \
              openssl:openssl gcc:gcc curl:curl; do
    tool=${pair%%:*}; package=${pair#*:}
    if [[ $tool == /* ]]; then [[ -e $tool ]] || missing+=("$package")
    else command -v "$tool" >/dev/null || missing+=("$package"); fi
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v go >/dev/null || die "Go is required to build the upstream binaries: Go 1.25 or newer" \
    "(k8s.io/kubernetes $KUBERNETES_UPGRADE_VERSION declares go 1.25.0; the build runs with GOTOOLCHAIN=local)"
}

# start COMPONENT COMMAND...: start_meta_process (hack/lib.sh), shared with hack/s3-up.sh.
start() { start_meta_process "$@"; }

save_and_set_sysctl() {
  local key=$1 value=$2 file="$META_DIR/sysctl.saved"
  grep -q "^$key=" "$file" 2>/dev/null || echo "$key=$(sysctl -n "$key")" >>"$file"
  sysctl -qw "$key=$value"
}

setup_host() {
  mkdir -p "$META_DIR" "$META_LOG_DIR" "$META_RUN_DIR/pids" "$META_DIR/pki"
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  save_and_set_sysctl net.ipv4.ip_forward 1
  save_and_set_sysctl net.bridge.bridge-nf-call-iptables 1
  # Every kubelet, apiserver and pod watching files costs inotify instances (default 128).
  save_and_set_sysctl fs.inotify.max_user_instances 8192
  save_and_set_sysctl fs.inotify.max_user_watches 1048576
  # Pods (kube-proxy's NodePorts on the node address) and the hairpin path need
  # the bridge up before any component binds to the node address.
  ip link add "$META_BRIDGE" type bridge
  ip addr add "$META_NODE_IP/${META_NODE_POD_SUBNET#*/}" dev "$META_BRIDGE"
  ip link set "$META_BRIDGE" up
  ip route add blackhole "$META_POD_CIDR"
  # Not a blackhole: a host process's connect() to a blackholed address fails
  # with EINVAL before kube-proxy's OUTPUT DNAT runs, so host -> ClusterIP
  # would break. Routed onto our bridge, an unclaimed Service IP is simply
  # never answered, and the packet still stays on this machine.
  ip route add "$META_SERVICE_CIDR" dev "$META_BRIDGE"
  iptables -N "$META_IPTABLES_CHAIN"
  iptables -A "$META_IPTABLES_CHAIN" -s "$META_POD_CIDR" ! -o "$META_BRIDGE" -j DROP \
    -m comment --comment "nestor meta cluster: pod traffic never leaves the machine"
  iptables -I FORWARD 1 -j "$META_IPTABLES_CHAIN"
}

# --- PKI (openssl; the meta cluster is tooling, the tenant PKI is Nestor's own) ---
PKI="$META_DIR/pki"
issue_cert() { # NAME CN O SANS(comma list, may be empty) [server|client|both]
  local name=$1 cn=$2 org=$3 sans=$4 usage=${5:-client}
  [[ -f $PKI/$name.crt ]] && return
  local ext="$PKI/$name.ext" eku=clientAuth
  [[ $usage == server ]] && eku=serverAuth
  [[ $usage == both ]] && eku=serverAuth,clientAuth
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$ext"
  local subject="/CN=$cn"
  [[ -n $org ]] && subject="/O=$org$subject"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

write_kubeconfig() { # FILE USER CERT_NAME
  local file=$1 user=$2 cert=$3
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nestor-meta
  cluster:
    server: https://$META_NODE_IP:6443
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI/$cert.key")
contexts:
- name: $user@nestor-meta
  context: {cluster: nestor-meta, user: $user}
current-context: $user@nestor-meta
EOF
  chmod 0600 "$file"
}

setup_pki() {
  if [[ ! -f $PKI/ca.crt ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=nestor-meta-ca" -days 3650 -out "$PKI/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
    openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  issue_cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$META_NODE_IP,IP:$META_KUBERNETES_SERVICE_IP,IP:127.0.0.1" server
  issue_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  issue_cert admin nestor-meta-admin system:masters ""
  issue_cert controller-manager system:kube-controller-manager "" ""
  issue_cert scheduler system:kube-scheduler "" ""
  issue_cert kube-proxy system:kube-proxy "" ""
  issue_cert kubelet "system:node:$META_NODE_NAME" system:nodes "DNS:$META_NODE_NAME,IP:$META_NODE_IP" both
  write_kubeconfig "$META_KUBECONFIG" admin admin
  write_kubeconfig "$META_DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$META_DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
  write_kubeconfig "$META_DIR/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  write_kubeconfig "$META_DIR/kubelet.kubeconfig" "system:node:$META_NODE_NAME" kubelet
}

start_control_plane() {
  start etcd "$(etcd_bin etcd)" --name=nestor-meta --data-dir="$META_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$META_ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$META_ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$META_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$META_ETCD_PEER_PORT" \
    --initial-cluster="nestor-meta=http://127.0.0.1:$META_ETCD_PEER_PORT" \
    --listen-metrics-urls=http://127.0.0.1:12381 --quota-backend-bytes=8589934592 \
    --unsafe-no-fsync=true
  wait_until "etcd" 30 "$(etcd_bin etcdctl)" --endpoints="http://127.0.0.1:$META_ETCD_CLIENT_PORT" endpoint health

  # Writes by anyone but the control plane itself are audited at Metadata
  # level: tests count the operator's writes from this log.
  cat >"$META_DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver", "system:kube-proxy"]
- level: None
  userGroups: ["system:nodes"]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
EOF
  # PodNodeSelector and PodTolerationRestriction let a namespace pin its pods to
  # a node by annotation: the scale benchmark puts its tenants' pods on a kwok node.
  start kube-apiserver "$(k8s_bin kube-apiserver)" \
    --advertise-address="$META_NODE_IP" --bind-address="$META_NODE_IP" --secure-port=6443 \
    --etcd-servers="http://127.0.0.1:$META_ETCD_CLIENT_PORT" \
    --service-cluster-ip-range="$META_SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction \
    --audit-policy-file="$META_DIR/audit-policy.yaml" --audit-log-path="$META_LOG_DIR/audit.log" \
    --audit-log-maxsize=200 --audit-log-maxbackup=2 --profiling="${NESTOR_META_PROFILING:-false}"
  wait_until "kube-apiserver /readyz" 60 meta_kubectl get --raw /readyz

  start kube-controller-manager "$(k8s_bin kube-controller-manager)" \
    --kubeconfig="$META_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$META_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$META_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --cluster-cidr="$META_POD_CIDR" --service-cluster-ip-range="$META_SERVICE_CIDR" --profiling=false
  start kube-scheduler "$(k8s_bin kube-scheduler)" --kubeconfig="$META_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$META_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$META_DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

# Every image the meta cluster runs is imported from $NESTOR_CACHE/images (nestor.local/...,
# and the pause image the CRI uses as sandbox image), and every pod asks for it with
# imagePullPolicy IfNotPresent, so the CRI never needs a registry. A pod naming any other
# image (a TenantCluster left at imageRepository registry.k8s.io, a typo) would make
# containerd pull it: write_containerd_config (lib.sh) fences every registry.
# tests/meta/smoke.sh checks the fence.
start_containerd() {
  mkdir -p "$META_DIR/containerd" "$META_RUN_DIR/containerd" "$META_DIR/cni/net.d"
  cat >"$META_DIR/cni/net.d/10-nestor-meta.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "nestor-meta",
  "plugins": [{
    "type": "bridge", "bridge": "$META_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": "$META_RUN_DIR/cni/networks",
             "ranges": [[{"subnet": "$META_NODE_POD_SUBNET", "rangeStart": "${META_NODE_IP%.*}.10", "gateway": "$META_NODE_IP"}]],
             "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
EOF
  write_containerd_config "$META_DIR/containerd/config.toml" "$META_DIR/containerd/root" \
    "$META_RUN_DIR/containerd/state" "$META_CONTAINERD_SOCKET" "$META_DIR/containerd/opt" \
    "$META_DIR/cni/net.d" "$REGISTRY_HOSTS_DIR"
  start containerd containerd --config "$META_DIR/containerd/config.toml"
  wait_until "containerd" 30 ctr --address "$META_CONTAINERD_SOCKET" version
  local archive
  for archive in "$NESTOR_CACHE"/images/*.oci.tar; do
    ctr --address "$META_CONTAINERD_SOCKET" -n k8s.io images import --no-unpack=false "$archive" >/dev/null
  done
  log "imported $(ls "$NESTOR_CACHE"/images/*.oci.tar | wc -l) images into containerd (namespace k8s.io)"
}

start_node() {
  mkdir -p "$META_DIR/kubelet"
  echo "nameserver 127.0.0.1" >"$META_DIR/resolv.conf"
  cat >"$META_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These kernels mount cgroup v1 only; kubelet 1.34 still supports it.
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$META_CONTAINERD_SOCKET
address: $META_NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$META_DNS_SERVICE_IP]
# Pods with dnsPolicy Default must never get an upstream resolver off this machine.
resolvConf: $META_DIR/resolv.conf
failSwapOn: false
# Locally imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
maxPods: 250
serializeImagePulls: false
volumePluginDir: $META_DIR/kubelet/volume-plugins
podLogsDir: $META_DIR/pod-logs
enforceNodeAllocatable: [pods]
EOF
  start kubelet "$(k8s_bin kubelet)" --config="$META_DIR/kubelet/config.yaml" \
    --kubeconfig="$META_DIR/kubelet.kubeconfig" --root-dir="$META_DIR/kubelet" \
    --node-ip="$META_NODE_IP" --hostname-override="$META_NODE_NAME"

  cat >"$META_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $META_DIR/kube-proxy.kubeconfig}
hostnameOverride: $META_NODE_NAME
bindAddress: $META_NODE_IP
clusterCIDR: $META_POD_CIDR
# NodePorts answer on the node address only, never on the VM's own interface.
nodePortAddresses: ["$META_NODE_IP/32"]
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0, min: 0}
iptables: {localhostNodePorts: false}
EOF
  start kube-proxy "$(k8s_bin kube-proxy)" --config="$META_DIR/kube-proxy.yaml"
  wait_until "node $META_NODE_NAME Ready" 90 node_ready
}

node_ready() {
  [[ $(meta_kubectl get node "$META_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

install_addons() {
  local manifest
  for manifest in "$HACK_DIR"/meta/*.yaml; do
    sed -e "s|@LOCAL_IMAGE_REPOSITORY@|$LOCAL_IMAGE_REPOSITORY|g" -e "s|@COREDNS_VERSION@|$COREDNS_VERSION|g" \
        -e "s|@LOCAL_PATH_PROVISIONER_VERSION@|$LOCAL_PATH_PROVISIONER_VERSION|g" -e "s|@BUSYBOX_TAG@|$BUSYBOX_TAG|g" \
        -e "s|@DNS_SERVICE_IP@|$META_DNS_SERVICE_IP|g" -e "s|@META_DIR@|$META_DIR|g" "$manifest" |
      meta_kubectl apply --server-side --field-manager=nestor-meta-up -f - >/dev/null
  done
  wait_until "CoreDNS rollout" 90 meta_kubectl -n kube-system rollout status deployment/coredns --timeout=1s
  wait_until "cluster DNS answering kubernetes.default.svc.cluster.local" 30 \
    busybox nslookup kubernetes.default.svc.cluster.local "$META_DNS_SERVICE_IP"
  wait_until "local-path provisioner rollout" 90 \
    meta_kubectl -n local-path-storage rollout status deployment/local-path-provisioner --timeout=1s
}

main() {
  local started
  started=$(date +%s)
  ensure_packages
  "$HACK_DIR/build-upstream.sh"
  "$HACK_DIR/build-images.sh"
  if cluster_healthy; then
    log "meta cluster already running and healthy; nothing to do (kubeconfig: $META_KUBECONFIG)"
    return 0
  fi
  if [[ -d $META_RUN_DIR || -d $META_DIR/etcd ]] || ip link show "$META_BRIDGE" >/dev/null 2>&1; then
    log "found state of an earlier meta cluster that is not healthy: cleaning up with meta-down first"
    "$HACK_DIR/meta-down.sh"
  fi
  setup_host
  setup_pki
  start_control_plane
  start_containerd
  start_node
  install_addons
  log "meta cluster ready in $(( $(date +%s) - started ))s; export KUBECONFIG=$META_KUBECONFIG"
}

main "$@"
