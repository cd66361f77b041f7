//! `spec.backup`, `spec.restore` and `status.lastBackup`: scheduled etcd snapshots of a
//! tenant and a new tenant started from one. What the operator does with them is in
//! [`crate::backup`].

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::validation::rules;

/// Scheduled etcd snapshots of the tenant (see docs/backup.md).
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take a snapshot: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week, as a CronJob takes it; the meta cluster's controller-manager time
    /// zone), or a macro such as `@daily`.
    #[schemars(length(max = 128))]
    #[x_kube(validation = rules::backup_schedule())]
    pub schedule: String,
    /// How many snapshots to keep; older ones are deleted after each backup. At least 1.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 1000))]
    pub retain: i32,
    /// Where snapshots go: exactly one of `volume` and `s3`.
    pub destination: BackupDestination,
    /// Delete the snapshots (the volume claim, the objects under the S3 prefix) and the
    /// retained PKI copy when the TenantCluster is deleted. Off by default: backups
    /// outlive their tenant, which is what they are for.
    #[serde(default)]
    pub delete_with_cluster: bool,
    /// Stop scheduling new backups (the CronJob's `suspend`); stored snapshots stay.
    #[serde(default)]
    pub suspend: bool,
}

fn default_retain() -> i32 {
    7
}

/// A snapshot store: exactly one of the fields.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::exactly_one_destination())]
pub struct BackupDestination {
    /// A PersistentVolumeClaim in the tenant's namespace, created by the operator and not
    /// owned by the TenantCluster (it survives the tenant unless `deleteWithCluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// A volume claim holding the snapshots as files.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    /// The claim's name; `<tenant>-backup` when unset. An existing claim of that name is
    /// used as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = rules::dns_subdomain("spec.backup.destination.volume.claimName"))]
    pub claim_name: Option<String>,
    /// Size of the claim the operator creates; 2Gi when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass of the claim the operator creates; the meta cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = rules::dns_subdomain("spec.backup.destination.volume.storageClassName"))]
    pub storage_class_name: Option<String>,
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::s3_credentials_required())]
pub struct S3Destination {
    /// The store's URL, for example `https://s3.eu-west-1.amazonaws.com` or
    /// `http://10.200.0.1:9343` (plain HTTP is allowed).
    #[schemars(length(max = 512))]
    #[x_kube(validation = rules::http_url("spec.backup.destination.s3.endpoint"))]
    pub endpoint: String,
    /// The bucket; it must exist.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix; `<namespace>/<tenant>` when unset. Snapshots are `<prefix>/<key>.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Signing region; `us-east-1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Secret in the tenant's namespace with keys `accessKeyID` and `secretAccessKey`.
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret: Option<String>,
}

/// Start a new tenant's etcd from a snapshot. Set at creation; immutable.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The snapshot.
    pub from: RestoreSource,
    /// The PKI to keep: without it the restored cluster gets a new CA, and kubeconfigs
    /// issued before are refused (and Secrets stored encrypted cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<RestorePki>,
}

/// Where the snapshot is.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// The store, as in `spec.backup.destination`.
    pub destination: BackupDestination,
    /// The snapshot's key, as `status.lastBackup.key` and `nestor backups` show it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The PKI a restored tenant keeps.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestorePki {
    /// A Secret in the tenant's namespace holding the PKI copy the operator keeps for a
    /// tenant with backups (`<tenant>-pki-backup`).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// The last successful backup.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// When the snapshot was taken.
    pub time: Time,
    /// Its key in the store (what `spec.restore.from.key` takes).
    pub key: String,
    /// Its size in bytes.
    pub size: i64,
    /// etcd's revision in the snapshot.
    pub revision: i64,
    /// Where it is: `pvc://<claim>/<key>.db` or `s3://<bucket>/<prefix>/<key>.db`.
    pub location: String,
}
