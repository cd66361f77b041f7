#!/usr/bin/env bash
# Backup and restore benchmark for `make bench` / `make bench-backup` (never part of
# `make test`). For each destination in BACKUP_DESTINATIONS (default "volume s3"), on a
# namespace watched by one host-process operator whose backup Jobs and restores run the
# operator image built from the benchmarked binary:
#   1. a tenant (BACKUP_MEMBERS etcd members on volume claims, 1 apiserver) backing up to
#      that destination (a volume claim of the local-path class, or the local S3 server of
#      hack/s3-up.sh, started here when it is not running) is waited for;
#   2. BACKUP_FILL_MIB of ConfigMaps (512 KiB each) are written into it;
#   3. BACKUP_RUNS backups are taken one after the other with `nestor backup` (a Job from
#      the tenant's CronJob: the agent snapshots a member through etcd's maintenance API,
#      checks etcd's sha256 trailer, writes snapshot and metadata to the store, prunes);
#   4. BACKUP_RESTORE_RUNS restores of the newest snapshot, each as a new tenant
#      (`nestor restore NAME --from KEY --as NEW --wait`: every etcd member restores the
#      snapshot in its init container, then the control plane starts), timed from the
#      command to the tenant Ready; the restored tenant's ConfigMaps are counted through
#      the old admin kubeconfig (its CA is the backup's), then it is deleted and its pods
#      and claims waited for, so the next restore does not share the node with its teardown.
# Figures, per destination: snapshot bytes; per backup the agent's own time (snapshot and
# upload, from its report) and the wall time of `nestor backup` (Job created to report
# read), with throughputs in MiB/s; per restore the time to Ready, and where it went (the
# restore init container, EtcdReady, APIServerReady); medians of each.
#
# Usage: bench/backup.sh OUTPUT.json
# Knobs: BACKUP_DESTINATIONS ("volume s3"), BACKUP_MEMBERS (1), BACKUP_FILL_MIB (100),
#   BACKUP_RUNS (3), BACKUP_RESTORE_RUNS (3), BACKUP_READY_TIMEOUT (300 s), NESTOR_BIN.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/backup.sh OUTPUT.json}
DESTINATIONS=${BACKUP_DESTINATIONS:-volume s3}
MEMBERS=${BACKUP_MEMBERS:-1}
FILL_MIB=${BACKUP_FILL_MIB:-100}
RUNS=${BACKUP_RUNS:-3}
RESTORE_RUNS=${BACKUP_RESTORE_RUNS:-3}
READY_TIMEOUT=${BACKUP_READY_TIMEOUT:-300}
NAMESPACE=nestor-bench-backup-$(random_suffix)
WORK=$(mktemp -d /tmp/nestor-bench-backup.XXXXXX)
S3_ENV=$S3_ENV_FILE
S3_PREFIX=bench/$NAMESPACE

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=180s >/dev/null 2>&1 ||
    log "warning: tenants of $NAMESPACE not all deleted within 180 s"
  stop_operator
  log "backup: deleting namespace $NAMESPACE (operator log kept in $WORK/operator.log)"
  # The snapshots: the claims go with the namespace; the S3 objects under our prefix are
  # removed here (deleteWithCluster is off, as a user would run it).
  if [[ -f $S3_ENV ]]; then remove_s3_prefix || log "warning: S3 objects under $S3_PREFIX not removed"; fi
  kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  exit "$status"
}

nestor() { "$NESTOR_BIN" "$@" -n "$NAMESPACE"; }

# remove_s3_prefix: deletes the benchmark's snapshots from the local bucket. versitygw's
# posix backend keeps a bucket as a directory and an object as a file under it, and no S3
# client is installed here: the files go.
remove_s3_prefix() {
  [[ -n ${NESTOR_S3_BUCKET:-} && -d $S3_DATA_DIR/$NESTOR_S3_BUCKET/$S3_PREFIX ]] || return 0
  rm -rf "${S3_DATA_DIR:?}/$NESTOR_S3_BUCKET/$S3_PREFIX"
  rmdir "$S3_DATA_DIR/$NESTOR_S3_BUCKET/bench" 2>/dev/null || true # the last run's out
}

destination_yaml() { # DESTINATION
  case $1 in
    volume) echo "{volume: {size: $((FILL_MIB * 3 * RUNS + 512))Mi}}" ;;
    s3) echo "{s3: {endpoint: '$NESTOR_S3_ENDPOINT', bucket: $NESTOR_S3_BUCKET, region: ${NESTOR_S3_REGION:-us-east-1}, prefix: $S3_PREFIX, credentialsSecret: bench-s3}}" ;;
  esac
}

# backup_tenant_yaml NAME DESTINATION: lib.sh's tenant (MEMBERS etcd members on claims, 1
# apiserver) with a backup to DESTINATION that never fires by itself (1 January).
backup_tenant_yaml() {
  tenant_yaml "$1" "$MEMBERS" 1 false | sed '/^---$/d'
  cat <<YAML
  backup:
    schedule: "0 0 1 1 *"
    retain: $((RUNS + 1))
    destination: $(destination_yaml "$2")
YAML
}

# tenant_credentials NAME: the tenant's admin client certificate, key and CA in $WORK.
tenant_credentials() {
  local secret kubeconfig="$WORK/$1.kubeconfig"
  secret=$(kc -n "$NAMESPACE" get tenantcluster "$1" -o jsonpath='{.status.kubeconfigSecretName}')
  (umask 077 && kc -n "$NAMESPACE" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d >"$kubeconfig")
  local view=("$(k8s_bin kubectl)" config view --kubeconfig "$kubeconfig" --raw -o)
  "${view[@]}" jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$WORK/client.crt"
  "${view[@]}" jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$WORK/client.key"
  "${view[@]}" jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$WORK/ca.crt"
}

# tenant_endpoint NAME: TENANT_URL (the server its kubeconfig names) and CONNECT_TO (that
# name to its apiserver Service's address, reachable from the host).
tenant_endpoint() {
  local secret host ip
  secret=$(kc -n "$NAMESPACE" get tenantcluster "$1" -o jsonpath='{.status.kubeconfigSecretName}')
  TENANT_URL=$(kc -n "$NAMESPACE" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d |
    "$(k8s_bin kubectl)" config view --kubeconfig /dev/stdin --raw -o jsonpath='{.clusters[0].cluster.server}')
  host=${TENANT_URL#https://}
  host=${host%%/*}
  ip=$(kc -n "$NAMESPACE" get service "$1-apiserver" -o jsonpath='{.spec.clusterIP}')
  CONNECT_TO="$host:$ip:${host##*:}"
}

# tenant_curl: a request to the endpoint of tenant_endpoint with the credentials of
# tenant_credentials. A restored tenant keeps the backup's CAs: the source tenant's admin
# certificate is accepted by it, and its serving certificate is verified by the old CA.
tenant_curl() { curl -sS --cacert "$WORK/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key" --connect-to "$CONNECT_TO" "$@"; }

fill_body() { # a ConfigMap of 512 KiB, labelled bench=fill
  printf '{"metadata":{"generateName":"fill-","labels":{"bench":"fill"}},"data":{"fill":"%s"}}' \
    "$(head -c $((512 * 1024)) /dev/zero | tr '\0' x)" >"$WORK/fill.json"
}

# fill_count: the tenant's bench=fill ConfigMaps, as the apiserver lists them.
fill_count() {
  tenant_curl -m 60 "$TENANT_URL/api/v1/namespaces/default/configmaps?labelSelector=bench%3Dfill" | jq '.items | length'
}

# delete_tenant NAME: deletes the TenantCluster and waits until nothing labelled with it is
# left (pods and claims), so that the next restore does not share the node with its teardown.
delete_tenant() {
  kc -n "$NAMESPACE" delete tenantcluster "$1" --wait=true --timeout=180s >/dev/null ||
    log "warning: $1 not deleted within 180 s"
  wait_until "pods and claims of $1 gone" 180 nothing_labelled "$TENANT_LABEL=$1" ||
    log "warning: leftovers of $1 still present"
}
nothing_labelled() { [[ -z $(kc -n "$NAMESPACE" get pods,pvc -l "$1" -o name) ]]; }

# restore_phases NAME: where a restore's time went, in seconds since the TenantCluster's
# creationTimestamp (API timestamps, 1 s resolution): the slowest member's restore init
# container (start to finish, etcdutl and the snapshot's checks), EtcdReady and
# APIServerReady turning True, and every condition that is True with its transition.
restore_phases() {
  local tenant pods
  tenant=$(kc -n "$NAMESPACE" get tenantcluster "$1" -o json)
  pods=$(kc -n "$NAMESPACE" get pods -l "$TENANT_LABEL=$1" -o json)
  jq -cn --argjson tenant "$tenant" --argjson pods "$pods" '
    def t: fromdateiso8601;
    ($tenant.metadata.creationTimestamp | t) as $created
    | def since: if . == null then null else t - $created end;
      def condition($type): [$tenant.status.conditions[]? | select(.type == $type and .status == "True") | .lastTransitionTime][0] | since;
    [$pods.items[] | .status.initContainerStatuses[]? | .state.terminated | select(. != null)
     | {took: ((.finishedAt | t) - (.startedAt | t)), finished: (.finishedAt | since)}] as $inits
    | {etcdutl_restore_s: ($inits | map(.took) | max), restore_finished_s: ($inits | map(.finished) | max),
       etcd_ready_s: condition("EtcdReady"), apiserver_ready_s: condition("APIServerReady"),
       conditions_true_s: ([$tenant.status.conditions[]? | select(.status == "True") | {key: .type, value: (.lastTransitionTime | since)}] | from_entries)}'
}

one_destination() { # DESTINATION
  local destination=$1 name="bk-$1" created ready_at written=0 i error=""
  log "backup: tenant $name ($MEMBERS etcd member(s)) backing up to its $destination"
  created=$(now)
  backup_tenant_yaml "$name" "$destination" | kc create -f - >/dev/null
  kc -n "$NAMESPACE" wait tenantcluster "$name" --for=condition=Ready=True --timeout="${READY_TIMEOUT}s" >/dev/null ||
    error="tenant not Ready within $READY_TIMEOUT s"
  ready_at=$(now)
  : >"$WORK/$name-backups.jsonl"
  : >"$WORK/$name-restores.jsonl"
  if [[ -z $error ]]; then
    tenant_credentials "$name"
    tenant_endpoint "$name"
    for ((i = 0; i < FILL_MIB * 2; i++)); do
      tenant_curl -m 10 -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
        --data-binary @"$WORK/fill.json" "$TENANT_URL/api/v1/namespaces/default/configmaps" | grep -q '^201$' &&
        written=$((written + 1))
    done
    log "  $written ConfigMaps of 512 KiB written in $(seconds "$ready_at" "$(now)") s"
    local run started line
    for ((run = 1; run <= RUNS; run++)); do
      started=$(now)
      if ! nestor backup "$name" >"$WORK/$name-backup-$run.out" 2>"$WORK/$name-backup-$run.err"; then
        error="backup $run failed: $(tail -n1 "$WORK/$name-backup-$run.err")"
        break
      fi
      local took
      took=$(seconds "$started" "$(now)")
      # "backup KEY taken: BYTES bytes, etcd revision N, at LOCATION (S.Ss in the agent, Ns in all)"
      line=$(grep '^backup .* taken:' "$WORK/$name-backup-$run.out")
      jq -cn --arg line "$line" --argjson wall "$took" '
        $line | capture("^backup (?<key>[^ ]+) taken: (?<bytes>[0-9]+) bytes, etcd revision (?<revision>[0-9]+), at (?<location>[^ ]+) \\((?<agent>[0-9.]+)s in the agent")
        | {key, location, bytes: (.bytes | tonumber), revision: (.revision | tonumber),
           agent_s: (.agent | tonumber), wall_s: $wall}' >>"$WORK/$name-backups.jsonl"
      log "  backup $run: $(jq -r '"\(.bytes / 1048576 * 10 | round / 10) MiB in \(.agent_s) s in the agent, \(.wall_s) s in all"' <(tail -n1 "$WORK/$name-backups.jsonl"))"
    done
  fi
  if [[ -z $error ]]; then
    local key restored started ready count
    key=$(tail -n1 "$WORK/$name-backups.jsonl" | jq -r .key)
    for ((run = 1; run <= RESTORE_RUNS; run++)); do
      restored="$name-r$run"
      started=$(now)
      if ! nestor restore "$name" --from "$key" --as "$restored" --wait --timeout "${READY_TIMEOUT}s" \
        >"$WORK/$restored.out" 2>&1; then
        error="restore $run failed: $(tail -n1 "$WORK/$restored.out")"
        break
      fi
      ready=$(now)
      tenant_endpoint "$restored"
      count=$(fill_count || echo null)
      jq -cn --argjson took "$(seconds "$started" "$ready")" --argjson count "$count" --argjson phases "$(restore_phases "$restored")" \
        '{ready_s: $took, fill_configmaps_read_back: $count} + $phases' >>"$WORK/$name-restores.jsonl"
      log "  restore $run: Ready $(seconds "$started" "$ready") s after nestor restore ($(tail -n1 "$WORK/$name-restores.jsonl" | jq -r '"etcdutl restore \(.etcdutl_restore_s) s in the init container, EtcdReady at \(.etcd_ready_s) s"')); $count ConfigMaps read back with the old admin kubeconfig"
      # For a slow restore: how its leader-elected components took their Leases.
      local component
      for component in kube-controller-manager kube-scheduler; do
        kc -n "$NAMESPACE" logs -l "$TENANT_LABEL=$restored,app.kubernetes.io/component=$component" --tail=-1 --timestamps 2>&1 |
          grep -iE 'lease|leader' >"$WORK/$restored-$component-leader.log" || true
      done
      delete_tenant "$restored"
    done
  fi
  [[ -z $error ]] || log "  $name: $error"
  jq -n --arg destination "$destination" --argjson members "$MEMBERS" --arg error "$error" \
    --argjson written "$written" --argjson ready "$(seconds "$created" "$ready_at")" \
    --slurpfile backups "$WORK/$name-backups.jsonl" --slurpfile restores "$WORK/$name-restores.jsonl" '
    def median: sort | if length == 0 then null
                       elif length % 2 == 1 then .[length / 2 | floor]
                       else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def r2: if . == null then null else . * 100 | round / 100 end;
    ($backups | map(.bytes / 1048576)) as $mib
    | {destination: $destination, etcd_members: $members, error: (if $error == "" then null else $error end),
       ready_s: $ready, fill: {configmaps_512kib: $written, mib: ($written / 2)},
       snapshot_mib: ($mib | median | r2),
       backups: $backups,
       backup_agent_s: {median: ($backups | map(.agent_s) | median | r2)},
       backup_wall_s: {median: ($backups | map(.wall_s) | median | r2)},
       backup_mib_per_s: {agent: ([$backups[] | .bytes / 1048576 / .agent_s] | median | r2),
                          wall: ([$backups[] | .bytes / 1048576 / .wall_s] | median | r2)},
       restores: $restores,
       restore_ready_s: {median: ($restores | map(.ready_s) | median | r2)},
       restore_init_s: {median: ($restores | map(.etcdutl_restore_s) | median)}}' >>"$WORK/scenarios.jsonl"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  if [[ " $DESTINATIONS " == *" s3 "* && ! -f $S3_ENV ]]; then "$HACK_DIR/s3-up.sh" >&2; fi
  if [[ -f $S3_ENV ]]; then
    # shellcheck disable=SC1090
    source "$S3_ENV"
  fi
  kc create namespace "$NAMESPACE" >/dev/null
  if [[ " $DESTINATIONS " == *" s3 "* ]]; then
    kc -n "$NAMESPACE" create secret generic bench-s3 --from-literal=accessKeyID="$NESTOR_S3_ACCESS_KEY" \
      --from-literal=secretAccessKey="$NESTOR_S3_SECRET_KEY" >/dev/null
  fi
  local image
  log "backup: building the operator image from $NESTOR_BIN (the backup Jobs and restores run it)"
  image=$(NESTOR_OPERATOR_BINARY=$NESTOR_BIN "$HACK_DIR/build-operator-image.sh")
  start_operator "$NAMESPACE" "$WORK/operator.log" --agent-image "$image"
  fill_body
  : >"$WORK/scenarios.jsonl"
  local destination
  for destination in $DESTINATIONS; do one_destination "$destination"; done
  jq -s --argjson fill "$FILL_MIB" --argjson members "$MEMBERS" '{
    tenant: "\($members) etcd member(s) on volume claims (local-path), 1 apiserver; local images; the operator image built from the benchmarked binary",
    method: "\($fill) MiB of 512 KiB ConfigMaps written; nestor backup run one after the other; each restore a new tenant from the newest snapshot (nestor restore --as --wait), then deleted",
    stores: {volume: "a PersistentVolumeClaim (local-path, on this machine'"'"'s disk)", s3: "versitygw (hack/s3-up.sh) on 10.200.0.1, posix backend on this machine'"'"'s disk"},
    scenarios: .}' "$WORK/scenarios.jsonl" >"$OUTPUT"
  log "backup benchmark written to $OUTPUT"
}

main "$@"
