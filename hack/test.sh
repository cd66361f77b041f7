#!/usr/bin/env bash
# Every test tier, in order, as `make test` and CI run them:
#   1. static checks and pure unit tests (no cluster): fmt, clippy, cargo test --lib --bins
#   2. the local meta cluster (hack/meta-up.sh: builds upstream on a cold machine), and
#      the local S3 store on it (hack/s3-up.sh: the backup tests' bucket)
#   3. integration and end-to-end tests against it (cargo test --test '*')
#   4. the meta cluster smoke test (tests/meta/smoke.sh)
#   5. meta-down, then a check that it left nothing behind (tests/meta/clean-after-down.sh)
# Every tier runs even when an earlier one failed (except when the cluster cannot
# start), so one run reports everything; the exit code is non-zero if any failed.
set -uo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
cd "$REPO_ROOT"

failures=()
tier() { # NAME COMMAND...
  local name=$1 started
  shift
  started=$(date +%s)
  log "=== $name"
  if "$@"; then log "=== $name: passed in $(( $(date +%s) - started ))s"
  else log "=== $name: FAILED after $(( $(date +%s) - started ))s"; failures+=("$name"); fi
}

tier "rustfmt" cargo fmt --all --check
tier "clippy" cargo clippy --all-targets --locked -- -D warnings
tier "unit tests" cargo test --locked --lib --bins
tier "meta cluster up" "$HACK_DIR/meta-up.sh"
if [[ " ${failures[*]} " == *" meta cluster up "* ]]; then
  log "the meta cluster did not start; skipping the tiers that need it (logs: $META_LOG_DIR)"
else
  export KUBECONFIG=$META_KUBECONFIG
  # The backup tests' S3 bucket (operator/tests/backup.rs skips its S3 part, loudly,
  # without it); meta-down stops it and removes its data.
  tier "local S3 store up" "$HACK_DIR/s3-up.sh"
  # Integration test binaries run one after another. Inside a binary, tests that use the
  # harness's in_namespace (operator/tests/support) also run one at a time: it holds a
  # process-wide lock for the whole test, each test with its own namespace and
  # namespace-scoped operator. Only admission.rs, which starts no operator and has its
  # own in_namespace without the lock, runs its tests in parallel.
  tier "integration and e2e tests" cargo test --locked --no-fail-fast --test '*'
  tier "meta cluster smoke test" "$REPO_ROOT/tests/meta/smoke.sh"
fi
tier "meta-down leaves nothing behind" "$REPO_ROOT/tests/meta/clean-after-down.sh"

if [[ ${#failures[@]} -gt 0 ]]; then
  log "FAILED tiers: ${failures[*]}"
  exit 1
fi
log "all test tiers passed"
