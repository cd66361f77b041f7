#!/usr/bin/env bash
# Prints the Markdown tables of one `make bench` result (bench/results/<stamp>.json):
# the figures against their goals, then the Time-to-Ready phase timelines.
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
    ($idle[] | "| Operator idle with \(.tenants) Ready tenant(s): RSS, CPU | \(.rss_mib) MiB, \(.cpu_mcpu) mCPU | \(if .tenants == 0 then "≤ 30 MiB" else "—" end) | \(if .tenants == 0 then verdict(.rss_mib <= 30) else "" end) |"),
    "| Operator cost per idle tenant: RSS | \($c.footprint.per_tenant.rss_mib | show("MiB")) | ≤ 1 MiB | \(verdict(if $c.footprint.per_tenant == null then null else $c.footprint.per_tenant.rss_mib <= 1 end)) |",
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
' "$RESULT"
