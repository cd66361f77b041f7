#!/usr/bin/env bash
# Prints the Markdown tables of one `make bench` result (bench/results/<stamp>.json):
# the figures against their goals, then the Time-to-Ready phase timelines, then the
# scale and density benchmarks (each part only when the result has it).
# Usage: bench/report.sh RESULT.json
set -euo pipefail
RESULT=${1:?usage: bench/report.sh RESULT.json}

jq -r '
  def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
  def show(unit): if . == null then "n/a" else "\(.) \(unit)" end;
  def verdict(ok): if ok == null then "" elif ok then "yes" else "**no**" end;
  def ms: if . == null then null else . / 1e6 | r(3) end;
  def spread: if .median == null then "n/a" else "\(.median | r(1)) s (\(.min | r(1))–\(.max | r(1)))" end;
  .pki as $pki | .cluster as $c
  | ($c.footprint.idle // []) as $idle
  | "Machine: \(.machine.nproc) cores, \(.machine.memory_mib) MiB, kernel \(.machine.kernel); commit \(.git_commit); \(.timestamp)",
    "Load average (1/5/15 min): \(.load_average.start) at start, \(.load_average.end) at the end",
    (if $pki == null and $c == null then empty else
    "",
    "| Figure | Measured | Goal | Met |",
    "|---|---|---|---|",
    "| Full PKI + desired state, new tenant, ECDSA P-256 (median) | \($pki.full_pki_ecdsa_ns | ms | show("ms")) | ≤ 5 ms | \(verdict(if $pki.full_pki_ecdsa_ns == null then null else $pki.full_pki_ecdsa_ns <= 5e6 end)) |",
    "| Full PKI + desired state, new tenant, RSA-2048 (median) | \($pki.full_pki_rsa_ns | ms | show("ms")) | — | |",
    "| Steady-state desired state (nothing to issue), ECDSA (median) | \($pki.steady_state_ecdsa_ns | ms | show("ms")) | — | |",
    "| Steady-state desired state (nothing to issue), RSA (median) | \($pki.steady_state_rsa_ns | ms | show("ms")) | — | |",
    (if $c == null then "| Cluster benchmarks | not run | | |" else
    "| One tenant Ready (1 etcd on PVC, 1 apiserver), median (min–max), \($c.time_to_ready.single.ready_runs)/\($c.time_to_ready.single.runs) runs | \($c.time_to_ready.single.phases.total_s | spread) | ≤ 10 s median | \(verdict(if $c.time_to_ready.single.phases.total_s.median == null then false else $c.time_to_ready.single.phases.total_s.median <= 10 end)) |",
    "| HA tenant Ready (3 etcd on PVC, 2 apiservers), median (min–max), \($c.time_to_ready.ha.ready_runs)/\($c.time_to_ready.ha.runs) runs | \($c.time_to_ready.ha.phases.total_s | spread) | — | |",
    "| \($c.burst.tenants) tenants at once (ephemeral etcd): all Ready | \(if $c.burst.all_ready_s == null then "\($c.burst.ready)/\($c.burst.tenants) Ready after \($c.burst.timeout_s) s" else "\($c.burst.all_ready_s | r(1)) s" end) | ≤ 60 s | \(verdict(if $c.burst.all_ready_s == null then false else $c.burst.all_ready_s <= 60 end)) |",
    "| \($c.burst.tenants) at once: per tenant, median / max | \($c.burst.per_tenant_ready_s.median | r(1) | show("s")) / \($c.burst.per_tenant_ready_s.max | r(1) | show("s")) | — | |",
    ($idle[] | "| Operator idle with \(.tenants) Ready tenant(s): RSS (anonymous), CPU | \(.rss_mib) MiB (\(.rss_anon_mib // "—") MiB), \(.cpu_mcpu) mCPU | \(if .tenants == 0 then "≤ 30 MiB" else "—" end) | \(if .tenants == 0 then verdict(.rss_mib <= 30) else "" end) |"),
    "| Operator cost per idle tenant: RSS | \($c.footprint.per_tenant.rss_mib | show("MiB")) | ≤ 1 MiB | \(verdict(if $c.footprint.per_tenant == null then null else $c.footprint.per_tenant.rss_mib <= 1 end)) |",
    "| Operator cost per idle tenant: anonymous RSS (heap, stacks) | \($c.footprint.per_tenant.rss_anon_mib | show("MiB")) | — | |",
    "| Operator cost per idle tenant: CPU | \($c.footprint.per_tenant.cpu_mcpu | show("mCPU")) | ≤ 1 mCPU | \(verdict(if $c.footprint.per_tenant == null then null else $c.footprint.per_tenant.cpu_mcpu <= 1 end)) |",
    "| API writes while \($c.idle_writes.tenants) tenants idle (over \($c.idle_writes.window_s | r(0)) s) | \($c.idle_writes.per_min) writes/min | 0 | \(verdict($c.idle_writes.writes == 0)) |",
    "",
    "Time to Ready, phase by phase (seconds since the TenantCluster'"'"'s creationTimestamp; API timestamps have 1 s resolution; total on the host clock), median (min–max):",
    "",
    "| Scenario | PKI Secrets created | Objects applied | EtcdReady | APIServerReady | ControllerManagerReady | Ready | Total (host clock) |",
    "|---|---|---|---|---|---|---|---|",
    ($c.time_to_ready | to_entries[] | .key as $k | .value as $s
     | "| \($k) (\($s.etcd) etcd, \($s.apiservers) apiserver) | \($s.phases.pki_generated_s | spread) | \($s.phases.objects_applied_s | spread) | \($s.phases.etcd_ready_s | spread) | \($s.phases.apiserver_ready_s | spread) | \($s.phases.controller_manager_ready_s | spread) | \($s.phases.ready_s | spread) | \($s.phases.total_s | spread) |"),
    "",
    "Pods, median seconds since the TenantCluster'"'"'s creationTimestamp (slowest pod of each component): created → scheduled → container started → pod Ready:",
    "",
    "| Scenario | etcd | kube-apiserver | kube-controller-manager |",
    "|---|---|---|---|",
    ($c.time_to_ready | to_entries[] | .key as $k | .value.pod_phases as $p
     | def steps($component): [$p["\($component).created_s"], $p["\($component).scheduled_s"],
                               $p["\($component).started_s"], $p["\($component).ready_s"]]
                              | map(if . == null then "?" else tostring end) | join(" → ");
       "| \($k) | \(steps("etcd")) | \(steps("apiserver")) | \(steps("controller_manager")) |")
    end)
    end)
' "$RESULT"

jq -r '
  def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
  def verdict(ok): if ok == null then "" elif ok then "yes" else "**no**" end;
  def verbs: to_entries | map(select(.value > 0)) | map("\(.key) \(.value)") | join(", ");
  def show(unit): if . == null then "n/a" else "\(.) \(unit)" end;
  def spread: if .median == null then "n/a" else "\(.median | r(1)) s (\(.min | r(1))–\(.max | r(1)))" end;
  .scale as $s | .density as $d | .workers as $w | .tunnel as $t
  | (if $s == null then empty else
    "",
    "Scale: \($s.tenants) TenantClusters, pods simulated by kwok (\($s.storage)); operator flags: \(if $s.operator_flags == "" then "defaults" else $s.operator_flags end).",
    "Applied = \($s.criterion).",
    "",
    "| Figure | Measured | Goal | Met |",
    "|---|---|---|---|",
    "| All \($s.tenants) tenants applied | \(if $s.all_applied_s == null then "\($s.applied)/\($s.tenants) after \($s.timeout_s) s" else "\($s.all_applied_s | r(1)) s" end) | ≤ 300 s | \(verdict(if $s.all_applied_s == null then false else $s.all_applied_s <= 300 end)) |",
    "| Operator peak RSS | \($s.peak_rss_mib) MiB | < 150 MiB | \(verdict($s.peak_rss_mib < 150)) |",
    "| Creation (\($s.create.parallel) × \($s.create.batch) per request): all created | \($s.create.all_created_s // "n/a") s | — | |",
    "| While applying: reconciles/s, operator CPU | \($s.apply_phase.reconciles_per_s) /s, \($s.apply_phase.cpu_mcpu) mCPU | — | |",
    "| While applying: requests to the meta apiserver | \($s.apply_phase.requests_per_s) /s (\($s.apply_phase.requests_per_s_by_verb | verbs)) | — | |",
    "| After the apply phase (\($s.steady.seconds | r(0)) s, \($s.steady.applied_at_end) applied, probes failing): reconciles/s, CPU, RSS | \($s.steady.reconciles_per_s) /s, \($s.steady.cpu_mcpu) mCPU, \($s.steady.rss_mib_end) MiB | — | |",
    "| After the apply phase: requests to the meta apiserver | \($s.steady.requests_per_s) /s (\($s.steady.requests_per_s_by_verb | verbs)); writes \($s.steady.writes_per_s) /s | — | |",
    "| Owned objects: every tenant complete | \(if $s.objects.every_tenant_complete then "yes" else "no" end) (\($s.objects.by_kind | to_entries | map("\(.key) \(.value.max)") | join(", ")) per tenant, on \([$s.objects.by_kind[].tenants] | min) tenants) | — | |",
    "| Pods (kwok): total / Running / on the fake node | \($s.pods.pods) / \($s.pods.running) / \($s.pods.on_fake_node) | — | |",
    "",
    "Applied over time (s since the first create → tenants applied): \([$s.timeline[] | "\(.t | r(0))→\(.applied)"] | join(", "))"
    end),
    (if $d == null then empty else
    "",
    "Density: real tenants (\($d.tenant)) added one at a time, each waited for (≤ \($d.ready_timeout_s) s), cap \($d.cap).",
    "",
    "| Figure | Measured |",
    "|---|---|",
    "| Tenants Ready before one failed | \($d.ready)\(if $d.stopped_by == "cap" then " (cap reached, none failed)" else " (tenant \($d.ready + 1) failed: \($d.failure.not_ready | join("; ")))" end) |",
    "| Time to Ready of each tenant, in order | \([$d.steps[].ready_s | r(1) | tostring] | join(", ")) s |",
    "| One idle tenant'"'"'s pods: memory (working set), median (min–max) | \($d.footprint.memory_mib.median | r(1)) MiB (\($d.footprint.memory_mib.min | r(1))–\($d.footprint.memory_mib.max | r(1))) |",
    "| One idle tenant'"'"'s pods: memory against the goal (≤ 260 MiB) | \(if $d.footprint.memory_mib.median == null then "n/a" elif $d.footprint.memory_mib.median <= 260 then "met" else "**missed**" end) |",
    "| Its kube-scheduler pod, median memory / CPU | \($d.footprint.by_component["kube-scheduler"].memory_mib | r(1) | show("MiB")) / \($d.footprint.by_component["kube-scheduler"].cpu_mcpu | r(1) | show("mCPU")) |",
    "| One idle tenant'"'"'s pods: CPU, median (min–max) | \($d.footprint.cpu_mcpu.median | r(1)) mCPU (\($d.footprint.cpu_mcpu.min | r(1))–\($d.footprint.cpu_mcpu.max | r(1))) |",
    "| By component, median memory / CPU | \($d.footprint.by_component | to_entries | map("\(.key) \(.value.memory_mib | r(1)) MiB / \(.value.cpu_mcpu | r(1)) mCPU") | join("; ")) |",
    "| Node before / after (idle, \($d.ready) tenants): memory working set, CPU | \($d.node_before.node_memory_working_set_mib) → \($d.node_idle_after.node_memory_working_set_mib) MiB, \($d.node_before.node_cpu_mcpu) → \($d.node_idle_after.node_cpu_mcpu) mCPU |"
    end),
    (if $w == null then empty else
    "",
    "Workloads: \($w.ok_runs)/\($w.runs) runs of a joinable tenant (\($w.tenant)), a fresh worker host joined to it (images: \($w.worker_images)), a busybox pod placed by the tenant'"'"'s scheduler; median (min–max), host clock.",
    "",
    "| Figure | Measured | Goal | Met |",
    "|---|---|---|---|",
    "| TenantCluster created → first pod Running on the new worker | \($w.first_pod_running_s | spread) | ≤ 30 s | \(verdict(if $w.first_pod_running_s.median == null then false else $w.first_pod_running_s.median <= 30 end)) |",
    "| `kubeadm join` started → Node Ready (worker-up'"'"'s log, 1 s resolution) | \($w.join_s | spread) | ≤ 10 s | \(verdict(if $w.join_s.median == null then false else $w.join_s.median <= 10 end)) |",
    "| worker-up in all (network, containerd, image import, join, Node Ready) | \($w.worker_up_s | spread) | — | |",
    "| of the first: TenantCluster created → Ready | \($w.tenant_ready_s | spread) | — | |",
    "| of the first: `nestor join` (bootstrap token, join line) | \($w.nestor_join_s | spread) | — | |",
    "| of the first: worker-up done → pod Running (ServiceAccount, scheduling, sandbox, start) | \($w.pod_running_after_worker_s | spread) | — | |",
    "| The tenant'"'"'s pods \($w.idle_footprint.window_s) s later (one node, one pod): memory, median (min–max) | \($w.idle_footprint.memory_mib.median | r(1) | show("MiB")) (\($w.idle_footprint.memory_mib.min | r(1))–\($w.idle_footprint.memory_mib.max | r(1))) | ≤ 260 MiB | \(verdict(if $w.idle_footprint.memory_mib.median == null then null else $w.idle_footprint.memory_mib.median <= 260 end)) |",
    "| Its kube-scheduler pod, median memory / CPU | \($w.idle_footprint.by_component["kube-scheduler"].memory_mib | r(1) | show("MiB")) / \($w.idle_footprint.by_component["kube-scheduler"].cpu_mcpu | r(1) | show("mCPU")) | — | |",
    "| The same: CPU, median | \($w.idle_footprint.cpu_mcpu.median | r(1) | show("mCPU")) | — | |",
    "| By component, median memory / CPU | \($w.idle_footprint.by_component | to_entries | map("\(.key) \(.value.memory_mib | r(1)) MiB / \(.value.cpu_mcpu | r(1)) mCPU") | join("; ")) |  | |",
    (if ([$w.samples[] | select(.error != null)] | length) > 0 then
      "", "Failed runs: \([$w.samples[] | select(.error != null) | "run \(.run): \(.error)"] | join("; "))" else empty end)
    end),
    (if $t == null then empty else
    "",
    "Tunnel: \($t.tenant); \($t.execs_per_routing) `kubectl exec -- true` one after another per routing, through the tenant endpoint.",
    "",
    "| Figure | Measured | Goal | Met |",
    "|---|---|---|---|",
    "| `kubectl exec -- true` through the tunnel, median (p90, min–max) | \($t.exec_s.tunnel.median // "n/a") s (\($t.exec_s.tunnel.p90 // "n/a"), \($t.exec_s.tunnel.min // "n/a")–\($t.exec_s.tunnel.max // "n/a")) | — | |",
    "| `kubectl exec -- true` direct, median (p90, min–max) | \($t.exec_s.direct.median // "n/a") s (\($t.exec_s.direct.p90 // "n/a"), \($t.exec_s.direct.min // "n/a")–\($t.exec_s.direct.max // "n/a")) | — | |",
    "| Tunnel / direct, medians | \($t.exec_ratio // "n/a") × | ≤ 1.5 × | \(verdict(if $t.exec_ratio == null then null else $t.exec_ratio <= 1.5 end)) |",
    "| Memory added per tenant: konnectivity-server beside the apiserver | \($t.memory.server_sidecar_mib | show("MiB")) (the apiserver itself \($t.memory.apiserver_mib | show("MiB"))) | — | |",
    "| Memory added per node: the konnectivity-agent pod | \($t.memory.agent_mib | show("MiB")) | — | |",
    (if ($t.errors | length) > 0 then "", "Failed: \([$t.errors[] | "\(.routing): \(.error)"] | join("; "))" else empty end)
    end)
' "$RESULT"

jq -r '
  def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
  .etcd_space as $e
  | if $e == null then empty else
    "",
    "etcd space: \($e.method); \($e.tenant).",
    "",
    "| etcd members | Defragmentation per member (s) | All members (s) | Order | Freed per member (MiB) | Writes failed during / in all | Reads failed during / in all | Slowest write / read during (ms) |",
    "|---|---|---|---|---|---|---|---|",
    ($e.scenarios[] |
      "| \(.etcd_members)\(if .error then " (\(.error))" else "" end) | \(.defragmentations | map(.took_s | r(2) | tostring) | join(", ")) | \(.all_members_s // "n/a") | \(.order | join(" → ")) | \(.defragmentations | map(.before_mib - .after_mib | r(1) | tostring) | join(", ")) | \(.writes.during_defrag.failures)/\(.writes.during_defrag.requests) / \(.writes.failures)/\(.writes.requests) | \(.reads.during_defrag.failures)/\(.reads.during_defrag.requests) / \(.reads.failures)/\(.reads.requests) | \(.writes.during_defrag.slowest_ms // "n/a") / \(.reads.during_defrag.slowest_ms // "n/a") |")
    end
' "$RESULT"

jq -r '
  def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
  def show($unit): if . == null then "n/a" else "\(.) \($unit)" end;
  .backup as $b
  | if $b == null then empty else
    "",
    "Backup and restore: \($b.method); \($b.tenant).",
    "",
    "| Destination | Data written / snapshot | Backup in the agent (snapshot + upload), median | Throughput, agent / `nestor backup` in all | `nestor backup` in all, median | Restore → Ready, median (runs) | of which the restore init container, median | Objects read back |",
    "|---|---|---|---|---|---|---|---|",
    ($b.scenarios[] |
      "| \(.destination)\(if .error then " (**\(.error)**)" else "" end) | \(.fill.mib) MiB / \(.snapshot_mib | show("MiB")) | \(.backup_agent_s.median | show("s")) | \(.backup_mib_per_s.agent | show("MiB/s")) / \(.backup_mib_per_s.wall | show("MiB/s")) | \(.backup_wall_s.median | show("s")) | \(.restore_ready_s.median | show("s")) (\(.restores | map(.ready_s | r(1) | tostring) | join(", "))) | \(.restore_init_s.median | show("s")) | \(.restores | map(.fill_configmaps_read_back | tostring) | join(", ")) of \(.fill.configmaps_512kib) |")
    end
' "$RESULT"

# The peer part (bench/peer.sh): Nestor and Kamaji side by side, ratios Nestor / Kamaji.
jq -r '
  .peer as $p
  | if $p == null then empty
    elif $p.failed then "", "Peer (Kamaji): **failed** at \($p.stage): \($p.reason)"
    else
    def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
    def s: if . == null or .median == null then "n/a" else "\(.median | r(1)) s (\(.min | r(1))–\(.max | r(1)), \(.n) runs)" end;
    def v(unit): if . == null then "n/a" else "\(. | r(1)) \(unit)" end;
    def goal($ratio; $max): if $ratio == null then "" elif $ratio <= $max then "≤ \($max): yes" else "≤ \($max): **no**" end;
    $p.versions as $v
    | "",
      "Side by side with Kamaji \($v.kamaji), both at Kubernetes \($v.kubernetes), etcd \($v.etcd); Ready = \($p.readiness).",
      "",
      "| Figure | Nestor | Kamaji | Nestor / Kamaji | Goal |",
      "|---|---|---|---|---|",
      "| One tenant Ready, median (min–max) | \($p.time_to_ready_s.nestor | s) | \($p.time_to_ready_s.kamaji | s) | \($p.time_to_ready_s.ratio_median) | \(goal($p.time_to_ready_s.ratio_median; 0.7)) |",
      "| Apiserver Deployment deleted → /readyz again, median (min–max) | \($p.healing_s.nestor | s) | \($p.healing_s.kamaji | s) | \($p.healing_s.ratio_median) | \(goal($p.healing_s.ratio_median; 0.5)) |",
      "| \($p.burst.nestor.tenants) at once: all Ready | \($p.burst.nestor.all_ready_s | v("s")) (\($p.burst.nestor.ready)/\($p.burst.nestor.tenants)) | \($p.burst.kamaji.all_ready_s | v("s")) (\($p.burst.kamaji.ready)/\($p.burst.kamaji.tenants)) | \($p.burst.ratio_all_ready) | |",
      "| Operator idle, no tenant: RSS / CPU | \($p.operator.idle_0.nestor.rss_mib | v("MiB")) / \($p.operator.idle_0.nestor.cpu_mcpu | v("mCPU")) | \($p.operator.idle_0.kamaji.rss_mib | v("MiB")) / \($p.operator.idle_0.kamaji.cpu_mcpu | v("mCPU")) | \($p.operator.idle_ratio.rss) / \($p.operator.idle_ratio.cpu) | |",
      "| Operator per idle tenant: RSS (anonymous part) / CPU | \($p.operator.per_tenant.nestor.rss_mib | v("MiB")) (\($p.operator.per_tenant.nestor.rss_anon_mib | v("MiB"))) / \($p.operator.per_tenant.nestor.cpu_mcpu | v("mCPU")) | \($p.operator.per_tenant.kamaji.rss_mib | v("MiB")) (\($p.operator.per_tenant.kamaji.rss_anon_mib | v("MiB"))) / \($p.operator.per_tenant.kamaji.cpu_mcpu | v("mCPU")) | \($p.operator.per_tenant.ratio_rss) (\($p.operator.per_tenant.ratio_rss_anon)) / \($p.operator.per_tenant.ratio_cpu) | \(goal($p.operator.per_tenant.ratio_rss; 0.25)) |",
      "| One idle tenant'"'"'s pods: memory / CPU, median | \($p.tenant_pods.nestor.own_pods.memory_mib | v("MiB")) / \($p.tenant_pods.nestor.own_pods.cpu_mcpu | v("mCPU")) | \($p.tenant_pods.kamaji.own_pods.memory_mib | v("MiB")) / \($p.tenant_pods.kamaji.own_pods.cpu_mcpu | v("mCPU")) | | |",
      "| + share of Kamaji'"'"'s shared etcd (\($p.tenant_pods.kamaji.datastore.members) members, \($p.tenant_pods.kamaji.datastore.memory_mib | v("MiB")) / \($p.tenant_pods.kamaji.datastore.cpu_mcpu | v("mCPU")), over \($p.tenant_pods.kamaji.tenants) tenants) | — | \($p.tenant_pods.kamaji.datastore_share.memory_mib | v("MiB")) / \($p.tenant_pods.kamaji.datastore_share.cpu_mcpu | v("mCPU")) | | |",
      "| Per tenant, all counted | \($p.tenant_pods.nestor.with_datastore_share.memory_mib | v("MiB")) / \($p.tenant_pods.nestor.with_datastore_share.cpu_mcpu | v("mCPU")) | \($p.tenant_pods.kamaji.with_datastore_share.memory_mib | v("MiB")) / \($p.tenant_pods.kamaji.with_datastore_share.cpu_mcpu | v("mCPU")) | \($p.tenant_pods.ratio_memory) / \($p.tenant_pods.ratio_cpu) | |",
      "| Density (idle tenants until one is not Ready) | \(if $p.density.nestor == null then "not run" else "\($p.density.nestor.ready) (\($p.density.nestor.stopped_by))" end) | \(if $p.density.kamaji == null then "not run" else "\($p.density.kamaji.ready) (\($p.density.kamaji.stopped_by))" end) | | |",
      "| 1000 tenants applied, pods simulated by kwok | see bench/scale.sh | not run | | |"
    end
' "$RESULT"
