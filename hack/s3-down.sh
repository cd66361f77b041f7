#!/usr/bin/env bash
# Stops the local S3 store that hack/s3-up.sh started (by its recorded pid, and only if that
# pid is still its versitygw) and removes its settings file. The stored objects stay for the
# next s3-up unless --purge is given. Safe to run when nothing runs.
#
# Usage: hack/s3-down.sh [--purge]
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

purge=false
case ${1:-} in
  "") ;;
  --purge) purge=true ;;
  *) die "usage: hack/s3-down.sh [--purge]" ;;
esac
[[ $(id -u) == 0 ]] || die "s3-down needs root (its state lives under $META_DIR and $META_RUN_DIR)"

pid=$(s3_pid)
if [[ -n $pid ]]; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -KILL "$pid" 2>/dev/null; then log "killed the S3 store (pid $pid)"; else log "stopped the S3 store (pid $pid)"; fi
elif [[ -f $(pid_file s3) ]]; then
  log "stale S3 pid file (pid $(cat "$(pid_file s3)") is no versitygw of ours): removed"
fi
rm -f "$(pid_file s3)" "$S3_ENV_FILE"
if $purge && [[ -d $S3_DATA_DIR ]]; then
  rm -rf "$S3_DATA_DIR"
  log "removed the S3 store's data ($S3_DATA_DIR)"
fi
