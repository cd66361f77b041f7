//! `nestor delete`: deletes a TenantCluster and, unless `--no-wait`, waits until the
//! operator's finalizer has cleaned up and the object is gone.

use std::time::Duration;

use clap::Args;
use kube::api::DeleteParams;

use crate::cli::cluster::ClusterArgs;
use crate::cli::view::resource_ref;
use crate::cli::wait::{DEFAULT_TIMEOUT, Goal, wait_for};

/// Arguments of `nestor delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster.
    pub name: String,

    /// Wait until the object is gone (the default).
    #[arg(long = "wait", overrides_with = "no_wait")]
    wait_flag: bool,

    /// Return as soon as the deletion is accepted.
    #[arg(long = "no-wait", overrides_with = "wait_flag")]
    no_wait: bool,

    /// How long to wait for the object to go (Go duration).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

impl DeleteArgs {
    /// Whether to wait for the object to disappear (the last of the two flags wins).
    pub fn wait(&self) -> bool {
        !self.no_wait
    }
}

/// Runs `nestor delete`.
pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    session
        .tenants()
        .delete(&args.name, &DeleteParams::default())
        .await
        .map_err(|error| session.error(&args.name, error))?;
    if args.wait() {
        wait_for(&session, &args.name, &Goal::Deleted, args.timeout).await?;
    }
    println!("{} deleted", resource_ref(&args.name));
    Ok(())
}
