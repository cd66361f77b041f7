#!/usr/bin/env bash
# Shows the local meta cluster: each host process and whether it runs, the
# node, and the system pods. Exits non-zero when something is down.
set -uo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

healthy=true
for component in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
  if pid_alive "$component"; then
    printf '%-24s running (pid %s)\n' "$component" "$(cat "$(pid_file "$component")")"
  else
    printf '%-24s NOT RUNNING\n' "$component"; healthy=false
  fi
done
# The local S3 store is optional (make s3-up): shown, but not part of the cluster's health.
s3=$(s3_pid)
if [[ -n $s3 ]]; then
  printf '%-24s running (pid %s), %s, settings in %s\n' "s3 (versitygw)" "$s3" "$S3_ENDPOINT" "$S3_ENV_FILE"
else
  printf '%-24s not running (optional: make s3-up)\n' "s3 (versitygw)"
fi
echo "kubeconfig: $META_KUBECONFIG    logs: $META_LOG_DIR/"
if meta_kubectl get --raw /readyz >/dev/null 2>&1; then
  meta_kubectl get nodes -o wide
  meta_kubectl get pods -n kube-system -o wide
  meta_kubectl get pods -n local-path-storage -o wide
else
  echo "apiserver: not answering"; healthy=false
fi
$healthy
