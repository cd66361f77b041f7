//! Where snapshots are kept, through the `object_store` crate: a directory (the backup
//! volume claim, mounted into the agent's pod) or an S3-compatible bucket. The layout,
//! the metadata beside each snapshot and the retention rule are here, pure where they
//! can be.
//!
//! Layout: a snapshot's key is `<prefix>/<tenant>-<UTC time>` (the prefix is
//! `<namespace>/<tenant>` unless the S3 destination names one), so a key names the
//! snapshot alone, whatever tenant restores it, and keys under one prefix sort by age.
//! The objects are `<key>.db` (the snapshot, etcd's sha256 trailer included) and
//! `<key>.json` ([`SnapshotMetadata`]).

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::api::BackupDestination;
use crate::names::TenantNames;

/// Where the backup volume is mounted in the agent's and the restore's containers.
pub const VOLUME_MOUNT_PATH: &str = "/backup";
/// Environment variables the agent and the restore read an S3 destination's secret from.
pub const ACCESS_KEY_ENV: &str = "NESTOR_S3_ACCESS_KEY_ID";
/// See [`ACCESS_KEY_ENV`].
pub const SECRET_KEY_ENV: &str = "NESTOR_S3_SECRET_ACCESS_KEY";
/// Keys of the credentials Secret an S3 destination names.
pub const ACCESS_KEY_SECRET_KEY: &str = "accessKeyID";
/// See [`ACCESS_KEY_SECRET_KEY`].
pub const SECRET_KEY_SECRET_KEY: &str = "secretAccessKey";
/// Region signed with when the destination names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// What is stored beside each snapshot, as JSON.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMetadata {
    /// The snapshot's key.
    pub key: String,
    /// The TenantCluster it was taken of.
    pub tenant: String,
    /// Its namespace.
    pub namespace: String,
    /// etcd's cluster ID, hex.
    pub etcd_cluster_id: String,
    /// The member it was streamed from.
    pub member: String,
    /// etcd's revision when it was taken (the member's, just before).
    pub revision: i64,
    /// Bytes, etcd's sha256 trailer included.
    pub size: i64,
    /// sha256 of the whole `.db` object, lowercase hex.
    pub sha256: String,
    /// The tenant's `spec.version`.
    pub kubernetes_version: String,
    /// etcd's version (`3.6.5`).
    pub etcd_version: String,
    /// When it was taken, RFC 3339.
    pub time: String,
}

/// A destination with its secret: what [`open`] needs.
#[derive(Clone)]
pub enum StoreConfig {
    /// A directory (the mounted volume claim).
    Directory(std::path::PathBuf),
    /// An S3-compatible bucket.
    S3 { endpoint: String, bucket: String, region: String, access_key: String, secret_key: String },
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Directory(path) => write!(formatter, "Directory({})", path.display()),
            StoreConfig::S3 { endpoint, bucket, .. } => write!(formatter, "S3({endpoint}/{bucket})"),
        }
    }
}

/// Opens a store. An S3 request gives up after about 20 s (two retries), so an
/// unreachable bucket fails the backup Job rather than hanging it; the Job's own
/// backoff retries it.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, String> {
    match config {
        StoreConfig::Directory(path) => {
            std::fs::create_dir_all(path).map_err(|error| format!("{}: {error}", path.display()))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|error| error.to_string())?
                .with_automatic_cleanup(true);
            Ok(Arc::new(store))
        }
        StoreConfig::S3 { endpoint, bucket, region, access_key, secret_key } => {
            let retry = object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(20),
                ..Default::default()
            };
            let options = object_store::ClientOptions::new()
                .with_allow_http(true)
                // A plain-HTTP endpoint needs no trust store, and the agent's image may
                // have none: without this the client cannot even be built ("builder error").
                .with_no_system_certificates(endpoint.starts_with("http://"))
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(120));
            let store = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_bucket_name(bucket)
                .with_region(region)
                .with_access_key_id(access_key)
                .with_secret_access_key(secret_key)
                .with_virtual_hosted_style_request(false)
                .with_retry(retry)
                .with_client_options(options)
                .build()
                .map_err(|error| error.to_string())?;
            Ok(Arc::new(store))
        }
    }
}

/// `error` with its chain of causes, `: `-separated: the store's own message ("error
/// sending request") says what failed, only its causes say why ("Connection refused").
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The key prefix of a tenant's snapshots in `destination`.
pub fn prefix(destination: &BackupDestination, names: &TenantNames) -> String {
    destination
        .s3
        .as_ref()
        .and_then(|s3| s3.prefix.as_deref())
        .map(|prefix| prefix.trim_matches('/').to_string())
        .filter(|prefix| !prefix.is_empty())
        .unwrap_or_else(|| format!("{}/{}", names.namespace, names.tenant))
}

/// A new snapshot's key: `<prefix>/<tenant>-<YYYYMMDDTHHMMSSZ>`, sorting by time.
pub fn new_key(prefix: &str, tenant: &str, at: jiff::Timestamp) -> String {
    format!("{prefix}/{tenant}-{}", at.strftime("%Y%m%dT%H%M%SZ"))
}

/// Whether `key` is one of [`new_key`]'s for `tenant` under `prefix` (pure): the exact
/// prefix, the tenant's name, then a time and nothing more, so that neither `team` nor
/// `team-b`'s snapshots pass for each other's.
pub fn is_key_of(key: &str, prefix: &str, tenant: &str) -> bool {
    let Some(time) = key
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix(tenant))
        .and_then(|rest| rest.strip_prefix('-'))
    else {
        return false;
    };
    let bytes = time.as_bytes();
    bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes.iter().enumerate().all(|(index, byte)| matches!(index, 8 | 15) || byte.is_ascii_digit())
}

/// The snapshots of `snapshots` that are `tenant`'s under `prefix` (see [`is_key_of`]).
pub fn series_of(snapshots: Vec<StoredSnapshot>, prefix: &str, tenant: &str) -> Vec<StoredSnapshot> {
    snapshots.into_iter().filter(|snapshot| is_key_of(&snapshot.key, prefix, tenant)).collect()
}

/// The object holding snapshot `key`.
pub fn snapshot_path(key: &str) -> StorePath {
    StorePath::from(format!("{key}.db"))
}

/// The object holding `key`'s metadata.
pub fn metadata_path(key: &str) -> StorePath {
    StorePath::from(format!("{key}.json"))
}

/// One stored snapshot as a listing finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Its key.
    pub key: String,
    /// Size of its `.db` object.
    pub size: u64,
    /// Whether its metadata object exists (a snapshot without one is incomplete).
    pub has_metadata: bool,
}

/// Every snapshot under `prefix`, oldest first.
pub async fn list(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<StoredSnapshot>, String> {
    let objects: Vec<object_store::ObjectMeta> = store
        .list(Some(&StorePath::from(prefix)))
        .try_collect()
        .await
        .map_err(|error| with_causes(&error))?;
    Ok(group(objects.iter().map(|object| (object.location.as_ref(), object.size))))
}

/// Groups `(object path, size)` pairs into snapshots (pure): `<key>.db` with its
/// `<key>.json`, oldest key first. Metadata without a snapshot is left out.
pub fn group<'a>(files: impl Iterator<Item = (&'a str, u64)>) -> Vec<StoredSnapshot> {
    let mut snapshots = std::collections::BTreeMap::<String, StoredSnapshot>::new();
    let mut metadata = std::collections::BTreeSet::new();
    for (name, size) in files {
        if let Some(key) = name.strip_suffix(".db") {
            snapshots
                .insert(key.to_string(), StoredSnapshot { key: key.to_string(), size, has_metadata: false });
        } else if let Some(key) = name.strip_suffix(".json") {
            metadata.insert(key.to_string());
        }
    }
    snapshots
        .into_values()
        .map(|mut snapshot| {
            snapshot.has_metadata = metadata.contains(&snapshot.key);
            snapshot
        })
        .collect()
}

/// The keys to delete so that the newest `retain` complete snapshots stay (pure).
/// Incomplete ones (no metadata: an agent that died mid-upload) older than the newest
/// complete one go too; `keep` (the one just written) never does.
pub fn beyond_retention(snapshots: &[StoredSnapshot], retain: usize, keep: &str) -> Vec<String> {
    let complete: Vec<&StoredSnapshot> = snapshots.iter().filter(|snapshot| snapshot.has_metadata).collect();
    let kept: std::collections::BTreeSet<&str> =
        complete.iter().rev().take(retain.max(1)).map(|snapshot| snapshot.key.as_str()).collect();
    let newest_complete = complete.last().map(|snapshot| snapshot.key.as_str());
    snapshots
        .iter()
        .filter(|snapshot| snapshot.key != keep && !kept.contains(snapshot.key.as_str()))
        .filter(|snapshot| {
            snapshot.has_metadata || newest_complete.is_some_and(|newest| snapshot.key.as_str() < newest)
        })
        .map(|snapshot| snapshot.key.clone())
        .collect()
}

/// Deletes snapshot `key` and its metadata.
pub async fn delete(store: &dyn ObjectStore, key: &str) -> Result<(), String> {
    for path in [snapshot_path(key), metadata_path(key)] {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(format!("delete {path}: {}", with_causes(&error))),
        }
    }
    Ok(())
}

/// Reads `key`'s metadata.
pub async fn read_metadata(store: &dyn ObjectStore, key: &str) -> Result<SnapshotMetadata, String> {
    let path = metadata_path(key);
    let bytes = store
        .get(&path)
        .await
        .map_err(|error| format!("snapshot {key}: metadata {path}: {}", with_causes(&error)))?
        .bytes()
        .await
        .map_err(|error| format!("snapshot {key}: metadata {path}: {error}"))?;
    serde_json::from_slice(&bytes).map_err(|error| format!("snapshot {key}: metadata {path}: {error}"))
}

/// Copies local file `from` into object `to`, in parts (multipart on S3).
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    from: &std::path::Path,
    to: &StorePath,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut file =
        tokio::fs::File::open(from).await.map_err(|error| format!("open {}: {error}", from.display()))?;
    let mut writer = object_store::buffered::BufWriter::new(store, to.clone());
    tokio::io::copy(&mut file, &mut writer)
        .await
        .map_err(|error| format!("upload {to}: {}", with_causes(&error)))?;
    writer.shutdown().await.map_err(|error| format!("upload {to}: {}", with_causes(&error)))?;
    Ok(())
}

/// Copies object `from` into local file `to`.
pub async fn download(
    store: &dyn ObjectStore,
    from: &StorePath,
    to: &std::path::Path,
) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let mut stream = store
        .get(from)
        .await
        .map_err(|error| format!("download {from}: {}", with_causes(&error)))?
        .into_stream();
    let mut file =
        tokio::fs::File::create(to).await.map_err(|error| format!("create {}: {error}", to.display()))?;
    let mut total = 0u64;
    while let Some(bytes) =
        stream.try_next().await.map_err(|error| format!("download {from}: {}", with_causes(&error)))?
    {
        total += bytes.len() as u64;
        file.write_all(&bytes).await.map_err(|error| format!("write {}: {error}", to.display()))?;
    }
    file.sync_all().await.map_err(|error| format!("write {}: {error}", to.display()))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::S3Destination;

    fn snapshot(key: &str, has_metadata: bool) -> StoredSnapshot {
        StoredSnapshot { key: key.into(), size: 1, has_metadata }
    }

    #[test]
    fn keys_sort_by_time_and_files_group_by_key() {
        let at = |second| jiff::Timestamp::from_second(second).expect("valid");
        assert_eq!(
            new_key("tenants/team-a", "team-a", at(1_750_000_000)),
            "tenants/team-a/team-a-20250615T150640Z"
        );
        assert!(new_key("p", "t", at(1_750_000_000)) < new_key("p", "t", at(1_750_000_001)));
        let grouped = group(
            [("t-2.db", 10), ("t-1.json", 1), ("t-1.db", 20), ("t-3.json", 1), ("other.txt", 1)].into_iter(),
        );
        assert_eq!(
            grouped,
            [
                StoredSnapshot { key: "t-1".into(), size: 20, has_metadata: true },
                StoredSnapshot { key: "t-2".into(), size: 10, has_metadata: false }
            ]
        );
    }

    #[test]
    fn retention_counts_only_the_tenants_own_series() {
        let at = jiff::Timestamp::from_second(1_750_000_000).expect("valid");
        let own = new_key("shared", "team", at);
        assert!(is_key_of(&own, "shared", "team"));
        assert!(!is_key_of(&new_key("shared", "team-b", at), "shared", "team"), "team-b is not team");
        assert!(!is_key_of(&own, "shared", "team-b"));
        assert!(!is_key_of(&new_key("shared/sub", "team", at), "shared", "team"));
        assert!(!is_key_of("shared/team-notes", "shared", "team"));
        let listed = vec![snapshot(&own, true), snapshot(&new_key("shared", "team-b", at), true)];
        assert_eq!(series_of(listed, "shared", "team"), [snapshot(&own, true)]);
    }

    #[test]
    fn retention_keeps_the_newest_complete_snapshots() {
        let snapshots =
            [snapshot("t-1", true), snapshot("t-2", false), snapshot("t-3", true), snapshot("t-4", true)];
        assert_eq!(beyond_retention(&snapshots, 2, "t-4"), ["t-1", "t-2"]);
        assert_eq!(beyond_retention(&snapshots, 7, "t-4"), ["t-2"], "only the incomplete one");
        assert_eq!(beyond_retention(&snapshots, 1, "t-4"), ["t-1", "t-2", "t-3"]);
        assert_eq!(beyond_retention(&snapshots, 0, "t-4"), ["t-1", "t-2", "t-3"], "at least one stays");
        // An incomplete snapshot newer than every complete one may still be uploading.
        let uploading = [snapshot("t-1", true), snapshot("t-2", false)];
        assert!(beyond_retention(&uploading, 1, "t-1").is_empty());
    }

    #[test]
    fn an_error_message_carries_its_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"));
        assert_eq!(with_causes(&error), "error sending request: Connection refused");
    }

    #[test]
    fn prefix_defaults_to_namespace_and_tenant() {
        let names = TenantNames::new("team-a", "tenants");
        let mut destination = BackupDestination::default();
        assert_eq!(prefix(&destination, &names), "tenants/team-a");
        destination.s3 =
            Some(S3Destination { prefix: Some("/backups/a/".into()), ..S3Destination::default() });
        assert_eq!(prefix(&destination, &names), "backups/a");
        assert_eq!(snapshot_path("backups/a/k").to_string(), "backups/a/k.db");
    }

    #[tokio::test]
    async fn a_directory_store_round_trips_and_retains() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = open(&StoreConfig::Directory(directory.path().join("claim"))).expect("opens");
        let source = directory.path().join("snapshot.db");
        std::fs::write(&source, b"snapshot bytes").expect("write");
        for key in ["ns/t/t-1", "ns/t/t-2", "ns/t/t-3"] {
            upload(store.clone(), &source, &snapshot_path(key)).await.expect("upload");
            store.put(&metadata_path(key), bytes::Bytes::from_static(b"{}").into()).await.expect("metadata");
        }
        let listed = list(store.as_ref(), "ns/t").await.expect("lists");
        assert_eq!(
            listed.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["ns/t/t-1", "ns/t/t-2", "ns/t/t-3"]
        );
        assert_eq!(listed[0].size, 14);
        for key in beyond_retention(&listed, 2, "ns/t/t-3") {
            delete(store.as_ref(), &key).await.expect("delete");
        }
        let listed = list(store.as_ref(), "ns/t").await.expect("lists");
        assert_eq!(listed.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["ns/t/t-2", "ns/t/t-3"]);
        let copy = directory.path().join("copy.db");
        assert_eq!(download(store.as_ref(), &snapshot_path("ns/t/t-2"), &copy).await.expect("download"), 14);
        assert_eq!(std::fs::read(copy).expect("read"), b"snapshot bytes");
    }
}
