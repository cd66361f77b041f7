//! `nestor upgrade`: changes `spec.version` of a TenantCluster.
//!
//! A JSON merge patch of that one field, not a server-side apply: applying a partial
//! object under `nestor-cli` would release every other field `nestor create` set and
//! reset them to their defaults. The CRD's admission rules refuse downgrades and
//! skipped minor versions; that refusal is printed as one line.

use std::time::Duration;

use clap::Args;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::cli::cluster::ClusterArgs;
use crate::cli::create::CLI_FIELD_MANAGER;
use crate::cli::view::resource_ref;
use crate::cli::wait::{DEFAULT_TIMEOUT, Goal, wait_for};

/// Arguments of `nestor upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster.
    pub name: String,

    /// Target Kubernetes version, MAJOR.MINOR.PATCH (one minor version at a time).
    /// The apiserver rolls first, the controller-manager and the scheduler once every
    /// apiserver replica runs the new version; `status.version` moves when all three finished.
    #[arg(long = "to", visible_alias = "version", value_name = "VERSION")]
    pub to: String,

    /// Wait until the control plane is Ready at the new version.
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits (Go duration).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = crate::duration::parse_duration, requires = "wait")]
    pub timeout: Duration,
}

/// Runs `nestor upgrade`.
pub async fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let current = session.get_tenant(&args.name).await?;
    let target = args.to.trim_start_matches('v').to_string();
    if current.spec.version == target {
        println!("{} unchanged (version {target})", resource_ref(&args.name));
    } else {
        let params = PatchParams { field_manager: Some(CLI_FIELD_MANAGER.into()), ..PatchParams::default() };
        let patch = json!({ "spec": { "version": target } });
        session
            .tenants()
            .patch(&args.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|error| session.error(&args.name, error))?;
        println!("{} upgraded ({} -> {target})", resource_ref(&args.name), current.spec.version);
    }
    if args.wait {
        wait_for(&session, &args.name, &Goal::ReadyAt(target), args.timeout).await?;
    }
    Ok(())
}
