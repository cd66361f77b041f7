#!/usr/bin/env bash
# Cluster benchmarks for `make bench` (hack/bench.sh runs this; never part of `make test`).
# Runs a namespace-scoped operator as a host process against the meta cluster and measures:
#   time_to_ready.single   1 etcd member (PVC from the default StorageClass), 1 apiserver, 1 controller-manager
#   time_to_ready.ha       3 etcd members (PVC), 2 apiservers, 1 controller-manager
#   burst                  N tenants (1 etcd member, ephemeral storage) created at once
#   footprint              operator RSS and CPU while idle with 0, 1 and N Ready tenants
#   idle_writes            nestor_api_writes_total delta while N tenants are Ready and nothing changes
# and writes every figure, with its unit, as one JSON document to OUTPUT.
#
# Usage: bench/cluster.sh OUTPUT.json
# Knobs (environment): NESTOR_BIN (operator binary), BENCH_SINGLE_RUNS (5), BENCH_HA_RUNS (3),
#   BENCH_BURST (10), BENCH_BURST_TIMEOUT (600 s), BENCH_READY_TIMEOUT (300 s per tenant),
#   BENCH_IDLE_SECONDS (60, footprint window), BENCH_WRITES_SECONDS (120, idle-writes window).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/cluster.sh OUTPUT.json}
SINGLE_RUNS=${BENCH_SINGLE_RUNS:-5}
HA_RUNS=${BENCH_HA_RUNS:-3}
BURST=${BENCH_BURST:-10}
BURST_TIMEOUT=${BENCH_BURST_TIMEOUT:-600}
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-300}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
WRITES_SECONDS=${BENCH_WRITES_SECONDS:-120}
NAMESPACE=nestor-bench-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-bench.XXXXXX)
cleanup() {
  # Tenants first, while the operator still runs: it owns their finalizer, and a
  # TenantCluster left behind without it would keep the namespace Terminating forever.
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=120s >/dev/null 2>&1 || true
  stop_operator
  log "deleting namespace $NAMESPACE (operator log kept in $WORK/operator.log)"
  kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- operator (bench/lib.sh) ---
start() {
  kc create namespace "$NAMESPACE" >/dev/null
  start_operator "$NAMESPACE" "$WORK/operator.log"
}

# footprint TENANTS SECONDS: JSON with RSS and its anonymous part (MiB, at the end of
# the window), CPU (mCPU averaged over the window) and writes (per minute) of the idle
# operator.
footprint() {
  local tenants=$1 window=$2 ticks_before writes_before started ticks_after writes_after ended
  log "footprint: operator idle with $tenants Ready tenant(s) for ${window}s"
  ticks_before=$(cpu_ticks); writes_before=$(api_writes); started=$(now)
  sleep "$window"
  ticks_after=$(cpu_ticks); writes_after=$(api_writes); ended=$(now)
  local elapsed; elapsed=$(seconds "$started" "$ended")
  jq -n --argjson tenants "$tenants" --argjson window "$elapsed" --argjson rss_kib "$(rss_kib)" \
    --argjson rss_anon_kib "$(rss_anon_kib)" --argjson ticks $((ticks_after - ticks_before)) --argjson hz "$CLOCK_TICKS" \
    --argjson writes $((writes_after - writes_before)) '{
      tenants: $tenants,
      window_s: $window,
      rss_mib: (($rss_kib / 1024 * 100 | round) / 100),
      rss_anon_mib: (($rss_anon_kib / 1024 * 100 | round) / 100),
      cpu_mcpu: (($ticks / $hz) / $window * 1000 * 10 | round / 10),
      api_writes: $writes,
      api_writes_per_min: (($writes / $window * 60 * 100 | round) / 100)
    }'
}

# --- tenants ---
ready_status() {
  kc -n "$NAMESPACE" get tenantcluster "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null
}

# delete_tenants NAME...: deletes the TenantClusters and waits until nothing labelled
# with them is left (pods and PVCs included), so the next run starts on a quiet node.
delete_tenants() {
  local name selector
  kc -n "$NAMESPACE" delete tenantcluster "$@" --wait=true --timeout=120s >/dev/null || true
  selector="$TENANT_LABEL in ($(IFS=,; echo "$*"))"
  wait_until "pods and PVCs of $* gone" 180 nothing_labelled "$selector" ||
    log "warning: leftovers of $* still present"
}
nothing_labelled() { [[ -z $(kc -n "$NAMESPACE" get pods,pvc -l "$1" -o name) ]]; }

# timeline NAME CREATED_HOST READY_HOST: JSON with the phases of one tenant, in seconds
# since its creationTimestamp (API timestamps have one-second resolution), and the total
# measured on this host's clock (sub-second).
timeline() {
  local name=$1 created_host=$2 ready_host=$3
  local tenant owned pods
  tenant=$(kc -n "$NAMESPACE" get tenantcluster "$name" -o json)
  # Only what the timeline reads: whole, the Secrets (and an HA tenant's pods) passed the
  # kernel's limit on one argument (128 KiB) once the scheduler's objects joined them.
  owned=$(kc -n "$NAMESPACE" get secrets,configmaps,services,statefulsets,deployments,networkpolicies \
    -l "$TENANT_LABEL=$name" -o json | jq -c '{items: [.items[] | {kind, metadata: {creationTimestamp: .metadata.creationTimestamp}}]}')
  pods=$(kc -n "$NAMESPACE" get pods -l "$TENANT_LABEL=$name" -o json | jq -c '{items: [.items[] | {
    metadata: {labels: .metadata.labels, creationTimestamp: .metadata.creationTimestamp},
    status: {conditions: .status.conditions,
             containerStatuses: [.status.containerStatuses[]? | {state: {running: {startedAt: .state.running.startedAt}}}]}}]}')
  jq -n --argjson tenant "$tenant" --argjson owned "$owned" --argjson pods "$pods" \
    --argjson total "$(seconds "$created_host" "$ready_host")" '
    def epoch: if . == null then null else fromdateiso8601 end;
    ($tenant.metadata.creationTimestamp | epoch) as $created
    | def since: if . == null then null else . - $created end;
    def true_at($type): [$tenant.status.conditions[]? | select(.type == $type and .status == "True")
                          | .lastTransitionTime][0] | epoch | since;
    [$owned.items[] | select(.kind == "Secret") | .metadata.creationTimestamp | epoch] as $secrets
    | [$owned.items[] | .metadata.creationTimestamp | epoch] as $objects
    # Pods of one component: the slowest pod decides, as it does for the condition.
    | def pods($component): [$pods.items[] | select(.metadata.labels["app.kubernetes.io/component"] == $component)];
      def pod_condition($component; $type): [pods($component)[] | [.status.conditions[]?
          | select(.type == $type and .status == "True") | .lastTransitionTime][0] | epoch] | max | since;
      def container_started($component): [pods($component)[] | .status.containerStatuses[]?
          | .state.running.startedAt | epoch] | max | since;
      def pod_created($component): [pods($component)[] | .metadata.creationTimestamp | epoch] | max | since;
      {
        name: $tenant.metadata.name,
        total_s: $total,
        pki_generated_s: ($secrets | min | since),
        objects_applied_s: ($objects | max | since),
        etcd_ready_s: true_at("EtcdReady"),
        apiserver_ready_s: true_at("APIServerReady"),
        controller_manager_ready_s: true_at("ControllerManagerReady"),
        ready_s: true_at("Ready"),
        pods: ([["etcd", "etcd"], ["apiserver", "kube-apiserver"], ["controller_manager", "kube-controller-manager"]]
               | map({key: .[0], value: {created_s: pod_created(.[1]), scheduled_s: pod_condition(.[1]; "PodScheduled"),
                                          started_s: container_started(.[1]), ready_s: pod_condition(.[1]; "Ready"),
                                          restarts: ([pods(.[1])[] | .status.containerStatuses[]? | .restartCount] | add)}})
               | from_entries),
        owned_objects: ($objects | length)
      }'
}

# time_to_ready NAME ETCD APISERVERS EPHEMERAL: creates one tenant, waits for Ready=True,
# prints its timeline (or a JSON with "error").
time_to_ready() {
  local name=$1 created ready
  created=$(now)
  tenant_yaml "$@" | kc create -f - >/dev/null
  if kc -n "$NAMESPACE" wait tenantcluster "$name" --for=condition=Ready=True --timeout="${READY_TIMEOUT}s" >/dev/null; then
    ready=$(now)
    timeline "$name" "$created" "$ready"
  else
    jq -n --arg name "$name" --argjson timeout "$READY_TIMEOUT" \
      --argjson status "$(kc -n "$NAMESPACE" get tenantcluster "$name" -o json | jq .status)" \
      '{name: $name, error: "not Ready within \($timeout) s", status: $status}'
  fi
}

# summary: from an array of timelines on stdin, median/min/max of each phase.
summary() {
  jq '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    . as $runs
    | [$runs[] | select(.error == null)] as $ok
    | {
        runs: ($runs | length),
        ready_runs: ($ok | length),
        unit: "s",
        phases: (["pki_generated_s", "objects_applied_s", "etcd_ready_s", "apiserver_ready_s",
                  "controller_manager_ready_s", "ready_s", "total_s"]
                 | map(. as $phase | [$ok[][$phase] | select(. != null)]
                       | {key: $phase, value: {median: median, min: min, max: max}})
                 | from_entries),
        pod_phases: ([["etcd", "apiserver", "controller_manager"][] as $component
                      | ["created_s", "scheduled_s", "started_s", "ready_s"][] as $step
                      | {key: "\($component).\($step)",
                         value: ([$ok[].pods[$component][$step] | select(. != null)] | median)}]
                     | from_entries),
        samples: $runs
      }'
}

# scenario LABEL RUNS ETCD APISERVERS EPHEMERAL: RUNS sequential create → Ready → delete;
# the footprint with one Ready tenant is taken before the last single-member run is deleted.
scenario() {
  local label=$1 runs=$2 etcd=$3 apiservers=$4 ephemeral=$5 run name
  : >"$WORK/$label.jsonl"
  for ((run = 1; run <= runs; run++)); do
    name="$label-$run"
    log "time to Ready: $label run $run/$runs ($etcd etcd, $apiservers apiserver, ephemeral=$ephemeral)"
    time_to_ready "$name" "$etcd" "$apiservers" "$ephemeral" | tee -a "$WORK/$label.jsonl" | jq -c '{name, total_s, error}' >&2
    if [[ $label == single && $run == "$runs" ]]; then
      footprint 1 "$IDLE_SECONDS" >"$WORK/footprint-1.json"
    fi
    delete_tenants "$name"
  done
  jq -s . "$WORK/$label.jsonl" | summary >"$WORK/$label.json"
}

# burst: BURST tenants created in one request; polls every 2 s until all are Ready or
# BURST_TIMEOUT passes. Leaves the tenants running for the idle measurements.
burst() {
  local names=() i started elapsed=0 ready_count=0 tenants
  for ((i = 1; i <= BURST; i++)); do names+=("burst-$i"); done
  log "burst: creating ${#names[@]} tenants at once (1 etcd member, ephemeral storage)"
  started=$(now)
  for name in "${names[@]}"; do tenant_yaml "$name" 1 1 true; done | kc create -f - >/dev/null
  : >"$WORK/burst-ready.jsonl"
  declare -A seen=()
  while (( ready_count < BURST )); do
    elapsed=$(seconds "$started" "$(now)")
    if (( $(echo "$elapsed > $BURST_TIMEOUT" | bc) )); then
      log "burst: timed out after ${BURST_TIMEOUT}s with $ready_count/$BURST Ready"
      break
    fi
    tenants=$(kc -n "$NAMESPACE" get tenantclusters -o json)
    while read -r name; do
      [[ -n $name && -z ${seen[$name]:-} ]] || continue
      seen[$name]=1
      ready_count=$((ready_count + 1))
      jq -n --arg name "$name" --argjson at "$elapsed" '{name: $name, ready_host_s: $at}' >>"$WORK/burst-ready.jsonl"
      log "  $name Ready after ${elapsed}s ($ready_count/$BURST)"
    done < <(jq -r '.items[] | select([.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length > 0)
                    | .metadata.name' <<<"$tenants")
    (( ready_count < BURST )) && sleep 2
  done
  tenants=$(kc -n "$NAMESPACE" get tenantclusters -o json)
  jq -n --argjson host "$(jq -s . "$WORK/burst-ready.jsonl")" --argjson tenants "$tenants" \
    --argjson count "$BURST" --argjson timeout "$BURST_TIMEOUT" '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    ($host | map(.ready_host_s)) as $times
    | {
        tenants: $count,
        storage: "ephemeral (emptyDir)",
        timeout_s: $timeout,
        ready: ($host | length),
        all_ready_s: (if ($host | length) == $count then ($times | max) else null end),
        per_tenant_ready_s: {median: ($times | median), max: ($times | max), min: ($times | min)},
        samples: $host,
        pending: [$tenants.items[] | select([.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length == 0)
                  | {name: .metadata.name, phase: .status.phase,
                     not_ready: [.status.conditions[]? | select(.status != "True") | "\(.type): \(.message // .reason)"]}]
      }' >"$WORK/burst.json"
  # Phase timelines of the tenants that came up, to see what the wait was made of.
  jq -r '.samples[] | "\(.name) \(.ready_host_s)"' "$WORK/burst.json" | while read -r name ready_s; do
    timeline "$name" 0 "$ready_s"
  done >"$WORK/burst-timelines.jsonl"
  jq -s . "$WORK/burst-timelines.jsonl" | summary >"$WORK/burst-summary.json"
  jq --slurpfile timelines "$WORK/burst-summary.json" '. + {timelines: $timelines[0]}' "$WORK/burst.json" >"$WORK/burst.tmp"
  mv "$WORK/burst.tmp" "$WORK/burst.json"
  jq -c '{ready, all_ready_s, per_tenant_ready_s}' "$WORK/burst.json" >&2
  BURST_READY=$(jq .ready "$WORK/burst.json")
  BURST_NAMES=("${names[@]}")
}

main() {
  start
  sleep 5 # let the initial list and watch settle
  footprint 0 "$IDLE_SECONDS" >"$WORK/footprint-0.json"
  echo null >"$WORK/footprint-1.json" # replaced by the last single run, if any
  scenario single "$SINGLE_RUNS" 1 1 false
  scenario ha "$HA_RUNS" 3 2 false
  burst
  # Idle with every burst tenant Ready (or as many as came up): footprint and idle writes
  # in one window, the CPU averaged over it.
  sleep 10 # status writes of the last tenants to settle
  footprint "$BURST_READY" "$WRITES_SECONDS" >"$WORK/footprint-n.json"
  delete_tenants "${BURST_NAMES[@]}"

  jq -n --slurpfile single "$WORK/single.json" --slurpfile ha "$WORK/ha.json" \
    --slurpfile burst "$WORK/burst.json" --slurpfile f0 "$WORK/footprint-0.json" \
    --slurpfile f1 "$WORK/footprint-1.json" --slurpfile fn "$WORK/footprint-n.json" \
    --arg operator "$NESTOR_BIN" '
    ($f0[0]) as $zero | ($fn[0]) as $many
    | {
        operator_binary: $operator,
        time_to_ready: {single: ($single[0] + {etcd: 1, apiservers: 1, storage: "PVC (default StorageClass)"}),
                        ha: ($ha[0] + {etcd: 3, apiservers: 2, storage: "PVC (default StorageClass)"})},
        burst: $burst[0],
        footprint: {
          idle: ([$zero, $f1[0], $many] | map(select(. != null))),
          per_tenant: (if $many.tenants > 0 then {
            rss_mib: ((($many.rss_mib - $zero.rss_mib) / $many.tenants * 1000 | round) / 1000),
            rss_anon_mib: (if $zero.rss_anon_mib == null then null
                           else ((($many.rss_anon_mib - $zero.rss_anon_mib) / $many.tenants * 1000 | round) / 1000) end),
            cpu_mcpu: ((($many.cpu_mcpu - $zero.cpu_mcpu) / $many.tenants * 100 | round) / 100),
            derived_from: "(idle with \($many.tenants) tenants - idle with 0) / \($many.tenants)"
          } else null end)
        },
        idle_writes: {tenants: $many.tenants, window_s: $many.window_s, writes: $many.api_writes,
                      per_min: $many.api_writes_per_min}
      }' >"$OUTPUT"
  log "cluster benchmarks written to $OUTPUT"
}

main "$@"
