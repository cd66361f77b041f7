#!/usr/bin/env bash
# Smoke test of the local meta cluster (needs `make meta-up`): a 3-member etcd
# StatefulSet from the locally built image, with a headless Service and
# local-path PVCs, forms a cluster; pod DNS names resolve from another pod; a
# ClusterIP Service answers from a pod and a NodePort from the host; a deleted
# member pod is recreated and rejoins with its data; a pod whose image was never
# imported makes containerd pull it, and that pull ends at once at the dead loopback
# endpoint of the registry fence (hack/meta-up.sh), not at a registry.
# Prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HACK_DIR="$REPO_ROOT/hack"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

NS="meta-smoke-$$"
ETCD_IMAGE="$LOCAL_IMAGE_REPOSITORY/etcd:${ETCD_VERSION#v}-0"
BUSYBOX_IMAGE="$LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG"
passed=0 failed=0

check() { # DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then passed=$((passed + 1)); echo "ok   - $what"
  else failed=$((failed + 1)); echo "FAIL - $what"; fi
}
k() { meta_kubectl -n "$NS" "$@"; }
cleanup() { meta_kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1; }
trap cleanup EXIT

meta_kubectl create namespace "$NS" >/dev/null
members=""
for i in 0 1 2; do members+="${members:+,}etcd-$i=http://etcd-$i.etcd.$NS.svc:2380"; done
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: etcd}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: smoke-etcd}
  ports: [{name: client, port: 2379}, {name: peer, port: 2380}]
---
apiVersion: v1
kind: Service
metadata: {name: etcd-client}
spec:
  selector: {app: smoke-etcd}
  ports: [{name: client, port: 2379}]
---
apiVersion: v1
kind: Service
metadata: {name: etcd-nodeport}
spec:
  type: NodePort
  selector: {app: smoke-etcd}
  ports: [{name: client, port: 2379}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: etcd}
spec:
  serviceName: etcd
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: smoke-etcd}}
  template:
    metadata: {labels: {app: smoke-etcd}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: etcd
        image: $ETCD_IMAGE
        imagePullPolicy: IfNotPresent
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        command: [etcd, --name=\$(POD_NAME), --data-dir=/var/lib/etcd/data,
          --listen-client-urls=http://0.0.0.0:2379, --listen-peer-urls=http://0.0.0.0:2380,
          --advertise-client-urls=http://\$(POD_NAME).etcd.$NS.svc:2379,
          --initial-advertise-peer-urls=http://\$(POD_NAME).etcd.$NS.svc:2380,
          "--initial-cluster=$members", --initial-cluster-state=new, --initial-cluster-token=$NS]
        readinessProbe:
          httpGet: {path: /health, port: 2379}
          periodSeconds: 2
        volumeMounts: [{name: data, mountPath: /var/lib/etcd}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: $BUSYBOX_IMAGE
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
EOF

statefulset_ready() { [[ $(k get statefulset etcd -o jsonpath='{.status.readyReplicas}') == 3 ]]; }
member_count() { k exec etcd-0 -- etcdctl member list 2>/dev/null | grep -c started; }
three_members() { [[ $(member_count) == 3 ]]; }
resolves() { k exec client -- nslookup "$1" >/dev/null 2>&1; }
# Through the ClusterIP Service by its DNS name, from a pod. (Debian's static
# busybox wget segfaults in glibc's static resolver, so etcdctl is the client.)
cluster_ip_answers() {
  k exec etcd-0 -- etcdctl --endpoints=http://etcd-client:2379 --dial-timeout=3s endpoint health 2>&1 | grep -q "is healthy"
}
node_port_answers() {
  local port
  port=$(k get service etcd-nodeport -o jsonpath='{.spec.ports[0].nodePort}')
  curl -sf -m 3 "http://$META_NODE_IP:$port/health" | grep -q '"health":"true"'
}
claims_bound() { [[ $(k get pvc -o jsonpath='{.items[*].status.phase}') == "Bound Bound Bound" ]]; }
client_running() { [[ $(k get pod client -o jsonpath='{.status.phase}') == Running ]]; }
value_survived() {
  k exec etcd-1 -- etcdctl --endpoints=http://127.0.0.1:2379 get smoke-key --print-value-only | grep -qx before-restart
}
all_members_healthy() {
  k exec etcd-0 -- etcdctl --endpoints="http://etcd-0.etcd.$NS.svc:2379,http://etcd-1.etcd.$NS.svc:2379,http://etcd-2.etcd.$NS.svc:2379" \
    endpoint health 2>&1 | grep -c "is healthy" | grep -qx 3
}

# The registry fence. The pod is created only when the running containerd's CRI started
# with the fence (its startup log line names the hosts directory) and the image is really
# not imported, so this never makes an unfenced (older) cluster pull from the internet.
FENCED_IMAGE="registry.k8s.io/kube-apiserver:$KUBERNETES_VERSION"
FENCE_ERROR="dial tcp ${REGISTRY_FENCE#https://}: connect: connection refused"
fence_configured() {
  grep -a 'Start cri plugin with config' "$META_LOG_DIR/containerd.log" 2>/dev/null | tail -n 1 |
    grep -qF "Registry:{ConfigPath:$REGISTRY_HOSTS_DIR " &&
    grep -qxF "server = \"$REGISTRY_FENCE\"" "$REGISTRY_HOSTS_DIR/_default/hosts.toml"
}
image_not_local() {
  [[ -z $(ctr --address "$META_CONTAINERD_SOCKET" -n k8s.io images ls -q "name==$FENCED_IMAGE") ]]
}
pull_failures() {
  k get events --field-selector involvedObject.name=fenced,reason=Failed -o jsonpath='{.items[*].message}'
}
pull_refused() { pull_failures | grep -qF "$FENCE_ERROR"; }
fence_detail=""
fenced_pull() {
  fence_configured ||
    { fence_detail="containerd did not start with the registry fence; no pull attempted"; return 1; }
  image_not_local || { fence_detail="$FENCED_IMAGE is imported locally; nothing would be pulled"; return 1; }
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: fenced}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: fenced
    image: $FENCED_IMAGE
    imagePullPolicy: IfNotPresent
EOF
  local started
  started=$(date +%s)
  # Bounded: a pull that went anywhere but the closed loopback port would hang in a dial or
  # fail with another message; either way the wait ends here.
  if wait_until "pull of $FENCED_IMAGE refused" 45 pull_refused; then
    fence_detail="refused $(( $(date +%s) - started ))s after the pod was created: $FENCE_ERROR"
  else
    fence_detail="no refusal by the fence within 45s; pull failures: $(pull_failures | tail -c 400)"
    return 1
  fi
}
check "a pull of a non-local image ends at the loopback registry fence" fenced_pull
echo "     ($fence_detail)"

started=$(date +%s)
check "3-member etcd StatefulSet with PVCs becomes Ready" wait_until "etcd StatefulSet Ready" 180 statefulset_ready
echo "     (Ready after $(( $(date +%s) - started ))s)"
check "every claim is Bound by the default StorageClass" claims_bound
check "etcd member list shows 3 started members" wait_until "3 members" 30 three_members
wait_until "client pod Running" 60 client_running
for i in 0 1 2; do
  check "etcd-$i.etcd.$NS.svc.cluster.local resolves from another pod" \
    wait_until "DNS for etcd-$i" 30 resolves "etcd-$i.etcd.$NS.svc.cluster.local"
done
check "ClusterIP Service answers from a pod" wait_until "ClusterIP Service" 30 cluster_ip_answers
check "NodePort answers from the host on the node address" wait_until "NodePort" 30 node_port_answers

k exec etcd-0 -- etcdctl put smoke-key before-restart >/dev/null
old_uid=$(k get pod etcd-1 -o jsonpath='{.metadata.uid}')
k delete pod etcd-1 --wait=true >/dev/null
started=$(date +%s)
recreated_and_ready() {
  local uid ready
  uid=$(k get pod etcd-1 -o jsonpath='{.metadata.uid}' 2>/dev/null)
  ready=$(k get pod etcd-1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)
  [[ -n $uid && $uid != "$old_uid" && $ready == True ]]
}
check "deleted member pod is recreated and Ready" wait_until "etcd-1 back" 120 recreated_and_ready
echo "     (back after $(( $(date +%s) - started ))s)"
check "recreated member rejoins: 3 members, all healthy" wait_until "all members healthy" 60 all_members_healthy
check "data written before the restart is read back from the rejoined member" value_survived

echo "meta smoke: $passed passed, $failed failed"
[[ $failed == 0 ]]
