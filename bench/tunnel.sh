#!/usr/bin/env bash
# Tunnel benchmark for `make bench` / `make bench-tunnel` (never part of `make test`).
# For each routing, tunnel (spec.network.tunnel.enabled: true, the default) then direct
# (false), on a namespace watched by one host-process operator:
#   1. a joinable tenant (1 etcd member, ephemeral; 1 apiserver; local images; NodePort on
#      the meta node address 10.200.0.1 at a free node port of 30060-30099) until Ready;
#   2. a worker host joins it (hack/worker-up.sh with the line `nestor join` prints); for
#      the direct routing the worker keeps worker-up's rule that lets the meta cluster's
#      pods reach its kubelet, for the tunnel it drops every connection from the meta pod
#      network (on the worker, as the tunnel e2e test does), so only the tunnel carries;
#   3. a busybox pod on it, until Running and its logs come through the apiserver;
#   4. TUNNEL_EXECS times `kubectl exec bench-pod -- true` through the tenant endpoint,
#      one after another, each timed (the kubectl process, wall clock);
#   5. with the tunnel, after TUNNEL_IDLE_SECONDS of quiet: the working set of the
#      konnectivity-server container (kubelet summary of the meta node) and of the
#      agent pod (kubelet summary of the worker, read through the tenant apiserver).
# Figures:
#   exec_s.{tunnel,direct}   median, p90, min, max of one `kubectl exec -- true`
#   exec_ratio               tunnel median / direct median (goal <= 1.5)
#   server_sidecar_mib       added memory per tenant: konnectivity-server beside its apiserver
#   agent_mib                added memory per node: the konnectivity-agent pod
# Usage: bench/tunnel.sh OUTPUT.json
# Knobs: TUNNEL_EXECS (30), TUNNEL_IDLE_SECONDS (20), TUNNEL_READY_TIMEOUT (300 s), NESTOR_BIN.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/tunnel.sh OUTPUT.json}
EXECS=${TUNNEL_EXECS:-30}
IDLE_SECONDS=${TUNNEL_IDLE_SECONDS:-20}
READY_TIMEOUT=${TUNNEL_READY_TIMEOUT:-300}
export WORKER_IMAGES="pause kube-proxy coredns busybox kas-network-proxy-proxy-agent"
NAMESPACE=nestor-tunnel-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-bench-tunnel.XXXXXX)
KUBECTL=$(k8s_bin kubectl)
[[ $(id -u) == 0 ]] || die "the tunnel benchmark needs root (hack/worker-up.sh)"
WORKER=

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [[ -z $WORKER ]] || "$HACK_DIR/worker-down.sh" "$WORKER" >/dev/null 2>&1 || true
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=180s >/dev/null 2>&1 ||
    log "warning: tenants of $NAMESPACE not all deleted within 180 s"
  stop_operator
  log "tunnel: deleting namespace $NAMESPACE (operator log kept in $WORK/operator.log)"
  kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  exit "$status"
}

# free_node_port: a node port of 30060-30099 no meta Service holds.
free_node_port() {
  local taken port
  taken=$(kc get services -A -o jsonpath='{range .items[*]}{range .spec.ports[*]}{.nodePort}{"\n"}{end}{end}')
  for ((port = 30060; port <= 30099; port++)); do
    grep -qx "$port" <<<"$taken" || { echo "$port"; return; }
  done
  die "no free node port in 30060-30099"
}

tenant_yaml() { # NAME NODE_PORT TUNNEL
  cat <<YAML
apiVersion: nestor.dev/v1alpha1
kind: TenantCluster
metadata: {name: $1, namespace: $NAMESPACE}
spec:
  version: "$TENANT_VERSION"
  imageRepository: $LOCAL_IMAGE_REPOSITORY
  etcd: {replicas: 1, storage: {ephemeral: true}}
  apiServer: {replicas: 1}
  network: {serviceType: NodePort, externalHost: 10.200.0.1, nodePort: $2, tunnel: {enabled: $3}}
YAML
}

pod_yaml() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: bench-pod, namespace: default}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: "$LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG", command: [sh, -c, "echo bench-ready; exec sleep 3600"]}
YAML
}

tenant_kubectl() { "$KUBECTL" --kubeconfig "$WORK/tenant.kubeconfig" --request-timeout=30s "$@"; }
create_pod() { pod_yaml | tenant_kubectl create -f - >/dev/null 2>&1; }
pod_running() { [[ $(tenant_kubectl -n default get pod bench-pod -o jsonpath='{.status.phase}' 2>/dev/null) == Running ]]; }
logs_work() { tenant_kubectl -n default logs bench-pod 2>/dev/null | grep -q bench-ready; }
nothing_labelled() { [[ -z $(kc -n "$NAMESPACE" get pods -l "$1" -o name) ]]; }

# The worker, cut off from the meta pod network (see operator/tests/support/worker.rs).
cut_off_worker() {
  local chain
  for chain in INPUT FORWARD; do
    nsenter --net="/run/netns/$(worker_netns "$WORKER")" iptables -I "$chain" 1 -s "$META_POD_CIDR" \
      -m conntrack --ctdir ORIGINAL -j DROP -m comment --comment "bench: meta pods cannot reach the worker"
  done
}

# exec_samples: EXECS timed `kubectl exec -- true`, one JSON number (seconds) a line.
exec_samples() {
  local i started ended
  for ((i = 1; i <= EXECS; i++)); do
    started=$(now)
    tenant_kubectl -n default exec bench-pod -- true >/dev/null 2>>"$WORK/exec-errors.log" || {
      log "  exec $i failed"
      continue
    }
    ended=$(now)
    seconds "$started" "$ended"
    echo # `seconds` prints no newline
  done
}

# footprint TENANT: {server_sidecar_mib, agent_mib} from the two kubelets' summaries.
footprint() {
  kc get --raw "/api/v1/nodes/$META_NODE_NAME/proxy/stats/summary" >"$WORK/meta-summary.json"
  tenant_kubectl get --raw "/api/v1/nodes/$WORKER/proxy/stats/summary" >"$WORK/worker-summary.json"
  jq -nc --slurpfile meta "$WORK/meta-summary.json" --slurpfile worker "$WORK/worker-summary.json" \
    --arg namespace "$NAMESPACE" --arg tenant "$1" '
    def mib: (. // 0) / 1048576 * 10 | round / 10;
    {server_sidecar_mib: ([$meta[0].pods[] | select(.podRef.namespace == $namespace
        and (.podRef.name | startswith($tenant + "-apiserver-"))) | .containers[]
        | select(.name == "konnectivity-server") | .memory.workingSetBytes] | first | mib),
     apiserver_mib: ([$meta[0].pods[] | select(.podRef.namespace == $namespace
        and (.podRef.name | startswith($tenant + "-apiserver-"))) | .containers[]
        | select(.name == "kube-apiserver") | .memory.workingSetBytes] | first | mib),
     agent_mib: ([$worker[0].pods[] | select(.podRef.namespace == "kube-system"
        and (.podRef.name | startswith("konnectivity-agent-"))) | .memory.workingSetBytes] | first | mib)}'
}

# one_mode ROUTING (tunnel|direct): appends one JSON line to $WORK/modes.jsonl.
one_mode() {
  local routing=$1 name="bt-$1" port enabled=true error="" samples="[]" footprint=null line
  [[ $routing == tunnel ]] || enabled=false
  WORKER="bt$(random_suffix | cut -c1-6)${routing:0:1}"
  port=$(free_node_port)
  log "tunnel: $routing: tenant $name (node port $port), worker $WORKER"
  # The meta cluster's CRD is shared: one without spec.network.tunnel prunes the field.
  "$NESTOR_BIN" crd | kc apply --server-side --force-conflicts --field-manager=nestor-bench -f - >/dev/null
  tenant_yaml "$name" "$port" "$enabled" | kc create -f - >/dev/null
  [[ $(kc -n "$NAMESPACE" get tenantcluster "$name" -o jsonpath='{.spec.network.tunnel.enabled}') == "$enabled" ]] ||
    die "the stored TenantCluster lost spec.network.tunnel: the meta cluster's CRD is another build's"
  kc -n "$NAMESPACE" wait tenantcluster "$name" --for=condition=Ready=True --timeout="${READY_TIMEOUT}s" >/dev/null ||
    error="tenant not Ready within $READY_TIMEOUT s"
  if [[ -z $error ]]; then
    local secret
    secret=$(kc -n "$NAMESPACE" get tenantcluster "$name" -o jsonpath='{.status.kubeconfigSecretName}')
    (umask 077 && kc -n "$NAMESPACE" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d >"$WORK/tenant.kubeconfig")
    line=$(timeout 60 "$NESTOR_BIN" join "$name" -n "$NAMESPACE" --ttl 10m 2>>"$WORK/join.log") || error="nestor join failed"
  fi
  if [[ -z $error ]]; then
    local -a join
    read -ra join <<<"$line"
    if timeout 300 "$HACK_DIR/worker-up.sh" "$WORKER" -- "${join[@]}" >"$WORK/worker-up-$routing.log" 2>&1; then
      [[ $routing == direct ]] || cut_off_worker
      if wait_until "the default ServiceAccount (pod created)" 60 create_pod &&
        wait_until "bench-pod Running" 120 pod_running && wait_until "bench-pod logs through the apiserver" 120 logs_work; then
        tenant_kubectl -n default exec bench-pod -- true >/dev/null 2>&1 || true # warm-up
        samples=$(exec_samples | jq -sc .)
        log "  $routing: $(jq -r 'sort | "median \(.[length / 2 | floor]) s of \(length) execs"' <<<"$samples")"
        if [[ $routing == tunnel ]]; then
          sleep "$IDLE_SECONDS"
          footprint=$(footprint "$name") || footprint=null
        fi
      else
        error="pod not Running or its logs not served within the timeouts"
      fi
    else
      error="worker-up failed (log kept in $WORK/worker-up-$routing.log)"
    fi
  fi
  [[ -z $error ]] || log "  $routing: $error"
  jq -nc --arg routing "$routing" --arg error "$error" --argjson samples "$samples" --argjson footprint "$footprint" \
    '{routing: $routing, error: (if $error == "" then null else $error end), exec_s: $samples, footprint: $footprint}' \
    >>"$WORK/modes.jsonl"
  "$HACK_DIR/worker-down.sh" "$WORKER" >/dev/null 2>&1 || log "warning: worker-down $WORKER failed"
  WORKER=
  kc -n "$NAMESPACE" delete tenantcluster "$name" --wait=true --timeout=120s >/dev/null 2>&1 || true
  wait_until "pods of $name gone" 120 nothing_labelled "$TENANT_LABEL=$name" || log "warning: pods of $name still present"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  kc create namespace "$NAMESPACE" >/dev/null
  start_operator "$NAMESPACE" "$WORK/operator.log"
  : >"$WORK/modes.jsonl"
  one_mode tunnel
  one_mode direct
  jq -s --argjson execs "$EXECS" --argjson idle "$IDLE_SECONDS" '
    def stats: sort | if length == 0 then null else
      {median: .[length / 2 | floor], p90: .[(length * 0.9 | floor)], min: .[0], max: .[-1], samples: length} end;
    (map({key: .routing, value: .}) | from_entries) as $by
    | {
      tenant: "1 etcd (ephemeral), 1 apiserver, local images; one worker host; NodePort 10.200.0.1:300xx",
      execs_per_routing: $execs,
      exec_s: {tunnel: ($by.tunnel.exec_s | stats), direct: ($by.direct.exec_s | stats)},
      exec_ratio: (if ($by.tunnel.exec_s | length) > 0 and ($by.direct.exec_s | length) > 0
        then (($by.tunnel.exec_s | stats | .median) / ($by.direct.exec_s | stats | .median) * 100 | round / 100)
        else null end),
      exec_ratio_goal: 1.5,
      memory: ($by.tunnel.footprint + {unit: "MiB working set (kubelet summary, cAdvisor)",
        note: "\($idle) s after the last exec; server_sidecar_mib is added per tenant (per apiserver replica), agent_mib per node"}),
      errors: [.[] | select(.error != null) | {routing, error}]
    }' "$WORK/modes.jsonl" >"$OUTPUT"
  log "tunnel benchmark written to $OUTPUT"
}

main "$@"
