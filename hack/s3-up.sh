#!/usr/bin/env bash
# Starts the local S3 store that etcd backup tests write to: versitygw (its posix backend,
# each object a file under /var/lib/nestor-meta/s3/<bucket>/) on the meta cluster's bridge
# address, so the host and the meta cluster's pods reach it at the same URL. Needs the meta
# cluster (make meta-up) for that address; builds versitygw on first use.
#
#   endpoint: http://10.200.0.1:9343   bucket: nestor-backups   region: us-east-1
#   settings for tests: /run/nestor-meta/s3.env   log: /var/lib/nestor-meta/logs/s3.log
#
# Idempotent: a running, answering store is left alone. A store that was killed (stale pid
# file) or does not answer is started afresh over the data it left. hack/s3-down.sh stops it;
# hack/meta-down.sh stops it and removes its data.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

[[ $(id -u) == 0 ]] || die "s3-up needs root (its state lives under $META_DIR and $META_RUN_DIR)"
ip -4 -o addr show dev "$META_BRIDGE" 2>/dev/null | grep -qF " $META_NODE_IP/" ||
  die "the meta cluster is down (no $META_NODE_IP on bridge $META_BRIDGE): run \`make meta-up\` first"

# A signed ListBuckets that succeeds: the server is up and takes our credentials.
s3_answers() { s3_curl --max-time 3 -o /dev/null -f "$S3_ENDPOINT/" 2>/dev/null; }

ensure_bucket() {
  local response
  response=$(s3_curl -w '\n%{http_code}' -X PUT "$S3_ENDPOINT/$S3_BUCKET") || die "creating bucket $S3_BUCKET failed: $response"
  case ${response##*$'\n'} in
    200) log "created bucket $S3_BUCKET" ;;
    409) grep -q BucketAlreadyOwnedByYou <<<"$response" || die "creating bucket $S3_BUCKET: $response" ;;
    *) die "creating bucket $S3_BUCKET: $response" ;;
  esac
}

write_env_file() {
  local tmp="$S3_ENV_FILE.tmp"
  cat >"$tmp" <<EOF
# The local S3 store (hack/s3-up.sh); development credentials, reachable on this machine only.
NESTOR_S3_ENDPOINT=$S3_ENDPOINT
NESTOR_S3_ACCESS_KEY=$S3_ACCESS_KEY
NESTOR_S3_SECRET_KEY=$S3_SECRET_KEY
NESTOR_S3_BUCKET=$S3_BUCKET
NESTOR_S3_REGION=$S3_REGION
EOF
  mv "$tmp" "$S3_ENV_FILE"
}

start_store() {
  local holder
  holder=$(ss -Hltnp "( sport = :$S3_PORT )" 2>/dev/null || true)
  [[ -z $holder ]] || die "port $S3_PORT is taken by a process s3-up did not record: $holder"
  mkdir -p "$S3_DATA_DIR" "$META_LOG_DIR" "$META_RUN_DIR/pids"
  # Credentials through the environment, so they are not in the process list. --quiet drops
  # the per-request console line; the access log on stdout names each S3 operation instead.
  ROOT_ACCESS_KEY=$S3_ACCESS_KEY ROOT_SECRET_KEY=$S3_SECRET_KEY \
    start_meta_process s3 "$(versitygw_bin)" --port "$META_NODE_IP:$S3_PORT" --region "$S3_REGION" \
    --quiet --access-log - posix "$S3_DATA_DIR"
  if ! wait_until "the S3 store answering on $S3_ENDPOINT" 30 s3_answers; then
    tail -n 20 "$META_LOG_DIR/s3.log" >&2
    "$HACK_DIR/s3-down.sh"
    die "the S3 store did not answer on $S3_ENDPOINT within 30 s (log above, $META_LOG_DIR/s3.log)"
  fi
}

main() {
  upstream_complete versitygw "$VERSITYGW_VERSION" || "$HACK_DIR/build-upstream.sh" versitygw
  local pid
  pid=$(s3_pid)
  if [[ -n $pid ]] && s3_answers; then
    log "the S3 store is already running (pid $pid)"
  else
    # Killed, hung, or never started: whatever is recorded goes (s3-down only stops a
    # versitygw it started; the data stays).
    [[ -z $pid ]] || log "the S3 store (pid $pid) does not answer: restarting it"
    "$HACK_DIR/s3-down.sh"
    start_store
  fi
  ensure_bucket
  write_env_file
  log "S3 store ready at $S3_ENDPOINT, bucket $S3_BUCKET; settings in $S3_ENV_FILE"
}

main "$@"
