# Shared helpers of the cluster benchmarks (bench/cluster.sh, bench/scale.sh,
# bench/density.sh): the host-process operator they measure, its /proc and /metrics
# readings, and the TenantCluster manifests they create. Sourced, never run.
# shellcheck shell=bash
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
HACK_DIR="$BENCH_DIR/../hack"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

NESTOR_BIN=${NESTOR_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/nestor}
TENANT_LABEL=nestor.dev/tenant-cluster
TENANT_VERSION=${KUBERNETES_VERSION#v}
CLOCK_TICKS=$(getconf CLK_TCK)

export KUBECONFIG=$META_KUBECONFIG
kc() { meta_kubectl "$@"; }
now() { date +%s.%N; }
# seconds A B: B - A, three decimals.
seconds() { echo "$2 - $1" | bc -l | xargs printf '%.3f'; }
# random_suffix: 8 hex digits, for namespaces that must not collide with an earlier run's.
random_suffix() { head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

command -v jq >/dev/null || die "jq is required"
command -v bc >/dev/null || die "bc is required"

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    ss -Hltn "sport = :$port" | grep -q . || { echo "$port"; return; }
  done
}

# start_operator NAMESPACE LOG [EXTRA FLAG...]: runs the operator binary as a host process
# watching NAMESPACE only, with /metrics on a free local port; sets OPERATOR_PID and
# METRICS_PORT. Its own session: a Ctrl-C meant for the benchmark must not stop the
# operator before the caller's cleanup has dealt with the tenants whose finalizer it owns.
OPERATOR_PID=
METRICS_PORT=
start_operator() {
  local namespace=$1 logfile=$2
  shift 2
  [[ -x $NESTOR_BIN ]] || die "no operator binary at $NESTOR_BIN (cargo build --release, or set NESTOR_BIN)"
  METRICS_PORT=$(free_port)
  setsid "$NESTOR_BIN" operator --no-leader-election --metrics-addr "127.0.0.1:$METRICS_PORT" \
    --watch-namespace "$namespace" "$@" >"$logfile" 2>&1 &
  OPERATOR_PID=$!
  wait_until "operator /metrics" 30 curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" ||
    die "the operator did not start; see $logfile"
  log "operator pid $OPERATOR_PID watching $namespace (metrics on 127.0.0.1:$METRICS_PORT)"
}
stop_operator() {
  [[ -n $OPERATOR_PID ]] || return 0
  # SIGTERM drains the passes in flight, which can take minutes when hundreds are queued
  # on a busy apiserver: after 30 s, SIGKILL. Its exit status (143 after SIGTERM) must not
  # trip `set -e` in a caller's clean-up.
  kill "$OPERATOR_PID" 2>/dev/null || true
  local waited
  for ((waited = 0; waited < 30; waited++)); do kill -0 "$OPERATOR_PID" 2>/dev/null || break; sleep 1; done
  kill -KILL "$OPERATOR_PID" 2>/dev/null || true
  wait "$OPERATOR_PID" 2>/dev/null || true
  OPERATOR_PID=
}

# cpu_ticks: utime + stime of the operator (fields 14 and 15 of /proc/PID/stat; the
# command name in field 2 is "(nestor)", without spaces, so plain splitting works).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$OPERATOR_PID/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$OPERATOR_PID/status"; }
# The anonymous part of the RSS: the operator's heap and stacks, its state. The rest of
# the RSS is file-backed, mostly the binary's own pages, paged in once as code paths run.
rss_anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$OPERATOR_PID/status"; }
# metric_sum NAME: the operator's metric NAME summed over its labels (0 when absent).
metric_sum() {
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 {sum += $NF} END {printf "%d\n", sum}'
}
api_writes() { metric_sum nestor_api_writes_total; }
# operator_sample: one JSON line of the operator's counters and gauges now.
operator_sample() {
  local metrics
  metrics=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics")
  jq -n --argjson at "$(now)" --argjson ticks "$(cpu_ticks)" --argjson rss_kib "$(rss_kib)" --arg metrics "$metrics" '
    def total($name): [$metrics | split("\n")[] | select(startswith($name + " ") or startswith($name + "{"))
                       | split(" ") | last | tonumber] | add // 0;
    def by_verb: [$metrics | split("\n")[] | select(startswith("nestor_api_requests_total{"))
                  | capture("verb=\"(?<verb>[a-z]+)\"\\} (?<n>[0-9.e+]+)") | {key: .verb, value: (.n | tonumber)}]
                 | from_entries;
    {at: $at, cpu_ticks: $ticks, rss_kib: $rss_kib,
     reconciles: total("nestor_reconciles_total"), reconcile_errors: total("nestor_reconcile_errors_total"),
     writes: total("nestor_api_writes_total"), requests: total("nestor_api_requests_total"),
     requests_by_verb: by_verb}'
}

# tenant_yaml NAME ETCD_REPLICAS APISERVER_REPLICAS EPHEMERAL(true|false): a TenantCluster
# of the local images in $NAMESPACE, followed by a document separator.
tenant_yaml() {
  cat <<YAML
apiVersion: nestor.dev/v1alpha1
kind: TenantCluster
metadata: {name: $1, namespace: $NAMESPACE}
spec:
  version: "$TENANT_VERSION"
  imageRepository: $LOCAL_IMAGE_REPOSITORY
  etcd: {replicas: $2, storage: {ephemeral: $4}}
  apiServer: {replicas: $3}
---
YAML
}
