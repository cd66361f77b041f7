#!/usr/bin/env bash
# Runs hack/meta-down.sh and checks that nothing of the meta cluster is left
# on the machine: no process, mount, interface, route, iptables chain, pod
# cgroup or runtime directory, no worker host (hack/worker-up.sh) and no S3
# store (hack/s3-up.sh) or its data. Prints one line per check and a closing
# "N passed, N failed" line.
set -uo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO_ROOT/hack/lib.sh"

"$REPO_ROOT/hack/meta-down.sh"
passed=0 failed=0
check() { # DESCRIPTION LEFTOVERS
  if [[ -z $2 ]]; then passed=$((passed + 1)); echo "ok   - $1"
  else failed=$((failed + 1)); echo "FAIL - $1:"; sed 's/^/       /' <<<"$2"; fi
}
binaries="$NESTOR_CACHE/bin|$META_CONTAINERD_SOCKET|$META_DIR/containerd/config.toml"
check "no process of the meta cluster runs" "$(pgrep -af -- "$binaries" | grep -v "clean-after-down" || true)"
check "no container of the meta cluster runs (containerd shims)" "$(pgrep -af containerd-shim || true)"
check "no S3 store (versitygw) runs" "$(pgrep -a -x versitygw || true)"
check "no S3 store data left ($S3_DATA_DIR)" "$( [[ -e $S3_DATA_DIR ]] && echo "$S3_DATA_DIR exists" || true)"
check "no mount under $META_DIR or $META_RUN_DIR" \
  "$(awk -v a="$META_DIR" -v b="$META_RUN_DIR" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo)"
check "no bridge $META_BRIDGE and no veth left" "$(ip -o link show | grep -E "$META_BRIDGE|veth" || true)"
check "no route for the pod or Service range" \
  "$(ip route show | grep -E "^(blackhole )?(${META_POD_CIDR%/*}|${META_SERVICE_CIDR%/*})" || true)"
check "no iptables chain or rule of kube-proxy, the kubelet, CNI or Nestor" \
  "$( { iptables-save; ip6tables-save; } 2>/dev/null | grep -E "KUBE-|CNI-|$META_IPTABLES_CHAIN" || true)"
check "no pod cgroup (kubepods) in any hierarchy" "$(ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null || true)"
check "runtime directory $META_RUN_DIR removed" "$( [[ -e $META_RUN_DIR ]] && echo "$META_RUN_DIR exists" || true)"
check "sysctls restored (no saved copy left)" "$( [[ -e $META_DIR/sysctl.saved ]] && echo present || true)"
check "no worker host left (network namespace, veth, iptables chain, cgroup, state)" "$(
  ip netns list 2>/dev/null | grep '^nestor-w-'
  ip -o link show | awk -F': ' '$2 ~ /^nw-/ {print $2}'
  iptables-save 2>/dev/null | grep -E 'NESTOR-W-'
  ls -d /sys/fs/cgroup/*/nestor-w-* 2>/dev/null
  ls -d "$WORKER_DIR" "$WORKER_RUN_DIR" 2>/dev/null
  true)"
echo "meta clean-up: $passed passed, $failed failed"
[[ $failed == 0 ]]
