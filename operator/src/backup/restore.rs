//! `nestor etcd-restore`: the init container of each etcd member of a tenant created
//! with `spec.restore`. Before the member first starts, and only then, it downloads
//! the snapshot, checks it against its metadata and etcd's own trailer, and runs
//! `etcdutl snapshot restore` with the member's own name, the initial cluster and the
//! new tenant's cluster token into a directory beside the data directory, which it then
//! renames into place. A member with data, or one of a cluster that already formed (a
//! member re-added later starts empty and joins), is left alone: existing member data is
//! never touched. A snapshot that fails a check is refused before etcd ever starts on it:
//! the init container fails with the reason as its termination message, which the
//! operator shows in the `Restored` condition.

use std::path::PathBuf;

use clap::Args;

use super::agent::StoreArgs;
use super::report::TERMINATION_LOG;
use super::snapshot;
use super::store;

/// Where the operator image keeps etcdutl (hack/build-operator-image.sh).
pub const ETCDUTL_PATH: &str = "/usr/local/bin/etcdutl";

/// `nestor etcd-restore` (hidden: the etcd StatefulSet's init container runs it).
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot's key.
    #[arg(long)]
    pub key: String,
    /// The member's data directory (etcd's --data-dir).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This member's name (etcd's --name).
    #[arg(long, env = "POD_NAME")]
    pub name: String,
    /// The peer URL this member advertises.
    #[arg(long)]
    pub initial_advertise_peer_url: String,
    /// Every member, `name=peerURL,...` (from the etcd ConfigMap).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: String,
    /// `new` until the cluster formed, then `existing` (from the etcd ConfigMap).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// The new cluster's token (the TenantCluster's uid, as etcd's flag).
    #[arg(long)]
    pub initial_cluster_token: String,
    /// etcdutl.
    #[arg(long, default_value = ETCDUTL_PATH)]
    pub etcdutl: PathBuf,
    /// Where the failure reason goes.
    #[arg(long, default_value = TERMINATION_LOG)]
    pub report_file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What the init container decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restore the snapshot.
    Restore,
    /// Leave the member as it is, for this reason.
    Skip(&'static str),
}

/// Whether to restore (pure): only a member without data of a cluster not yet formed.
pub fn decide(initial_cluster_state: &str, data_dir_has_entries: bool) -> Decision {
    if initial_cluster_state == "existing" {
        Decision::Skip("the cluster formed already: a member without data joins it")
    } else if data_dir_has_entries {
        Decision::Skip("the member has data: it is never overwritten")
    } else {
        Decision::Restore
    }
}

/// Checks a downloaded snapshot against its metadata (pure).
pub fn check_against_metadata(
    key: &str,
    metadata: &store::SnapshotMetadata,
    verified: &snapshot::Verified,
) -> Result<(), String> {
    if metadata.key != key {
        return Err(format!("snapshot {key}: its metadata names snapshot {}: refused", metadata.key));
    }
    if metadata.sha256 != verified.sha256 || metadata.size != verified.size as i64 {
        return Err(format!(
            "snapshot {key} does not match its metadata (sha256 {} of {} bytes, metadata says {} of {} bytes, \
             from etcd cluster {} of {}/{}): corrupt, or from another cluster; refused",
            verified.sha256,
            verified.size,
            metadata.sha256,
            metadata.size,
            metadata.etcd_cluster_id,
            metadata.namespace,
            metadata.tenant
        ));
    }
    Ok(())
}

/// Runs the restore; on failure writes the reason as the termination message.
pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    match restore(&args).await {
        Ok(done) => {
            println!("{done}");
            Ok(())
        }
        Err(error) => {
            let _ = std::fs::write(&args.report_file, &error);
            anyhow::bail!("{error}")
        }
    }
}

async fn restore(args: &RestoreArgs) -> Result<String, String> {
    let has_entries =
        std::fs::read_dir(&args.data_dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if let Decision::Skip(why) = decide(&args.initial_cluster_state, has_entries) {
        return Ok(format!("{}: not restoring: {why}", args.name));
    }
    let parent = args.data_dir.parent().ok_or("the data directory has no parent")?;
    // Our own scratch directory beside the data directory: what a failed attempt left.
    let work = parent.join("restore");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|error| format!("{}: {error}", work.display()))?;
    }
    std::fs::create_dir_all(&work).map_err(|error| format!("{}: {error}", work.display()))?;

    let started = std::time::Instant::now();
    let config = args.store.config()?;
    let object_store = store::open(&config)?;
    let metadata = store::read_metadata(object_store.as_ref(), &args.key).await?;
    let file = work.join("snapshot.db");
    store::download(object_store.as_ref(), &store::snapshot_path(&args.key), &file).await?;
    let verified = snapshot::verify_file(&file)
        .await
        .map_err(|error| format!("snapshot {}: {error}; refused", args.key))?;
    check_against_metadata(&args.key, &metadata, &verified)?;
    let downloaded = started.elapsed().as_secs_f64();

    let restored = work.join("data");
    let output = tokio::process::Command::new(&args.etcdutl)
        .arg("snapshot")
        .arg("restore")
        .arg(&file)
        .arg(format!("--name={}", args.name))
        .arg(format!("--initial-cluster={}", args.initial_cluster))
        .arg(format!("--initial-cluster-token={}", args.initial_cluster_token))
        .arg(format!("--initial-advertise-peer-urls={}", args.initial_advertise_peer_url))
        .arg(format!("--data-dir={}", restored.display()))
        // The member's bootstrap variables are ours (given above as flags): etcd's tools
        // refuse a setting given both as a flag and as an ETCD_* variable.
        .env_remove("ETCD_INITIAL_CLUSTER")
        .env_remove("ETCD_INITIAL_CLUSTER_STATE")
        .output()
        .await
        .map_err(|error| format!("run {}: {error}", args.etcdutl.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        return Err(format!("etcdutl snapshot restore {}: {}: {last}", args.key, output.status));
    }
    // An empty data directory (the volume's first start) is replaced; one with entries
    // never reaches here.
    if args.data_dir.exists() {
        std::fs::remove_dir(&args.data_dir)
            .map_err(|error| format!("{}: {error}", args.data_dir.display()))?;
    }
    std::fs::rename(&restored, &args.data_dir)
        .map_err(|error| format!("move the restored data into place: {error}"))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(format!(
        "{}: restored snapshot {} (revision {}, {} bytes, etcd cluster {} of {}/{}): downloaded and checked in {downloaded:.1}s, restored in {:.1}s",
        args.name,
        args.key,
        metadata.revision,
        metadata.size,
        metadata.etcd_cluster_id,
        metadata.namespace,
        metadata.tenant,
        started.elapsed().as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_member_of_an_unformed_cluster_restores() {
        assert_eq!(decide("new", false), Decision::Restore);
        assert!(matches!(decide("new", true), Decision::Skip(_)));
        assert!(matches!(decide("existing", false), Decision::Skip(_)));
    }

    #[test]
    fn a_snapshot_that_does_not_match_its_metadata_is_refused() {
        let metadata = store::SnapshotMetadata {
            key: "t-1".into(),
            tenant: "t".into(),
            namespace: "ns".into(),
            etcd_cluster_id: "abc".into(),
            member: "t-etcd-0".into(),
            revision: 5,
            size: 100,
            sha256: "aa".into(),
            kubernetes_version: "1.34.2".into(),
            etcd_version: "3.6.5".into(),
            time: "2026-12-04T16:00:00Z".into(),
        };
        let good = snapshot::Verified { size: 100, sha256: "aa".into() };
        assert_eq!(check_against_metadata("t-1", &metadata, &good), Ok(()));
        let other = snapshot::Verified { size: 100, sha256: "bb".into() };
        let error = check_against_metadata("t-1", &metadata, &other).expect_err("refused");
        assert!(error.contains("another cluster"), "{error}");
        assert!(check_against_metadata("t-2", &metadata, &good).is_err(), "metadata of another key");
    }
}
