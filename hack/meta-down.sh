#!/usr/bin/env bash
# Stops the local meta cluster and leaves the machine as meta-up found it:
# every process it started (by recorded pid, plus the containers and shims of
# its own containerd), every mount under its state directories, the bridge,
# routes, iptables chains, cgroups and sysctls it changed, every worker host
# (hack/worker-down.sh --all) and the local S3 store with its data (hack/s3-down.sh
# --purge). Safe to run on a cluster that was killed without meta-down, or on none at all.
# The logs of the run are kept in /var/lib/nestor-meta/logs.
set -uo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

[[ $(id -u) == 0 ]] || die "meta-down needs root"

stop_component() {
  local component=$1 file pid
  file=$(pid_file "$component")
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && log "killed $component (pid $pid)" || log "stopped $component (pid $pid)"
  fi
  rm -f "$file"
}

# Kubelet-created pod cgroups hold every container process of this cluster.
pod_cgroup_dirs() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -d ${hierarchy}kubepods ]] && echo "${hierarchy}kubepods"
  done
}

kill_containers() {
  local dir pids
  for round in 1 2 3; do
    pids=$(for dir in $(pod_cgroup_dirs); do find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -u)
    [[ -n $pids ]] || break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.3
  done
  # containerd shims started by our containerd carry its socket in their arguments.
  local pid
  for pid in $(pgrep -f -- "-address $META_CONTAINERD_SOCKET" || true); do
    kill -KILL "$pid" 2>/dev/null
  done
}

remove_pod_cgroups() {
  local dir
  for dir in $(pod_cgroup_dirs); do
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}

unmount_state() {
  # Deepest mounts first; lazy so a busy mount cannot block clean-up.
  local mount_point
  for _ in 1 2; do
    awk -v a="$META_DIR" -v b="$META_RUN_DIR" '$5 ~ "^"a || $5 ~ "^"b {print $5}' /proc/self/mountinfo |
      sort -r | while read -r mount_point; do umount -l "$mount_point" 2>/dev/null; done
  done
}

remove_network() {
  if ip link show "$META_BRIDGE" >/dev/null 2>&1; then
    # Veth ends left on the bridge by killed pods (their namespaces are unmounted above).
    local veth
    for veth in $(ip -o link show master "$META_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$veth" 2>/dev/null
    done
    ip link del "$META_BRIDGE"  # also removes the Service route on it
  fi
  ip route del blackhole "$META_POD_CIDR" 2>/dev/null
  ip route del "$META_SERVICE_CIDR" 2>/dev/null
  while iptables -D FORWARD -j "$META_IPTABLES_CHAIN" 2>/dev/null; do :; done
  iptables -F "$META_IPTABLES_CHAIN" 2>/dev/null && iptables -X "$META_IPTABLES_CHAIN" 2>/dev/null
  # kube-proxy removes its own rules; the kubelet's and CNI's chains are removed by name.
  local kube_proxy
  kube_proxy=$(k8s_bin kube-proxy)
  [[ -x $kube_proxy ]] && "$kube_proxy" --cleanup >/dev/null 2>&1
  local cmd table chain
  for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
      for chain in $($cmd -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
        while rule=$($cmd -t "$table" -S 2>/dev/null | grep -m1 -- "-j $chain\b"); do
          # `-S` prints rules with their comments quoted, ready for eval.
          eval "$cmd -t $table ${rule/-A/-D}" 2>/dev/null || break
        done
      done
      for chain in $($cmd -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
        $cmd -t "$table" -F "$chain" 2>/dev/null
      done
      for chain in $($cmd -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
        $cmd -t "$table" -X "$chain" 2>/dev/null
      done
    done
  done
}

restore_sysctls() {
  local file="$META_DIR/sysctl.saved" line
  [[ -f $file ]] || return 0
  while read -r line; do sysctl -qw "$line" 2>/dev/null; done <"$file"
  rm -f "$file"
}

remove_state() {
  # Everything but the logs of the last run.
  local entry
  if [[ -d $META_DIR ]]; then
    for entry in "$META_DIR"/* "$META_DIR"/.[!.]*; do
      [[ -e $entry && $entry != "$META_LOG_DIR" ]] && rm -rf "$entry"
    done
  fi
  rm -rf "$META_RUN_DIR"
}

main() {
  # Worker hosts (hack/worker-up.sh) join tenants served by this cluster and route
  # through its bridge: they go first.
  "$HACK_DIR/worker-down.sh" --all
  # The local S3 store (hack/s3-up.sh) listens on the bridge's address; its data goes with
  # the rest of the cluster's state.
  "$HACK_DIR/s3-down.sh" --purge
  # peer-registry: the loopback registry of the peer benchmark (bench/peer.sh), if a run of
  # it was cut short; everything else that benchmark installs lives in this cluster's state.
  for component in peer-registry kube-proxy kubelet kube-scheduler kube-controller-manager; do stop_component "$component"; done
  kill_containers
  stop_component containerd
  stop_component kube-apiserver
  stop_component etcd
  unmount_state
  remove_pod_cgroups
  remove_network
  restore_sysctls
  remove_state
  log "meta cluster stopped and cleaned up"
}

main "$@"
