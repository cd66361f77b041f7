#!/usr/bin/env bash
# Smoke test of the local S3 store (needs `make s3-up`), with the settings tests get from
# /run/nestor-meta/s3.env: from the host, an object is put, listed, read back, found as a
# plain file under the store's data directory, deleted and gone; unsigned and wrongly signed
# requests are refused. From a pod of the meta cluster, the same endpoint answers a plain
# request with an S3 error (a pod has no signing client; reaching the store is the point).
# Prints one line per check and a closing "N passed, N failed" line.
set -uo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HACK_DIR="$REPO_ROOT/hack"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

started=$(date +%s)
[[ -f $S3_ENV_FILE ]] || die "no $S3_ENV_FILE: the S3 store is not running (make s3-up)"
# shellcheck disable=SC1090
source "$S3_ENV_FILE"
passed=0 failed=0
check() { # DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then passed=$((passed + 1)); echo "ok   - $what"
  else failed=$((failed + 1)); echo "FAIL - $what"; fi
}

work=$(mktemp -d)
NS="s3-smoke-$$"
cleanup() {
  rm -rf "$work"
  [[ -f $META_KUBECONFIG ]] && meta_kubectl delete namespace "$NS" --wait=false --ignore-not-found >/dev/null 2>&1
}
trap cleanup EXIT

# signed [--secret SECRET] OUT_FILE CURL_ARGS...: a SigV4-signed request with the settings of
# s3.env; the body goes to OUT_FILE, the HTTP status to stdout.
signed() {
  local secret=$NESTOR_S3_SECRET_KEY payload_hash=UNSIGNED-PAYLOAD
  if [[ $1 == --secret ]]; then secret=$2; shift 2; fi
  local out=$1
  shift
  [[ ${1:-} != -T ]] || payload_hash=$(sha256sum "$2" | cut -d' ' -f1)
  curl -sS --max-time 10 -o "$out" -w '%{http_code}' \
    --aws-sigv4 "aws:amz:$NESTOR_S3_REGION:s3" --user "$NESTOR_S3_ACCESS_KEY:$secret" \
    -H "x-amz-content-sha256: $payload_hash" "$@"
}
s3_error_code() { sed -n 's:.*<Code>\(.*\)</Code>.*:\1:p' "$1"; }

key="s3-smoke/$$-$(date +%s)/object.bin"
url="$NESTOR_S3_ENDPOINT/$NESTOR_S3_BUCKET/$key"
head -c 300000 /dev/urandom >"$work/object"

unsigned_refused() {
  [[ $(curl -sS --max-time 10 -o "$work/unsigned" -w '%{http_code}' "$NESTOR_S3_ENDPOINT/") == 403 &&
    $(s3_error_code "$work/unsigned") == AccessDenied ]]
}
bad_secret_refused() {
  [[ $(signed --secret wrong-secret "$work/bad" "$NESTOR_S3_ENDPOINT/") == 403 &&
    $(s3_error_code "$work/bad") == SignatureDoesNotMatch ]]
}
put_object() { [[ $(signed "$work/put" -T "$work/object" "$url") == 200 ]]; }
list_prefix() { [[ $(signed "$work/list" "$NESTOR_S3_ENDPOINT/$NESTOR_S3_BUCKET?list-type=2&prefix=s3-smoke%2F") == 200 ]]; }
listed() { list_prefix && grep -qF "<Key>$key</Key>" "$work/list"; }
not_listed() { list_prefix && grep -qF "<ListBucketResult" "$work/list" && ! grep -qF "<Key>$key</Key>" "$work/list"; }
read_back() { [[ $(signed "$work/got" "$url") == 200 ]] && cmp -s "$work/object" "$work/got"; }
stored_as_file() { cmp -s "$work/object" "$S3_DATA_DIR/$NESTOR_S3_BUCKET/$key"; }
delete_object() { [[ $(signed "$work/delete" -X DELETE "$url") == 204 ]]; }
gone() {
  [[ $(signed "$work/gone" "$url") == 404 && $(s3_error_code "$work/gone") == NoSuchKey &&
    ! -e $S3_DATA_DIR/$NESTOR_S3_BUCKET/$key ]]
}

check "an unsigned request is refused with AccessDenied" unsigned_refused
check "a request signed with a wrong secret is refused with SignatureDoesNotMatch" bad_secret_refused
check "put a 300 kB object into $NESTOR_S3_BUCKET (payload hash signed)" put_object
check "the object is listed under its prefix" listed
check "the object reads back byte for byte" read_back
check "the object is a plain file under $S3_DATA_DIR" stored_as_file
check "delete the object" delete_object
check "the deleted object is gone (404 NoSuchKey, no file)" gone
check "the deleted object is no longer listed" not_listed

# From a pod: busybox cannot sign, so a raw HTTP request (nc) must get an S3 AccessDenied.
BUSYBOX_IMAGE="$LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG"
pod_done() { [[ $(meta_kubectl -n "$NS" get pod s3-client -o jsonpath='{.status.phase}') =~ ^(Succeeded|Failed)$ ]]; }
pod_reaches_store() {
  meta_kubectl create namespace "$NS" >/dev/null || return 1
  local host_port=${NESTOR_S3_ENDPOINT#http://}
  meta_kubectl -n "$NS" apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Pod
metadata: {name: s3-client}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: $BUSYBOX_IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'printf "GET / HTTP/1.0\r\nHost: $host_port\r\n\r\n" | nc -w 5 ${host_port%:*} ${host_port#*:}']
EOF
  wait_until "the S3 client pod to finish" 60 pod_done || return 1
  meta_kubectl -n "$NS" logs s3-client >"$work/pod.log" 2>&1
  grep -q '^HTTP/1.[01] 403' "$work/pod.log" && grep -qF '<Code>AccessDenied</Code>' "$work/pod.log"
}
if [[ -f $META_KUBECONFIG ]] && meta_kubectl get --raw /readyz >/dev/null 2>&1; then
  check "a pod of the meta cluster reaches $NESTOR_S3_ENDPOINT (S3 AccessDenied to a plain GET)" pod_reaches_store
else
  failed=$((failed + 1)); echo "FAIL - the meta cluster's apiserver does not answer: no pod check"
fi

echo "s3 smoke: $passed passed, $failed failed in $(( $(date +%s) - started ))s"
[[ $failed == 0 ]]
