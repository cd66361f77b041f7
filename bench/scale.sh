#!/usr/bin/env bash
# Scale benchmark for `make bench` / `make bench-scale` (never part of `make test`):
# SCALE_TENANTS TenantClusters (1000 by default) on the meta cluster, their pods simulated
# by kwok, so the meta cluster carries every object without running thousands of processes.
#
# Set-up, all of it undone on exit (also on Ctrl-C or error):
#   - one fake node, kwok-bench-0, labelled nestor.dev/kwok=true and tainted
#     nestor.dev/kwok=true:NoSchedule so no other pod lands on it; its pod range
#     10.200.128.0/17 lies in the meta cluster's blackholed 10.200.0.0/16 but outside the
#     real node's 10.200.0.0/24, so no address kwok invents routes anywhere;
#   - kwok (built from the Go module proxy: hack/build-upstream.sh kwok) as a host process
#     managing that node only;
#   - a namespace whose PodNodeSelector and PodTolerationRestriction annotations send every
#     pod created in it to the fake node (no change to Nestor's API: the meta apiserver's
#     admission plugins do it);
#   - the release operator watching that namespace, with its default probe settings.
#
# "Fully applied" (the figure the goal is about): the tenant's status was written for its
# current generation (status.observedGeneration == metadata.generation), with PKIReady and
# KubeconfigReady True and certificatesExpireAt set. The operator writes status only after
# every owned object of the pass was applied, so this means every object exists; the run
# also counts the owned objects at the end to check it. Fake pods never serve, so Ready is
# never reached: the health probes keep failing against addresses that go nowhere, which
# is what "1000 unreachable tenants" means for the operator's health checker.
#
# Measured: time until all are applied (and the applied count every SCALE_SAMPLE_SECONDS),
# reconciles/s, operator RSS and CPU (/proc), and the operator's requests to the meta
# apiserver by verb (its nestor_api_requests_total), during the apply and then over a
# steady window of SCALE_STEADY_SECONDS with every tenant applied.
#
# Usage: bench/scale.sh OUTPUT.json
# Knobs: SCALE_TENANTS (1000), SCALE_PARALLEL (4 concurrent creates of SCALE_BATCH (25)
#   tenants each), SCALE_TIMEOUT (900 s for all to be applied), SCALE_SAMPLE_SECONDS (10),
#   SCALE_STEADY_SECONDS (120), NESTOR_BIN, SCALE_OPERATOR_FLAGS (extra operator flags).
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/scale.sh OUTPUT.json}
TENANTS=${SCALE_TENANTS:-1000}
PARALLEL=${SCALE_PARALLEL:-4}
BATCH=${SCALE_BATCH:-25}
TIMEOUT=${SCALE_TIMEOUT:-900}
SAMPLE_SECONDS=${SCALE_SAMPLE_SECONDS:-10}
STEADY_SECONDS=${SCALE_STEADY_SECONDS:-120}
read -r -a OPERATOR_FLAGS <<<"${SCALE_OPERATOR_FLAGS:-}"

KWOK_NODE=kwok-bench-0
KWOK_LABEL=nestor.dev/kwok
KWOK_POD_CIDR=10.200.128.0/17
KWOK_NODE_IP=10.200.128.1
NAMESPACE=nestor-scale-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-scale.XXXXXX)
KWOK_PID=
CREATOR_PID=

# --- preconditions ---
# The namespace annotations are what keeps 3000 fake pods off the real node: without both
# admission plugins they would be scheduled there and really started.
require_admission_plugins() {
  local pid cmdline
  pid=$(cat "$(pid_file kube-apiserver)" 2>/dev/null) || die "no kube-apiserver pid file: is the meta cluster up?"
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  for plugin in PodNodeSelector PodTolerationRestriction; do
    grep -qE -- "--enable-admission-plugins=[^ ]*\b$plugin\b" <<<"$cmdline" ||
      die "the meta apiserver does not enable the $plugin admission plugin (hack/meta-up.sh); without it the fake pods would land on the real node"
  done
}

# --- the fake node and kwok ---
create_fake_node() {
  kc apply --server-side --field-manager=nestor-bench -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $KWOK_NODE
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    $KWOK_LABEL: "true"
    type: kwok
    kubernetes.io/hostname: $KWOK_NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  podCIDR: $KWOK_POD_CIDR
  podCIDRs: [$KWOK_POD_CIDR]
  taints: [{key: $KWOK_LABEL, value: "true", effect: NoSchedule}]
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "5000"}
  capacity: {cpu: "1000", memory: 4Ti, pods: "5000"}
YAML
}

start_kwok() {
  "$HACK_DIR/build-upstream.sh" kwok
  local port
  port=$(free_port)
  local stages=() stage
  for stage in "$(dirname "$(kwok_bin)")"/stages/*.yaml; do stages+=(--config "$stage"); done
  setsid "$(kwok_bin)" --kubeconfig "$META_KUBECONFIG" "${stages[@]}" \
    --manage-all-nodes=false --manage-nodes-with-label-selector "$KWOK_LABEL=true" \
    --cidr "$KWOK_POD_CIDR" --node-ip "$KWOK_NODE_IP" \
    --server-address "127.0.0.1:$port" >"$WORK/kwok.log" 2>&1 &
  KWOK_PID=$!
  wait_until "fake node $KWOK_NODE Ready (kwok)" 60 fake_node_ready ||
    die "kwok did not take the node; see $WORK/kwok.log"
  log "kwok pid $KWOK_PID manages $KWOK_NODE (pods in $KWOK_POD_CIDR)"
}
fake_node_ready() {
  kill -0 "$KWOK_PID" &&
    [[ $(kc get node "$KWOK_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

create_namespace() {
  kc apply --server-side --field-manager=nestor-bench -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  annotations:
    scheduler.alpha.kubernetes.io/node-selector: $KWOK_LABEL=true
    scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key": "$KWOK_LABEL", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]'
YAML
}

# Undoes everything, in an order that leaves nothing stuck: the operator first (so it
# does not fight the clean-up), then the finalizers (nobody is left to run them), then the
# namespace while kwok still runs (it completes the fake pods' deletion), then kwok and
# the node. Bounded: a namespace still Terminating after 10 minutes is left to finish on its
# own (the pod garbage collector force-deletes pods bound to the deleted fake node). With
# 1000 tenants the meta controller-manager needs several minutes to delete ~25,000 objects;
# whatever runs next on the meta cluster meanwhile finds it busy (a `make test` started two
# minutes after a 1000-tenant run timed out deleting a test tenant's StatefulSet).
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  log "scale: cleaning up (logs kept in $WORK)"
  if [[ -n $CREATOR_PID ]]; then kill -- "-$CREATOR_PID" 2>/dev/null || true; fi
  stop_operator
  if kc get namespace "$NAMESPACE" >/dev/null 2>&1; then
    kc -n "$NAMESPACE" get tenantclusters -o name 2>/dev/null |
      xargs -r -n 100 -P 4 "$(k8s_bin kubectl)" --kubeconfig "$META_KUBECONFIG" -n "$NAMESPACE" patch \
        --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
    wait_until "namespace $NAMESPACE deleted" 600 namespace_gone ||
      log "namespace $NAMESPACE still Terminating; it finishes in the background"
  fi
  if [[ -n $KWOK_PID ]]; then kill "$KWOK_PID" 2>/dev/null && wait "$KWOK_PID" 2>/dev/null || true; fi
  kc delete node "$KWOK_NODE" --ignore-not-found >/dev/null 2>&1 || log "warning: cannot delete node $KWOK_NODE"
  exit "$status"
}
namespace_gone() { ! kc get namespace "$NAMESPACE" >/dev/null 2>&1; }

# --- tenants ---
# create_batch FIRST LAST: one `kubectl create` for tenants scale-FIRST..scale-LAST.
create_batch() {
  local i
  for ((i = $1; i <= $2; i++)); do tenant_yaml "scale-$i" 1 1 true; done |
    kc create -f - >/dev/null
}
export -f create_batch tenant_yaml kc meta_kubectl k8s_bin upstream_bin_dir
export NAMESPACE TENANT_VERSION LOCAL_IMAGE_REPOSITORY META_KUBECONFIG NESTOR_CACHE KUBERNETES_VERSION

# applied_count: JSON {created, applied} from one list of the namespace's TenantClusters.
applied_count() {
  kc -n "$NAMESPACE" get tenantclusters -o json | jq -c '
    [.items[] | (.status // {}) as $status
     | ($status.observedGeneration == .metadata.generation
        and $status.certificatesExpireAt != null
        and ([$status.conditions[]? | select((.type == "PKIReady" or .type == "KubeconfigReady") and .status == "True")]
             | length) == 2)] as $applied
    | {created: ($applied | length), applied: ($applied | map(select(.)) | length)}'
}

# objects_per_tenant: how many owned objects of each kind every tenant has (count → tenants).
objects_per_tenant() {
  # jsonpath, not JSON: 1000 tenants own ~25000 objects, Secrets with their data.
  kc -n "$NAMESPACE" get secrets,configmaps,services,statefulsets,deployments,networkpolicies -l "$TENANT_LABEL" \
    -o jsonpath='{range .items[*]}{.kind}{" "}{.metadata.labels.nestor\.dev/tenant-cluster}{"\n"}{end}' |
    sort | uniq -c | jq -Rsc --argjson tenants "$TENANTS" '
    [split("\n")[] | select(length > 0) | capture("^ *(?<n>[0-9]+) (?<kind>[A-Za-z]+) (?<tenant>.+)$")
     | {kind, tenant, n: (.n | tonumber)}]
    | group_by(.kind) | map({key: .[0].kind, value: {tenants: length, min: (map(.n) | min), max: (map(.n) | max)}})
    | from_entries
    | {by_kind: ., every_tenant_complete: (to_entries | all(.value.tenants == $tenants and .value.min == .value.max))}'
}

# meta_apiserver_sample: JSON {at, cpu_ticks, requests: {"VERB resource[/subresource]": count}}
# of the meta apiserver: its CPU from /proc and its apiserver_request_total (every client,
# watches left out), so the run shows what the apiserver spends its time on and how much
# of it is Nestor's (SSA "APPLY" and the TenantCluster status are only Nestor's).
meta_apiserver_sample() {
  local pid
  pid=$(cat "$(pid_file kube-apiserver)")
  kc get --raw /metrics | grep '^apiserver_request_total{' | jq -Rsc \
    --argjson at "$(now)" --argjson ticks "$(awk '{print $14 + $15}' "/proc/$pid/stat")" '
    [split("\n")[] | select(length > 0)
     | capture("verb=\"(?<verb>[A-Z]+)\"") as $v
     | select($v.verb != "WATCH")
     | {key: ($v.verb + " " + (capture("resource=\"(?<r>[^\"]*)\"").r)
              + ((capture("subresource=\"(?<s>[^\"]+)\"") | "/" + .s) // "")),
        value: (split(" ") | last | tonumber)}]
    | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries
    | {at: $at, cpu_ticks: $ticks, requests: .}'
}

pods_summary() {
  kc -n "$NAMESPACE" get pods -o json | jq -c --arg node "$KWOK_NODE" '
    {pods: (.items | length), on_fake_node: ([.items[] | select(.spec.nodeName == $node)] | length),
     elsewhere: ([.items[] | select(.spec.nodeName != null and .spec.nodeName != $node) | .metadata.name]),
     running: ([.items[] | select(.status.phase == "Running")] | length)}'
}

main() {
  require_admission_plugins
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  create_fake_node
  start_kwok
  create_namespace
  start_operator "$NAMESPACE" "$WORK/operator.log" "${OPERATOR_FLAGS[@]}"
  sleep 5 # the initial lists and watches
  local idle before meta_before meta_applied started i first last
  idle=$(operator_sample)

  log "scale: creating $TENANTS tenants ($PARALLEL creates of $BATCH at a time)"
  before=$(operator_sample)
  meta_before=$(meta_apiserver_sample)
  started=$(now)
  # Its own process group, so the clean-up can stop every create still running.
  export TENANTS BATCH PARALLEL
  setsid bash -c '
    for ((first = 1; first <= TENANTS; first += BATCH)); do
      last=$((first + BATCH - 1)); ((last > TENANTS)) && last=$TENANTS
      echo "$first $last"
    done | xargs -P "$PARALLEL" -n 2 bash -c '"'"'create_batch "$0" "$1"'"'"'' &
  CREATOR_PID=$!
  local creator=$CREATOR_PID

  : >"$WORK/samples.jsonl"
  local counts sample elapsed created_s=null all_applied_s=null
  while :; do
    sleep "$SAMPLE_SECONDS"
    elapsed=$(seconds "$started" "$(now)")
    counts=$(applied_count) || counts='{"created": null, "applied": null}'
    sample=$(operator_sample)
    jq -cn --argjson t "$elapsed" --argjson counts "$counts" --argjson operator "$sample" \
      '{t: $t} + $counts + {operator: $operator}' | tee -a "$WORK/samples.jsonl" |
      jq -r '"  t=\(.t)s created=\(.created) applied=\(.applied) reconciles=\(.operator.reconciles) requests=\(.operator.requests) rss=\(.operator.rss_kib / 1024 | floor)MiB"' >&2
    if [[ -n $(kc -n "$NAMESPACE" get pods --field-selector "spec.nodeName=$META_NODE_NAME" -o name) ]]; then
      die "tenant pods were scheduled on the real node $META_NODE_NAME: the namespace's node selector did not apply"
    fi
    if [[ $created_s == null ]] && ! kill -0 "$creator" 2>/dev/null; then created_s=$elapsed; fi
    if [[ $(jq .applied <<<"$counts") == "$TENANTS" ]]; then all_applied_s=$elapsed; break; fi
    if (($(echo "$elapsed > $TIMEOUT" | bc))); then log "scale: timed out after ${TIMEOUT}s"; break; fi
  done
  wait "$creator" || log "warning: some creates failed"
  local applied_sample
  applied_sample=$(tail -n1 "$WORK/samples.jsonl" | jq -c .operator)
  meta_applied=$(meta_apiserver_sample)
  local objects pods
  objects=$(objects_per_tenant)
  pods=$(pods_summary)
  log "scale: objects $objects; pods $pods"

  log "scale: steady window of ${STEADY_SECONDS}s with every tenant applied (probes failing)"
  local steady_start steady_end
  steady_start=$(operator_sample)
  sleep "$STEADY_SECONDS"
  steady_end=$(operator_sample)
  local final_counts
  final_counts=$(applied_count)

  jq -n --argjson tenants "$TENANTS" --argjson parallel "$PARALLEL" --argjson batch "$BATCH" \
    --argjson timeout "$TIMEOUT" --argjson created_s "$created_s" --argjson all_applied_s "$all_applied_s" \
    --argjson idle "$idle" --argjson before "$before" --argjson applied "$applied_sample" \
    --argjson steady_start "$steady_start" --argjson steady_end "$steady_end" \
    --argjson objects "$objects" --argjson pods "$pods" --argjson final "$final_counts" \
    --argjson meta_before "$meta_before" --argjson meta_applied "$meta_applied" \
    --argjson hz "$CLOCK_TICKS" --slurpfile samples "$WORK/samples.jsonl" \
    --arg operator "$NESTOR_BIN" --arg flags "${SCALE_OPERATOR_FLAGS:-}" '
    def r(n): (. * pow(10; n) | round) / pow(10; n);
    # window(A; B): rates of the operator between two samples.
    def window($a; $b): ($b.at - $a.at) as $s | {
      seconds: ($s | r(1)),
      cpu_mcpu: (($b.cpu_ticks - $a.cpu_ticks) / $hz / $s * 1000 | r(1)),
      rss_mib_end: ($b.rss_kib / 1024 | r(1)),
      reconciles_per_s: (($b.reconciles - $a.reconciles) / $s | r(2)),
      reconcile_errors: ($b.reconcile_errors - $a.reconcile_errors),
      requests_per_s: (($b.requests - $a.requests) / $s | r(1)),
      requests_per_s_by_verb: ($b.requests_by_verb | to_entries
        | map({key, value: ((.value - ($a.requests_by_verb[.key] // 0)) / $s | r(2))}) | from_entries),
      writes_per_s: (($b.writes - $a.writes) / $s | r(2))
    };
    {
      tenants: $tenants,
      storage: "ephemeral (emptyDir); pods simulated by kwok on one fake node",
      create: {parallel: $parallel, batch: $batch, all_created_s: $created_s},
      criterion: "observedGeneration == generation, PKIReady and KubeconfigReady True, certificatesExpireAt set",
      timeout_s: $timeout,
      applied: ($samples | last | .applied),
      all_applied_s: $all_applied_s,
      operator_binary: $operator,
      operator_flags: $flags,
      operator_idle_before: {rss_mib: ($idle.rss_kib / 1024 | r(1))},
      apply_phase: window($before; $applied),
      meta_apiserver_apply_phase: (($meta_applied.at - $meta_before.at) as $s | {
        seconds: ($s | r(1)),
        cpu_mcpu: (($meta_applied.cpu_ticks - $meta_before.cpu_ticks) / $hz / $s * 1000 | r(0)),
        requests_per_s: ([$meta_applied.requests | to_entries[]
          | .value - ($meta_before.requests[.key] // 0)] | add / $s | r(1)),
        top_requests_per_s: ($meta_applied.requests | to_entries
          | map({key, value: ((.value - ($meta_before.requests[.key] // 0)) / $s | r(2))})
          | sort_by(-.value) | .[:20] | from_entries)
      }),
      peak_rss_mib: ([$samples[].operator.rss_kib] + [$steady_end.rss_kib] | max / 1024 | r(1)),
      steady: (window($steady_start; $steady_end) + {applied_at_end: $final.applied}),
      objects: $objects,
      pods: $pods,
      timeline: [$samples[] | {t, created, applied, reconciles: .operator.reconciles,
                               requests: .operator.requests, rss_mib: (.operator.rss_kib / 1024 | r(1)),
                               cpu_s: (.operator.cpu_ticks / $hz)}]
    }' >"$OUTPUT"
  log "scale benchmark written to $OUTPUT"
}

main "$@"
