#!/usr/bin/env bash
# Workloads benchmark for `make bench` / `make bench-workers` (never part of `make test`).
# WORKERS_RUNS times (default 3), on a namespace watched by one host-process operator:
#   1. a joinable tenant is created (1 etcd member, ephemeral; 1 apiserver; local images;
#      spec.network NodePort on the meta node address 10.200.0.1, at a free node port of
#      30060-30099, a range no test uses) and waited for until Ready;
#   2. `nestor join` prints the kubeadm join line, hack/worker-up.sh runs it on a fresh
#      worker host (WORKER_IMAGES: pause kube-proxy coredns busybox), which returns once
#      the Node is Ready;
#   3. a busybox pod is created through the tenant's admin kubeconfig and placed by the
#      tenant's scheduler, and waited for until Running;
#   4. after WORKERS_IDLE_SECONDS of quiet, the memory (working set) and CPU of the
#      tenant's pods in the meta cluster, by component (kubelet summary API, as in
#      bench/density.sh): the tenant is idle apart from its one node and the pod;
#   5. worker-down, the tenant deleted, and its pods waited for until gone.
# Figures (seconds, host clock unless noted):
#   first_pod_running_s  TenantCluster created -> the busybox pod Running on the new worker (goal <= 30 s)
#   join_s               `kubeadm join` started -> Node Ready, as worker-up logs it (1 s resolution; goal <= 10 s)
#   worker_up_s          the whole worker-up (network, containerd, image import, join, Node Ready)
#   tenant_ready_s, nestor_join_s, pod_running_after_worker_s: the other legs of first_pod_running_s
# Every wait is bounded; a run that fails is recorded with its error and cleaned up.
#
# Usage: bench/workers.sh OUTPUT.json
# Knobs: WORKERS_RUNS (3), WORKERS_READY_TIMEOUT (300 s), WORKERS_POD_TIMEOUT (120 s),
#   WORKERS_IDLE_SECONDS (30), WORKER_IMAGES, NESTOR_BIN.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/workers.sh OUTPUT.json}
RUNS=${WORKERS_RUNS:-3}
READY_TIMEOUT=${WORKERS_READY_TIMEOUT:-300}
POD_TIMEOUT=${WORKERS_POD_TIMEOUT:-120}
IDLE_SECONDS=${WORKERS_IDLE_SECONDS:-30}
export WORKER_IMAGES=${WORKER_IMAGES:-pause kube-proxy coredns busybox}
NAMESPACE=nestor-workers-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-bench-workers.XXXXXX)
KUBECTL=$(k8s_bin kubectl)
[[ $(id -u) == 0 ]] || die "the workers benchmark needs root (hack/worker-up.sh)"
WORKER=

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [[ -z $WORKER ]] || "$HACK_DIR/worker-down.sh" "$WORKER" >/dev/null 2>&1 || true
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=180s >/dev/null 2>&1 ||
    log "warning: tenants of $NAMESPACE not all deleted within 180 s"
  stop_operator
  log "workers: deleting namespace $NAMESPACE (operator log kept in $WORK/operator.log)"
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

joinable_tenant_yaml() { # NAME NODE_PORT
  cat <<YAML
apiVersion: nestor.dev/v1alpha1
kind: TenantCluster
metadata: {name: $1, namespace: $NAMESPACE}
spec:
  version: "$TENANT_VERSION"
  imageRepository: $LOCAL_IMAGE_REPOSITORY
  etcd: {replicas: 1, storage: {ephemeral: true}}
  apiServer: {replicas: 1}
  network: {serviceType: NodePort, externalHost: 10.200.0.1, nodePort: $2}
YAML
}

pod_yaml() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: bench-first-pod, namespace: default}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: "$LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG", command: [sleep, "3600"]}
YAML
}

tenant_kubectl() { "$KUBECTL" --kubeconfig "$WORK/tenant.kubeconfig" "$@"; }
pod_phase() { tenant_kubectl -n default get pod bench-first-pod -o jsonpath='{.status.phase}' 2>/dev/null; }
pod_running() { [[ $(pod_phase) == Running ]]; }
# The pod is refused until the tenant's default ServiceAccount exists (controller-manager).
create_pod() { pod_yaml | tenant_kubectl create -f - >/dev/null 2>&1; }
nothing_labelled() { [[ -z $(kc -n "$NAMESPACE" get pods -l "$1" -o name) ]]; }

# tenant_footprint NAME: memory and CPU of the tenant's pods in the meta cluster, by component.
tenant_footprint() {
  kc -n "$NAMESPACE" get pods -l "$TENANT_LABEL=$1" -o json >"$WORK/pods.json"
  kc get --raw "/api/v1/nodes/$META_NODE_NAME/proxy/stats/summary" >"$WORK/summary.json"
  jq -c --slurpfile pods "$WORK/pods.json" --arg namespace "$NAMESPACE" '
    ($pods[0].items | map({key: .metadata.name, value: .metadata.labels["app.kubernetes.io/component"]}) | from_entries) as $component
    | [.pods[] | select(.podRef.namespace == $namespace and $component[.podRef.name] != null)
       | {component: $component[.podRef.name], memory_mib: ((.memory.workingSetBytes // 0) / 1048576),
          cpu_mcpu: ((.cpu.usageNanoCores // 0) / 1e6)}]
    | {memory_mib: (map(.memory_mib) | add | . * 10 | round / 10),
       cpu_mcpu: (map(.cpu_mcpu) | add | . * 10 | round / 10),
       components: (group_by(.component) | map({key: .[0].component,
         value: {memory_mib: (map(.memory_mib) | add | . * 10 | round / 10),
                 cpu_mcpu: (map(.cpu_mcpu) | add | . * 10 | round / 10)}}) | from_entries)}' "$WORK/summary.json"
}

# one_run I: appends one JSON line to $WORK/runs.jsonl.
one_run() {
  local i=$1 name="bw-$1" port created ready_at joined_at up_started up_ended running_at line
  local error="" footprint=null join_s=null
  WORKER="bw$(random_suffix | cut -c1-6)$i"
  port=$(free_node_port)
  log "workers: run $i/$RUNS: tenant $name (node port $port), worker $WORKER"
  created=$(now)
  joinable_tenant_yaml "$name" "$port" | kc create -f - >/dev/null
  if ! kc -n "$NAMESPACE" wait tenantcluster "$name" --for=condition=Ready=True --timeout="${READY_TIMEOUT}s" >/dev/null; then
    error="tenant not Ready within $READY_TIMEOUT s"
  fi
  ready_at=$(now)
  if [[ -z $error ]]; then
    local secret
    secret=$(kc -n "$NAMESPACE" get tenantcluster "$name" -o jsonpath='{.status.kubeconfigSecretName}')
    (umask 077 && kc -n "$NAMESPACE" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d >"$WORK/tenant.kubeconfig")
    if line=$(timeout 60 "$NESTOR_BIN" join "$name" -n "$NAMESPACE" --ttl 10m 2>>"$WORK/join.log"); then
      joined_at=$(now)
      local -a join
      read -ra join <<<"$line"
      up_started=$(now)
      if timeout 300 "$HACK_DIR/worker-up.sh" "$WORKER" -- "${join[@]}" >"$WORK/worker-up-$i.log" 2>&1; then
        up_ended=$(now)
        join_s=$(sed -n 's/.* Ready \([0-9]*\)s after kubeadm join started.*/\1/p' "$WORK/worker-up-$i.log" | tail -1)
        [[ -n $join_s ]] || join_s=null
        if wait_until "the tenant's default ServiceAccount (pod created)" 60 create_pod &&
          wait_until "pod bench-first-pod Running" "$POD_TIMEOUT" pod_running; then
          running_at=$(now)
          log "  first pod Running $(seconds "$created" "$running_at") s after the TenantCluster was created"
          sleep "$IDLE_SECONDS"
          footprint=$(tenant_footprint "$name")
        else
          error="pod not Running within $POD_TIMEOUT s (phase: $(pod_phase))"
          tenant_kubectl get pods -A -o wide >"$WORK/pods-$i.txt" 2>&1 || true
        fi
      else
        error="worker-up failed (log kept in $WORK/worker-up-$i.log)"
      fi
    else
      error="nestor join failed"
    fi
  fi
  [[ -z $error ]] || log "  run $i: $error"
  jq -nc --argjson run "$i" --arg error "$error" --arg worker "$WORKER" --argjson created "$created" \
    --argjson ready "$ready_at" --argjson joined "${joined_at:-null}" --argjson up_started "${up_started:-null}" \
    --argjson up_ended "${up_ended:-null}" --argjson running "${running_at:-null}" --argjson join_s "$join_s" \
    --argjson footprint "$footprint" '
    def d($a; $b): if $a == null or $b == null then null else ($b - $a) * 1000 | round / 1000 end;
    {run: $run, worker: $worker, error: (if $error == "" then null else $error end),
     first_pod_running_s: d($created; $running), tenant_ready_s: d($created; $ready),
     nestor_join_s: d($ready; $joined), worker_up_s: d($up_started; $up_ended), join_s: $join_s,
     pod_running_after_worker_s: d($up_ended; $running), idle_footprint: $footprint}' >>"$WORK/runs.jsonl"
  # Clean-up: the worker, then the tenant and its pods (bounded).
  "$HACK_DIR/worker-down.sh" "$WORKER" >/dev/null 2>&1 || log "warning: worker-down $WORKER failed"
  WORKER=
  kc -n "$NAMESPACE" delete tenantcluster "$name" --wait=true --timeout=120s >/dev/null 2>&1 || true
  wait_until "pods of $name gone" 120 nothing_labelled "$TENANT_LABEL=$name" || log "warning: pods of $name still present"
  unset joined_at up_started up_ended running_at
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  kc create namespace "$NAMESPACE" >/dev/null
  start_operator "$NAMESPACE" "$WORK/operator.log"
  : >"$WORK/runs.jsonl"
  local i
  for ((i = 1; i <= RUNS; i++)); do one_run "$i"; done
  jq -s --argjson ready_timeout "$READY_TIMEOUT" --argjson pod_timeout "$POD_TIMEOUT" --argjson idle "$IDLE_SECONDS" \
    --arg images "$WORKER_IMAGES" '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def stats(f): [.[] | select(.error == null) | f | select(. != null)]
                  | {median: median, min: min, max: max, samples: .};
    . as $runs
    | {
      tenant: "1 etcd (ephemeral), 1 apiserver, 1 controller-manager, 1 scheduler; NodePort 10.200.0.1:300xx; local images",
      worker_images: $images,
      runs: ($runs | length),
      ok_runs: ([$runs[] | select(.error == null)] | length),
      ready_timeout_s: $ready_timeout,
      pod_timeout_s: $pod_timeout,
      first_pod_running_s: ($runs | stats(.first_pod_running_s)),
      join_s: ($runs | stats(.join_s)),
      worker_up_s: ($runs | stats(.worker_up_s)),
      tenant_ready_s: ($runs | stats(.tenant_ready_s)),
      nestor_join_s: ($runs | stats(.nestor_join_s)),
      pod_running_after_worker_s: ($runs | stats(.pod_running_after_worker_s)),
      idle_footprint: {
        unit: "MiB working set, mCPU (kubelet summary, cAdvisor), the tenant'"'"'s pods in the meta cluster",
        window_s: $idle,
        note: "measured \($idle) s after the first pod was Running: one node joined, one pod",
        memory_mib: ($runs | stats(.idle_footprint.memory_mib)),
        cpu_mcpu: ($runs | stats(.idle_footprint.cpu_mcpu)),
        by_component: ([$runs[] | select(.error == null) | .idle_footprint.components | to_entries[]] | group_by(.key)
          | map({key: .[0].key, value: {memory_mib: (map(.value.memory_mib) | median),
                                        cpu_mcpu: (map(.value.cpu_mcpu) | median)}}) | from_entries)
      },
      samples: $runs
    }' "$WORK/runs.jsonl" >"$OUTPUT"
  log "workers benchmark written to $OUTPUT"
}

main "$@"
