#!/usr/bin/env bash
# `make bench`: measures and reports; a benchmark never fails the test suite, and
# `make test` never runs one. In order:
#   1. the meta cluster (hack/meta-up.sh; idempotent) and the CRD
#   2. criterion micro-benchmarks of the PKI (operator/benches/pki.rs), medians
#   3. the release operator build, then the cluster benchmarks (bench/cluster.sh):
#      time to Ready, burst, operator footprint, idle writes
#   4. the scale benchmark (bench/scale.sh): 1000 tenants whose pods kwok simulates
#   5. the density benchmark (bench/density.sh): real tenants one by one until one fails
#   6. the workloads benchmark (bench/workers.sh, root): a joinable tenant, a worker host
#      joined to it, a pod Running on it, the idle tenant's pods by component
#   6b. the tunnel benchmark (bench/tunnel.sh, root): `kubectl exec -- true` through the
#      konnectivity tunnel against direct routing, and the memory the tunnel adds
#   6c. the etcd space benchmark (bench/etcd-space.sh): defragmentation time, and the
#      tenant API's availability while the operator defragments its etcd members
#   6d. the backup benchmark (bench/backup.sh): a tenant holding 100 MiB of objects backed
#      up to a volume claim and to the local S3 server (time, throughput), and restored
#      from each (time to Ready)
#   7. the peer benchmark (bench/peer.sh): Kamaji built from the Go module proxy and installed
#      beside Nestor, both measured on the same work at the newest Kubernetes Kamaji accepts;
#      if Kamaji cannot be built or installed the part is recorded as failed with the reason
#   8. bench/results/<UTC stamp>.json (machine, commit, load, every figure with units)
#      and the table (bench/report.sh), printed and pasted into docs/benchmarks.md by hand
#
# Knobs: BENCH_PARTS (default "pki cluster scale density workers tunnel etcd-space backup peer":
# which of them run; `make bench-scale`, `make bench-density`, `make bench-workers`,
# `make bench-tunnel`, `make bench-etcd-space`, `make bench-backup` and `make bench-peer`
# run one each);
# BENCH_META_UP=0 skips meta-up
# (cluster known to be up); BENCH_CLUSTER=0 runs the micro-benchmarks only; NESTOR_BIN
# runs the cluster parts with that operator binary instead of building one; the scripts
# in bench/ document the rest (runs, burst size, tenant counts, windows).
# Exits non-zero only when the benchmarks could not run at all.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
cd "$REPO_ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
command -v jq >/dev/null || die "jq is required (apt-get install jq)"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULT="$REPO_ROOT/bench/results/$STAMP.json"
WORK=$(mktemp -d /tmp/nestor-bench-run.XXXXXX)
load_average() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_START=$(load_average)
log "make bench: results go to $RESULT (load average at start: $LOAD_START)"

PARTS=" ${BENCH_PARTS:-pki cluster scale density workers tunnel etcd-space backup peer} "
[[ ${BENCH_CLUSTER:-1} != 0 ]] || PARTS=" pki "
part() { [[ $PARTS == *" $1 "* ]]; }
log "parts:$PARTS"

if [[ ${BENCH_META_UP:-1} != 0 ]]; then "$HACK_DIR/meta-up.sh"; fi
# Not forced: on a shared meta cluster another field manager (the tests of another
# checkout) may own the CRD, and overwriting it would change their schema under them.
meta_kubectl apply --server-side --field-manager=nestor-bench -f crds/nestor.dev_tenantclusters.yaml >/dev/null ||
  log "warning: the CRD was not updated (owned by another field manager); benchmarking against the installed one"

# --- micro-benchmarks: a few seconds each (see operator/benches/pki.rs) ---
echo null >"$WORK/pki.json"
if part pki; then
  log "criterion: PKI and desired-state benchmarks"
  cargo bench --locked --bench pki -- --noplot
  median_ns() { # GROUP BENCH: criterion's median estimate, in nanoseconds
    jq '.median.point_estimate' "$CARGO_TARGET_DIR/criterion/$1/$2/new/estimates.json"
  }
  jq -n --argjson full_ecdsa "$(median_ns full_pki ecdsa)" --argjson full_rsa "$(median_ns full_pki rsa)" \
    --argjson steady_ecdsa "$(median_ns steady_state ecdsa)" --argjson steady_rsa "$(median_ns steady_state rsa)" '{
      unit: "ns (criterion median)",
      full_pki_ecdsa_ns: $full_ecdsa, full_pki_rsa_ns: $full_rsa,
      steady_state_ecdsa_ns: $steady_ecdsa, steady_state_rsa_ns: $steady_rsa
    }' >"$WORK/pki.json"
fi

# --- cluster benchmarks, with the release operator (the honest build) ---
for name in cluster scale density workers tunnel etcd-space backup peer; do echo null >"$WORK/$name.json"; done
if part cluster || part scale || part density || part workers || part tunnel || part etcd-space || part backup || part peer; then
  if [[ -n ${NESTOR_BIN:-} ]]; then
    log "using the operator binary $NESTOR_BIN (NESTOR_BIN set: no build)"
    cp "$NESTOR_BIN" "$WORK/nestor"
  else
    log "building the release operator"
    cargo build --locked --release --bin nestor
    # A private copy: with a shared CARGO_TARGET_DIR another worktree's build may replace
    # release/nestor while the benchmark runs (cargo re-links it on every build, even a fresh one).
    cp "$CARGO_TARGET_DIR/release/nestor" "$WORK/nestor"
  fi
  export NESTOR_BIN="$WORK/nestor"
  # A part that fails is reported as missing; the others still run.
  for name in cluster scale density workers tunnel etcd-space backup peer; do
    if part "$name"; then
      "$REPO_ROOT/bench/$name.sh" "$WORK/$name.json" || { log "warning: bench/$name.sh failed"; echo null >"$WORK/$name.json"; }
    fi
  done
fi

LOAD_END=$(load_average)
jq -n --slurpfile pki "$WORK/pki.json" --slurpfile cluster "$WORK/cluster.json" \
  --slurpfile scale "$WORK/scale.json" --slurpfile density "$WORK/density.json" \
  --slurpfile workers "$WORK/workers.json" --slurpfile tunnel "$WORK/tunnel.json" --slurpfile etcd_space "$WORK/etcd-space.json" \
  --slurpfile backup "$WORK/backup.json" --slurpfile peer "$WORK/peer.json" \
  --arg stamp "$STAMP" --arg commit "$(git rev-parse HEAD)$(git diff --quiet HEAD -- operator templates || echo '+dirty')" \
  --argjson nproc "$(nproc)" --argjson memory_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" \
  --arg kernel "$(uname -r)" --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
  --arg load_start "$LOAD_START" --arg load_end "$LOAD_END" '{
    timestamp: $stamp,
    git_commit: $commit,
    machine: {nproc: $nproc, memory_mib: ($memory_kib / 1024 | floor), kernel: $kernel, cpu: $cpu},
    load_average: {start: $load_start, end: $load_end},
    pki: $pki[0],
    cluster: $cluster[0],
    scale: $scale[0],
    density: $density[0],
    workers: $workers[0],
    tunnel: $tunnel[0],
    etcd_space: $etcd_space[0],
    backup: $backup[0],
    peer: $peer[0]
  }' >"$RESULT"

echo
"$REPO_ROOT/bench/report.sh" "$RESULT"
echo
log "results: $RESULT (paste the table into docs/benchmarks.md)"
