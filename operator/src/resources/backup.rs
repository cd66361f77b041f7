//! The backup objects of a tenant with `spec.backup`, and the restore init container of
//! its etcd members with `spec.restore`: the CronJob (owned), the backup volume claim
//! and the PKI copy (neither owned, both outlive the tenant unless
//! `spec.backup.deleteWithCluster`). What the programs in those pods do is in
//! [`crate::backup`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::{Value, json};

use super::render::{BACKUP_CRONJOB, render};
use super::secrets::{CA_CERT_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use super::{MetadataContext, ResourceError, TenantInputs};
use crate::api::{BackupDestination, BackupSpec, RestoreSpec};
use crate::backup::store::{
    ACCESS_KEY_ENV, ACCESS_KEY_SECRET_KEY, DEFAULT_REGION, SECRET_KEY_ENV, SECRET_KEY_SECRET_KEY,
    VOLUME_MOUNT_PATH, prefix,
};
use crate::names::{BACKUP_OF_LABEL, Component, TenantNames};

/// Where the agent finds the etcd client certificate.
const ETCD_CLIENT_DIR: &str = "/etc/nestor/etcd";
/// Size of a backup claim the spec gives none.
const DEFAULT_CLAIM_SIZE: &str = "2Gi";

/// The claim a volume destination uses: its `claimName`, or `<tenant>-backup`.
pub fn backup_claim_name(names: &TenantNames, destination: &BackupDestination) -> Option<String> {
    let volume = destination.volume.as_ref()?;
    Some(volume.claim_name.clone().unwrap_or_else(|| names.backup()))
}

/// Labels of what outlives the tenant: no tenant label (see [`BACKUP_OF_LABEL`]).
fn kept_labels(names: &TenantNames) -> BTreeMap<String, String> {
    BTreeMap::from([
        (BACKUP_OF_LABEL.to_string(), names.tenant.clone()),
        ("app.kubernetes.io/component".to_string(), Component::Backup.label().to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "nestor".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "nestor".to_string()),
    ])
}

/// The volume and mount of a destination, and the environment and arguments that tell
/// the agent or the restore where the store is (`read_only` for a restore).
struct StoreWiring {
    args: Vec<String>,
    env: Vec<Value>,
    volumes: Vec<Value>,
    mounts: Vec<Value>,
}

fn store_wiring(names: &TenantNames, destination: &BackupDestination, read_only: bool) -> StoreWiring {
    let mut wiring =
        StoreWiring { args: Vec::new(), env: Vec::new(), volumes: Vec::new(), mounts: Vec::new() };
    if let Some(claim) = backup_claim_name(names, destination) {
        wiring.args.extend([format!("--directory={VOLUME_MOUNT_PATH}"), format!("--claim={claim}")]);
        wiring.volumes.push(
            json!({"name": "backup", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}),
        );
        wiring.mounts.push(json!({"name": "backup", "mountPath": VOLUME_MOUNT_PATH, "readOnly": read_only}));
    }
    if let Some(s3) = &destination.s3 {
        wiring.args.extend([
            format!("--s3-endpoint={}", s3.endpoint),
            format!("--s3-bucket={}", s3.bucket),
            format!("--s3-region={}", s3.region.as_deref().unwrap_or(DEFAULT_REGION)),
        ]);
        let secret = s3.credentials_secret.clone().unwrap_or_default();
        for (env, key) in [(ACCESS_KEY_ENV, ACCESS_KEY_SECRET_KEY), (SECRET_KEY_ENV, SECRET_KEY_SECRET_KEY)] {
            wiring
                .env
                .push(json!({"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}));
        }
    }
    wiring
}

#[derive(Serialize)]
struct CronJobContext {
    metadata: MetadataContext,
    schedule: String,
    suspend: bool,
    image: String,
    args: Vec<String>,
    env: Vec<Value>,
    resources: Value,
    mounts: Vec<Value>,
    volumes: Vec<Value>,
}

/// CronJob `names.backup()`: `nestor backup-agent` on `spec.backup.schedule`, with the
/// etcd healthcheck client certificate (etcd lets it take snapshots), a scratch
/// directory for the snapshot and the destination.
pub fn backup_cronjob(input: &TenantInputs<'_>, backup: &BackupSpec) -> Result<CronJob, ResourceError> {
    let names = input.names();
    let mut wiring = store_wiring(names, &backup.destination, false);
    let members = input.spec.etcd.replicas.max(input.etcd_members.running);
    let mut args = vec![
        format!("--tenant={}", names.tenant),
        format!("--namespace={}", names.namespace),
        format!("--members={members}"),
        format!("--kubernetes-version={}", input.spec.version),
        format!("--retain={}", backup.retain.max(1)),
        format!("--prefix={}", prefix(&backup.destination, names)),
        format!("--tls-dir={ETCD_CLIENT_DIR}"),
        "--scratch=/scratch".to_string(),
    ];
    args.append(&mut wiring.args);
    let client = names.etcd_healthcheck_client_secret();
    wiring.volumes.extend([
        json!({"name": "etcd-client", "projected": {"defaultMode": 288, "sources": [{"secret": {"name": client, "items": [
            {"key": CA_CERT_KEY, "path": "ca.crt"},
            {"key": TLS_CERT_KEY, "path": "tls.crt"},
            {"key": TLS_PRIVATE_KEY_KEY, "path": "tls.key"},
        ]}}]}}),
        json!({"name": "scratch", "emptyDir": {}}),
    ]);
    wiring.mounts.extend([
        json!({"name": "etcd-client", "mountPath": ETCD_CLIENT_DIR, "readOnly": true}),
        json!({"name": "scratch", "mountPath": "/scratch"}),
    ]);
    let context = CronJobContext {
        metadata: input.owner.metadata(names.backup(), Component::Backup),
        schedule: backup.schedule.trim().to_string(),
        suspend: backup.suspend,
        image: input.images.agent.clone(),
        args,
        env: wiring.env,
        resources: json!({"requests": {"cpu": "10m", "memory": "64Mi"}}),
        mounts: wiring.mounts,
        volumes: wiring.volumes,
    };
    render(BACKUP_CRONJOB, &context)
}

/// The backup volume claim, not owned by the tenant (it outlives it unless
/// `deleteWithCluster`); `None` for an S3 destination.
pub fn backup_claim(names: &TenantNames, backup: &BackupSpec) -> Option<PersistentVolumeClaim> {
    let volume = backup.destination.volume.as_ref()?;
    let size = volume.size.clone().unwrap_or_else(|| Quantity(DEFAULT_CLAIM_SIZE.into()));
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: backup_claim_name(names, &backup.destination),
            namespace: Some(names.namespace.clone()),
            labels: Some(kept_labels(names)),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// Prefix of the keys of the PKI copy that hold the cluster CA (see [`pki_backup_parts`]).
pub const PKI_COPY_CLUSTER_CA_PREFIX: &str = "cluster-ca.";

/// The parts of a tenant's PKI a restore needs, as (role, tenant Secret): the CAs (so
/// certificates and kubeconfigs issued before stay valid), the service-account key
/// (tokens stay valid) and the encryption configuration (Secrets stored encrypted in
/// etcd stay readable). The PKI copy's keys are `<role>.<key of the Secret>`.
pub fn pki_backup_parts(names: &TenantNames) -> [(&'static str, String); 5] {
    [
        ("cluster-ca", names.cluster_ca_secret()),
        ("front-proxy-ca", names.front_proxy_ca_secret()),
        ("etcd-ca", names.etcd_ca_secret()),
        ("service-account", names.service_account_key_secret()),
        ("encryption", names.encryption_config_secret()),
    ]
}

/// Secret `names.pki_backup_secret()`: a copy of the [`pki_backup_parts`] of the
/// tenant's Secrets in `existing` (name → data), not owned by the tenant. `None`
/// until every part exists.
pub fn pki_backup_secret(
    names: &TenantNames,
    existing: &BTreeMap<String, BTreeMap<String, ByteString>>,
) -> Option<Secret> {
    let mut data = BTreeMap::new();
    for (role, secret_name) in pki_backup_parts(names) {
        let source = existing.get(&secret_name).filter(|data| !data.is_empty())?;
        for (key, value) in source {
            data.insert(format!("{role}.{key}"), value.clone());
        }
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(names.pki_backup_secret()),
            namespace: Some(names.namespace.clone()),
            labels: Some(kept_labels(names)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The tenant Secrets a PKI copy seeds (name → data), or the parts it lacks.
pub fn seeds_from_pki_backup(
    names: &TenantNames,
    copy: &BTreeMap<String, ByteString>,
) -> Result<BTreeMap<String, BTreeMap<String, ByteString>>, Vec<&'static str>> {
    let mut seeds = BTreeMap::new();
    let mut missing = Vec::new();
    for (role, secret_name) in pki_backup_parts(names) {
        let prefix = format!("{role}.");
        let data: BTreeMap<String, ByteString> = copy
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix(&prefix)?.to_string(), value.clone())))
            .collect();
        if data.is_empty() {
            missing.push(role);
        } else {
            seeds.insert(secret_name, data);
        }
    }
    if missing.is_empty() { Ok(seeds) } else { Err(missing) }
}

/// The `etcd-restore` init container of a member of a tenant with `spec.restore`, with
/// the volumes it needs beyond the member's own (JSON, as the etcd template takes them).
pub(super) fn restore_init_container(
    input: &TenantInputs<'_>,
    restore: &RestoreSpec,
    data_mount_path: &str,
    data_dir: &str,
    own_host: &str,
    peer_port: i32,
    env: Value,
) -> (Value, Vec<Value>) {
    let names = input.names();
    let wiring = store_wiring(names, &restore.from.destination, true);
    let mut args = vec![
        format!("--key={}", restore.from.key),
        format!("--data-dir={data_dir}"),
        format!("--initial-advertise-peer-url=https://{own_host}:{peer_port}"),
        format!("--initial-cluster-token={}", input.owner.uid),
    ];
    args.extend(wiring.args);
    let mut env = env.as_array().cloned().unwrap_or_default();
    env.extend(wiring.env);
    let mut mounts = vec![json!({"name": "data", "mountPath": data_mount_path})];
    mounts.extend(wiring.mounts);
    let container = json!({
        "name": crate::backup::report::RESTORE_CONTAINER,
        "image": input.images.agent,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/nestor", "etcd-restore"],
        "args": args,
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    });
    (container, wiring.volumes)
}

/// Base64 of `value`, for tests that build Secrets.
#[cfg(test)]
fn b64(value: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::*;

    fn backup(destination: serde_json::Value) -> BackupSpec {
        serde_json::from_value(json!({"schedule": "0 3 * * *", "destination": destination})).expect("spec")
    }

    #[test]
    fn the_cronjob_runs_the_agent_against_the_volume() {
        let mut fixture = Fixture::default();
        fixture.spec.backup = Some(backup(json!({"volume": {}})));
        let spec = fixture.spec.backup.clone().expect("set");
        let cronjob = backup_cronjob(&fixture.inputs(), &spec).expect("builds");
        let cron = cronjob.spec.expect("spec");
        assert_eq!(cron.schedule, "0 3 * * *");
        assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = cron.job_template.spec.expect("job").template;
        assert_eq!(pod.metadata.expect("meta").labels, Some(fixture.owner.names.labels(Component::Backup)));
        let pod = pod.spec.expect("pod");
        let agent = &pod.containers[0];
        let args = agent.args.clone().expect("args");
        for expected in [
            "--tenant=team-a",
            "--namespace=tenants",
            "--retain=7",
            "--prefix=tenants/team-a",
            "--directory=/backup",
            "--claim=team-a-backup",
        ] {
            assert!(args.contains(&expected.to_string()), "{expected} in {args:?}");
        }
        assert_eq!(agent.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
        let claims: Vec<String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| Some(volume.persistent_volume_claim.as_ref()?.claim_name.clone()))
            .collect();
        assert_eq!(claims, ["team-a-backup"]);
        let claim = backup_claim(&fixture.owner.names, &spec).expect("volume");
        assert_eq!(claim.metadata.owner_references, None, "outlives the tenant");
        assert!(!claim.metadata.labels.expect("labels").contains_key(crate::names::TENANT_LABEL));
    }

    #[test]
    fn an_s3_destination_passes_its_credentials_by_reference() {
        let mut fixture = Fixture::default();
        let spec = backup(
            json!({"s3": {"endpoint": "http://10.0.0.1:9000", "bucket": "b", "credentialsSecret": "creds"}}),
        );
        fixture.spec.backup = Some(spec.clone());
        let cronjob = backup_cronjob(&fixture.inputs(), &spec).expect("builds");
        let pod = cronjob.spec.expect("spec").job_template.spec.expect("job").template.spec.expect("pod");
        let agent = &pod.containers[0];
        assert!(
            agent.args.clone().expect("args").contains(&"--s3-endpoint=http://10.0.0.1:9000".to_string())
        );
        let refs: Vec<(String, String)> = agent
            .env
            .iter()
            .flatten()
            .filter_map(|env| {
                let key = env.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((key.name.clone(), key.key.clone()))
            })
            .collect();
        assert_eq!(
            refs,
            [("creds".into(), "accessKeyID".into()), ("creds".into(), "secretAccessKey".into())]
        );
        assert!(backup_claim(&fixture.owner.names, &spec).is_none());
    }

    #[test]
    fn the_pki_copy_round_trips_and_names_what_is_missing() {
        let names = TenantNames::new("team-a", "tenants");
        let mut existing = BTreeMap::new();
        for (_, secret) in pki_backup_parts(&names) {
            existing.insert(
                secret.clone(),
                BTreeMap::from([("tls.crt".to_string(), ByteString(b64(&secret).into_bytes()))]),
            );
        }
        existing.insert(
            "team-a-apiserver".into(),
            BTreeMap::from([("tls.crt".to_string(), ByteString(vec![1]))]),
        );
        let copy = pki_backup_secret(&names, &existing).expect("complete");
        assert_eq!(copy.metadata.owner_references, None);
        let data = copy.data.expect("data");
        assert_eq!(data.len(), 5, "the five parts only: {:?}", data.keys());
        let seeds = seeds_from_pki_backup(&names, &data).expect("complete");
        existing.remove("team-a-apiserver");
        assert_eq!(seeds, existing);

        let mut partial = data.clone();
        partial.remove("etcd-ca.tls.crt");
        assert_eq!(seeds_from_pki_backup(&names, &partial), Err(vec!["etcd-ca"]));
        existing.remove(&names.etcd_ca_secret());
        assert!(pki_backup_secret(&names, &existing).is_none(), "incomplete: no copy");
    }
}
