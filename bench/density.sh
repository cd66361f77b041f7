#!/usr/bin/env bash
# Density benchmark for `make bench` / `make bench-density` (never part of `make test`):
# real tenants (local images; 1 etcd member with ephemeral storage, 1 apiserver,
# 1 controller-manager) added one at a time to a dedicated namespace watched by one
# operator, each waited for until Ready (DENSITY_READY_TIMEOUT), until one fails to become
# Ready or DENSITY_MAX tenants are Ready. Then, after DENSITY_IDLE_SECONDS of quiet, the
# memory (working set) and CPU of every tenant's pods from the kubelet's summary API
# (/api/v1/nodes/<node>/proxy/stats/summary: cAdvisor's view of the pods' cgroups). The
# node's own figures are recorded after each tenant, to see what runs out. Every tenant
# is deleted at the end (also on Ctrl-C or error).
#
# Usage: bench/density.sh OUTPUT.json
# Knobs: DENSITY_MAX (12), DENSITY_READY_TIMEOUT (240 s), DENSITY_IDLE_SECONDS (60), NESTOR_BIN.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/density.sh OUTPUT.json}
MAX=${DENSITY_MAX:-12}
READY_TIMEOUT=${DENSITY_READY_TIMEOUT:-240}
IDLE_SECONDS=${DENSITY_IDLE_SECONDS:-60}
NAMESPACE=nestor-density-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-density.XXXXXX)

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Tenants first, while the operator still runs: it owns their finalizer.
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=300s >/dev/null 2>&1 ||
    log "warning: tenants of $NAMESPACE not all deleted within 300 s"
  stop_operator
  log "density: deleting namespace $NAMESPACE (operator log kept in $WORK/operator.log)"
  kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  exit "$status"
}

summary() { kc get --raw "/api/v1/nodes/$META_NODE_NAME/proxy/stats/summary"; }

# node_sample TENANTS_READY: the node's memory and CPU now, as one JSON line.
node_sample() {
  summary | jq -c --argjson ready "$1" '.node | {
    tenants_ready: $ready,
    node_cpu_mcpu: ((.cpu.usageNanoCores // 0) / 1e6 | round),
    node_memory_working_set_mib: ((.memory.workingSetBytes // 0) / 1048576 | round),
    node_memory_available_mib: ((.memory.availableBytes // 0) / 1048576 | round)}'
}

# tenant_footprints: per tenant, the memory and CPU of its pods, by component.
tenant_footprints() {
  # Files, not arguments: the pods' JSON outgrows the argument list.
  kc -n "$NAMESPACE" get pods -l "$TENANT_LABEL" -o json >"$WORK/pods.json"
  summary >"$WORK/summary.json"
  jq -c --slurpfile pods "$WORK/pods.json" --arg namespace "$NAMESPACE" '
    ($pods[0].items | map({key: .metadata.name, value: {tenant: .metadata.labels["nestor.dev/tenant-cluster"],
                                                        component: .metadata.labels["app.kubernetes.io/component"]}})
     | from_entries) as $owner
    | [.pods[] | select(.podRef.namespace == $namespace and $owner[.podRef.name] != null)
       | $owner[.podRef.name] + {memory_mib: ((.memory.workingSetBytes // 0) / 1048576),
                                  cpu_mcpu: ((.cpu.usageNanoCores // 0) / 1e6)}]
    | group_by(.tenant)
    | map({tenant: .[0].tenant,
           memory_mib: (map(.memory_mib) | add | . * 10 | round / 10),
           cpu_mcpu: (map(.cpu_mcpu) | add | . * 10 | round / 10),
           components: (map({key: .component, value: {memory_mib: (.memory_mib * 10 | round / 10),
                                                      cpu_mcpu: (.cpu_mcpu * 10 | round / 10)}}) | from_entries)})' \
    "$WORK/summary.json"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  kc create namespace "$NAMESPACE" >/dev/null
  start_operator "$NAMESPACE" "$WORK/operator.log"
  : >"$WORK/steps.jsonl"
  node_sample 0 >"$WORK/node-before.json"
  local i name created ready_s failure=null
  for ((i = 1; i <= MAX; i++)); do
    name="density-$i"
    log "density: tenant $i/$MAX"
    created=$(now)
    tenant_yaml "$name" 1 1 true | kc create -f - >/dev/null
    if kc -n "$NAMESPACE" wait tenantcluster "$name" --for=condition=Ready=True --timeout="${READY_TIMEOUT}s" >/dev/null; then
      ready_s=$(seconds "$created" "$(now)")
      log "  $name Ready after ${ready_s}s"
      node_sample "$i" | jq -c --arg name "$name" --argjson ready_s "$ready_s" '{tenant: $name, ready_s: $ready_s} + .' >>"$WORK/steps.jsonl"
    else
      kc -n "$NAMESPACE" get tenantcluster "$name" -o json >"$WORK/failed-tenant.json"
      kc -n "$NAMESPACE" get pods -l "$TENANT_LABEL=$name" -o json >"$WORK/failed-pods.json"
      failure=$(jq -n --arg name "$name" --argjson timeout "$READY_TIMEOUT" \
        --slurpfile tenant "$WORK/failed-tenant.json" --slurpfile pods "$WORK/failed-pods.json" '
        ($tenant[0].status // {}) as $status
        | {tenant: $name, error: "not Ready within \($timeout) s",
           not_ready: [$status.conditions[]? | select(.status != "True") | "\(.type): \(.message // .reason)"],
           pods: [$pods[0].items[] | {name: .metadata.name, phase: .status.phase,
                  containers: [.status.containerStatuses[]? | {name, ready, restartCount, state}]}]}')
      log "  $name not Ready within ${READY_TIMEOUT}s: stopping"
      break
    fi
  done
  local ready
  ready=$(jq -s length "$WORK/steps.jsonl")
  log "density: $ready tenant(s) Ready; idle for ${IDLE_SECONDS}s before measuring their pods"
  sleep "$IDLE_SECONDS"
  tenant_footprints >"$WORK/footprints.json"
  jq -n --argjson max "$MAX" --argjson timeout "$READY_TIMEOUT" --argjson idle "$IDLE_SECONDS" \
    --argjson ready "$ready" --argjson failure "$failure" --slurpfile steps "$WORK/steps.jsonl" \
    --slurpfile before "$WORK/node-before.json" --slurpfile footprints "$WORK/footprints.json" \
    --argjson node_after "$(node_sample "$ready")" '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    ($footprints[0]) as $footprints
    | def stats(f): [$footprints[] | f] | {median: median, min: min, max: max};
    {
      cap: $max,
      ready_timeout_s: $timeout,
      tenant: "1 etcd (ephemeral), 1 apiserver, 1 controller-manager; local images",
      ready: $ready,
      stopped_by: (if $failure == null then "cap" else "failure" end),
      failure: $failure,
      steps: $steps,
      node_before: $before[0],
      node_idle_after: $node_after,
      idle_window_s: $idle,
      footprint: {
        unit: "MiB working set, mCPU (kubelet summary, cAdvisor)",
        memory_mib: stats(.memory_mib),
        cpu_mcpu: stats(.cpu_mcpu),
        by_component: ([$footprints[].components | to_entries[]] | group_by(.key)
          | map({key: .[0].key, value: {memory_mib: (map(.value.memory_mib) | median),
                                        cpu_mcpu: (map(.value.cpu_mcpu) | median)}}) | from_entries),
        tenants: $footprints
      }
    }' >"$OUTPUT"
  log "density benchmark written to $OUTPUT"
}

main "$@"
