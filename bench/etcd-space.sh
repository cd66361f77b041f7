#!/usr/bin/env bash
# etcd space benchmark for `make bench` / `make bench-etcd-space` (never part of `make test`).
# For each etcd size in ETCD_SPACE_MEMBERS (default "1 3"), on a namespace watched by one
# host-process operator (default flags: probes every 10 s):
#   1. a tenant (etcd on volume claims, etcd's default quota; 1 apiserver whose
#      --etcd-compaction-interval is 1m instead of 5m, so the benchmark does not wait
#      five minutes for the compaction that fragments the database) is waited for;
#   2. ETCD_SPACE_FILL_MIB of ConfigMaps (512 KiB each) are written, then deleted;
#   3. the apiserver's next compaction leaves the database mostly free pages; the
#      operator finds it fragmented and defragments the members one at a time
#      (followers first, the leader last); the run ends when every member was;
#   4. meanwhile the tenant API is asked every 100 ms (curl --rate 10/s, line-buffered so
#      each answer is timestamped as it arrives), twice over: a
#      write (a small ConfigMap created) and a read (a list of one ConfigMap). A request
#      that fails or takes longer than ETCD_SPACE_REQUEST_TIMEOUT (2 s) is a failure.
# Figures, per etcd size:
#   defrag_s (per member, the gateway call as the operator's log has it), bytes before and
#   after; all_members_s (first defragmentation started -> last finished); requests and
#   failures, in all and during defragmentations (from a start to its end + 1 s), and the
#   slowest request during them.
#
# Usage: bench/etcd-space.sh OUTPUT.json
# Knobs: ETCD_SPACE_MEMBERS ("1 3"), ETCD_SPACE_FILL_MIB (64), ETCD_SPACE_READY_TIMEOUT
#   (300 s), ETCD_SPACE_DEFRAG_TIMEOUT (360 s: the compaction, then every member),
#   ETCD_SPACE_REQUEST_TIMEOUT (2 s), NESTOR_BIN.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/etcd-space.sh OUTPUT.json}
MEMBER_COUNTS=${ETCD_SPACE_MEMBERS:-1 3}
FILL_MIB=${ETCD_SPACE_FILL_MIB:-64}
READY_TIMEOUT=${ETCD_SPACE_READY_TIMEOUT:-300}
DEFRAG_TIMEOUT=${ETCD_SPACE_DEFRAG_TIMEOUT:-360}
REQUEST_TIMEOUT=${ETCD_SPACE_REQUEST_TIMEOUT:-2}
NAMESPACE=nestor-etcd-space-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-bench-etcd-space.XXXXXX)
PROBERS=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_probers
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=180s >/dev/null 2>&1 ||
    log "warning: tenants of $NAMESPACE not all deleted within 180 s"
  stop_operator
  log "etcd-space: deleting namespace $NAMESPACE (operator log kept in $WORK/operator.log)"
  kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  exit "$status"
}

stop_probers() {
  local pid
  for pid in "${PROBERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PROBERS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PROBERS=()
  sleep 1 # the readers of their output finish writing
}

tenant_yaml() { # NAME MEMBERS
  cat <<YAML
apiVersion: nestor.dev/v1alpha1
kind: TenantCluster
metadata: {name: $1, namespace: $NAMESPACE}
spec:
  version: "$TENANT_VERSION"
  imageRepository: $LOCAL_IMAGE_REPOSITORY
  etcd: {replicas: $2, storage: {ephemeral: false}}
  apiServer: {replicas: 1, extraArgs: {etcd-compaction-interval: 1m}}
YAML
}

# tenant_access NAME: the admin client certificate, key and CA of the tenant in $WORK, and
# TENANT_URL / CONNECT_TO to reach its apiserver Service from the host.
tenant_access() {
  local name=$1 secret kubeconfig ip host
  secret=$(kc -n "$NAMESPACE" get tenantcluster "$name" -o jsonpath='{.status.kubeconfigSecretName}')
  kubeconfig="$WORK/$name.kubeconfig"
  (umask 077 && kc -n "$NAMESPACE" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d >"$kubeconfig")
  local view=("$(k8s_bin kubectl)" config view --kubeconfig "$kubeconfig" --raw -o)
  "${view[@]}" jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$WORK/client.crt"
  "${view[@]}" jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$WORK/client.key"
  "${view[@]}" jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$WORK/ca.crt"
  TENANT_URL=$("${view[@]}" jsonpath='{.clusters[0].cluster.server}')
  host=${TENANT_URL#https://}
  host=${host%%/*}
  ip=$(kc -n "$NAMESPACE" get service "$name-apiserver" -o jsonpath='{.spec.clusterIP}')
  CONNECT_TO="$host:$ip:${host##*:}"
}

tenant_curl() { curl -sS --cacert "$WORK/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key" --connect-to "$CONNECT_TO" "$@"; }

# prober KIND OUT: starts curl in the background, sending a request every 100 ms until
# stop_probers kills it (by its PID, kept in PROBERS); one line per answer in OUT:
# "<epoch seconds at the answer> <seconds taken> <HTTP code>" (code 000: no answer in time).
prober() {
  local kind=$1 out=$2 args
  case $kind in
    write) args=(-X POST -H 'Content-Type: application/json'
      -d '{"metadata":{"generateName":"probe-","labels":{"bench":"probe"}},"data":{"a":"b"}}'
      "$TENANT_URL/api/v1/namespaces/default/configmaps?n=[1-100000]") ;;
    read) args=("$TENANT_URL/api/v1/namespaces/default/configmaps?limit=1&n=[1-100000]") ;;
  esac
  (exec stdbuf -oL curl -sS --cacert "$WORK/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key" --connect-to "$CONNECT_TO" \
    --rate 10/s -m "$REQUEST_TIMEOUT" -o /dev/null -w '%{time_total} %{http_code}\n' "${args[@]}" 2>/dev/null) \
    > >(while read -r took code; do echo "$EPOCHREALTIME $took $code"; done >"$out") &
  PROBERS+=($!)
}

fill_body() { # a ConfigMap of 512 KiB, labelled bench=fill
  printf '{"metadata":{"generateName":"fill-","labels":{"bench":"fill"}},"data":{"fill":"%s"}}' \
    "$(head -c $((512 * 1024)) /dev/zero | tr '\0' x)" >"$WORK/fill.json"
}

# defrag_lines SINCE_LINE: the operator's "defragmented" log lines after line SINCE_LINE,
# as JSON lines {member, role, start, end, took_s, before_mib, after_mib}.
defrag_lines() {
  tail -n +"$(($1 + 1))" "$WORK/operator.log" | grep -E 'defragmenting etcd member|defragmented in' | sed 's/\x1b\[[0-9;]*m//g' |
    while read -r stamp rest; do
      local at
      at=$(date -d "$stamp" +%s.%N)
      if [[ $rest == *"defragmenting etcd member"* ]]; then
        echo "start $at $(sed -n 's/.*member=\([^ ]*\).*/\1/p' <<<"$rest")"
      else
        sed -n "s/.*etcd member \([^ ]*\) (\([a-z]*\)) defragmented in \([0-9.]*\)s: \([0-9.]*\) MiB -> \([0-9.]*\) MiB.*/end $at \1 \2 \3 \4 \5/p" <<<"$rest"
      fi
    done | jq -Rn '
      [inputs | split(" ")] as $lines
      | [$lines[] | select(.[0] == "end")
         | . as $e
         | {member: $e[2], role: $e[3], took_s: ($e[4] | tonumber),
            before_mib: ($e[5] | tonumber), after_mib: ($e[6] | tonumber), end: ($e[1] | tonumber),
            start: ([$lines[] | select(.[0] == "start" and .[2] == $e[2] and (.[1] | tonumber) <= ($e[1] | tonumber))
                     | .[1] | tonumber] | max)}]'
}

one_scenario() { # MEMBERS
  local members=$1 name="space-$1" created ready_at filled_at deleted_at log_mark defrags error=""
  log "etcd-space: tenant $name ($members etcd members)"
  created=$(now)
  tenant_yaml "$name" "$members" | kc create -f - >/dev/null
  if ! kc -n "$NAMESPACE" wait tenantcluster "$name" --for=condition=Ready=True --timeout="${READY_TIMEOUT}s" >/dev/null; then
    error="tenant not Ready within $READY_TIMEOUT s"
  fi
  ready_at=$(now)
  if [[ -z $error ]]; then
    tenant_access "$name"
    local i written=0
    for ((i = 0; i < FILL_MIB * 2; i++)); do
      tenant_curl -m 10 -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
        --data-binary @"$WORK/fill.json" "$TENANT_URL/api/v1/namespaces/default/configmaps" | grep -q '^201$' &&
        written=$((written + 1))
    done
    filled_at=$(now)
    log "  $written ConfigMaps of 512 KiB written in $(seconds "$ready_at" "$filled_at") s; deleting them"
    log_mark=$(wc -l <"$WORK/operator.log")
    prober write "$WORK/$name-write.txt"
    prober read "$WORK/$name-read.txt"
    tenant_curl -m 60 -o /dev/null -X DELETE "$TENANT_URL/api/v1/namespaces/default/configmaps?labelSelector=bench%3Dfill"
    deleted_at=$(now)
    if ! wait_until "every one of $members members defragmented" "$DEFRAG_TIMEOUT" \
      bash -c "[[ \$(grep -c 'defragmented in' <(tail -n +$((log_mark + 1)) '$WORK/operator.log')) -ge $members ]]"; then
      error="not every member defragmented within $DEFRAG_TIMEOUT s"
    fi
    sleep 5
    stop_probers
  fi
  defrags=$(if [[ -n ${log_mark:-} ]]; then defrag_lines "$log_mark"; else echo '[]'; fi)
  [[ -z $error ]] || log "  $name: $error"
  jq -n --argjson members "$members" --arg error "$error" --argjson created "$created" --argjson ready "$ready_at" \
    --argjson deleted "${deleted_at:-null}" --argjson written "${written:-0}" --argjson defrags "$defrags" \
    --rawfile writes "$WORK/$name-write.txt" --rawfile reads "$WORK/$name-read.txt" --argjson timeout "$REQUEST_TIMEOUT" '
    def parse: split("\n") | map(select(length > 0) | split(" ") | {at: (.[0] | tonumber), took: (.[1] | tonumber), code: .[2]});
    def during($d): . as $r | [$r[] | select(. as $q | any($d[]; $q.at >= .start and ($q.at - $q.took) <= .end + 1))];
    def failed: map(select(.code | test("^2") | not));
    def figures($d): {requests: length, failures: (failed | length),
                      during_defrag: (during($d) | {requests: length, failures: (failed | length),
                                      slowest_ms: (map(.took) | max // null | if . == null then null else . * 1000 | round end)})};
    ($writes | parse) as $w | ($reads | parse) as $r
    | {etcd_members: $members, error: (if $error == "" then null else $error end),
       ready_s: (($ready - $created) * 1000 | round / 1000),
       fill: {configmaps_512kib: $written, mib: ($written / 2)},
       defragmentations: ($defrags | map(del(.start, .end))),
       order: ($defrags | sort_by(.start) | map("\(.member) (\(.role))")),
       defrag_s: {max: ($defrags | map(.took_s) | max), sum: ($defrags | map(.took_s) | add)},
       first_defrag_after_delete_s: (if $deleted == null or ($defrags | length) == 0 then null
                                     else (($defrags | map(.start) | min) - $deleted) | . * 10 | round / 10 end),
       all_members_s: (if ($defrags | length) == 0 then null
                       else (($defrags | map(.end) | max) - ($defrags | map(.start) | min)) * 1000 | round / 1000 end),
       writes: ($w | figures($defrags)), reads: ($r | figures($defrags)),
       request_timeout_s: $timeout}' >>"$WORK/scenarios.jsonl"
  kc -n "$NAMESPACE" delete tenantcluster "$name" --wait=true --timeout=180s >/dev/null 2>&1 || true
  unset written deleted_at log_mark
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  kc create namespace "$NAMESPACE" >/dev/null
  start_operator "$NAMESPACE" "$WORK/operator.log"
  fill_body
  : >"$WORK/scenarios.jsonl"
  local members
  for members in $MEMBER_COUNTS; do
    : >"$WORK/space-$members-write.txt"
    : >"$WORK/space-$members-read.txt"
    one_scenario "$members"
  done
  jq -s --argjson fill "$FILL_MIB" '{
    tenant: "etcd on volume claims (local-path), etcd default quota (2 GiB); 1 apiserver with --etcd-compaction-interval=1m; local images",
    method: "\($fill) MiB of 512 KiB ConfigMaps written then deleted; the apiserver compacts, the operator defragments; a write and a read every 100 ms meanwhile",
    scenarios: .}' "$WORK/scenarios.jsonl" >"$OUTPUT"
  log "etcd-space benchmark written to $OUTPUT"
}

main "$@"
