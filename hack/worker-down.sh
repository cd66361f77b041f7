#!/usr/bin/env bash
# Removes worker host NAME (hack/worker-up.sh) and everything it created: its processes
# (kubeadm, kubelet, containerd, shims and pods: every process in its cgroup), its mount
# namespace, its cgroups, its iptables chains, its network namespace and veth pair, and
# its state directories. Its logs stay in /var/lib/nestor-meta/logs/worker-NAME.
#
#   hack/worker-down.sh NAME     one worker
#   hack/worker-down.sh --all    every worker on this machine (hack/meta-down.sh runs this)
#
# Safe on a worker that was killed without worker-down, half started, or never existed.
# The Node object stays in the tenant, as a machine that was switched off leaves it.
set -uo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

[[ $(id -u) == 0 ]] || die "worker-down needs root"
[[ $# == 1 ]] || die "usage: hack/worker-down.sh NAME | --all"

# worker_processes SUBTREE: every process in the worker's cgroup SUBTREE, any hierarchy.
worker_processes() {
  local dir
  for dir in /sys/fs/cgroup/*/"$1"; do
    [[ -d $dir ]] && find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

kill_subtree() {
  local pids
  for _ in 1 2 3 4 5; do
    pids=$(worker_processes "$1")
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.3
  done
}

stop_recorded() { # RUN COMPONENT
  local file="$1/pids/$2.pid" pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$file"
}

unmount_under() { # PREFIX...: deepest first, lazily, in this (the host's) mount namespace
  local prefix mount_point
  for prefix in "$@"; do
    awk -v p="$prefix" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r mount_point; do umount -l "$mount_point" 2>/dev/null; done
  done
}

worker_down() {
  local name=$1
  local state="$WORKER_DIR/$name" run="$WORKER_RUN_DIR/$name" cgroup chain netns veth
  cgroup=$(worker_cgroup "$name")
  chain=$(worker_chain "$name")
  netns=$(worker_netns "$name")
  veth=$(worker_host_veth "$name")

  # Processes: kubeadm and the kubelet first (no new pods), the pods, containerd, then
  # whatever is left in the worker's cgroup (shims, a half-started launcher).
  stop_recorded "$run" kubeadm
  stop_recorded "$run" kubelet
  kill_subtree "$cgroup/kubepods"
  stop_recorded "$run" containerd
  kill_subtree "$cgroup"

  # The mount namespace dies with its last process once its pin is gone; mounts under
  # the state directories in the host's namespace would come from an older layout.
  unmount_under "$WORKER_RUN_DIR/ns/$name.mnt" "$state/" "$run/"
  rm -f "$WORKER_RUN_DIR/ns/$name.mnt"

  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -d $hierarchy$cgroup ]] && find "$hierarchy$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null
  done

  # The chain of that name in any table, and every rule jumping to it.
  local table rule
  for table in filter nat mangle raw; do
    while rule=$(iptables -t "$table" -S 2>/dev/null | grep -m1 -E -- "-j $chain( |\$)"); do
      eval "iptables -t $table ${rule/-A/-D}" 2>/dev/null || break
    done
    iptables -t "$table" -F "$chain" 2>/dev/null && iptables -t "$table" -X "$chain" 2>/dev/null
  done
  ip netns del "$netns" 2>/dev/null
  ip link del "$veth" 2>/dev/null  # gone with the namespace already, unless that failed

  rm -rf "$state" "$run"
  log "worker $name stopped and cleaned up"
}

main() {
  local names name
  if [[ $1 == --all ]]; then
    names=$(worker_names)
  else
    names=$1
  fi
  for name in $names; do worker_down "$name"; done
  # The pin directory's own bind mount, once no worker is left.
  if [[ -d $WORKER_RUN_DIR/ns ]] && [[ -z $(ls -A "$WORKER_RUN_DIR/ns") ]]; then
    umount "$WORKER_RUN_DIR/ns" 2>/dev/null
    rmdir "$WORKER_RUN_DIR/ns" 2>/dev/null
  fi
  rmdir "$WORKER_RUN_DIR" "$WORKER_DIR" 2>/dev/null
  [[ -d $WORKER_DIR ]] && [[ -z $(ls "$WORKER_DIR") ]] && rm -f "$WORKER_DIR/.lock" && rmdir "$WORKER_DIR"
  return 0
}

main "$@"
