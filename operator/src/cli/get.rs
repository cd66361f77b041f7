//! `nestor get`: TenantClusters as a kubectl-style table, or as YAML/JSON.

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;
use kube::core::Resource;
use serde_json::{Value, json};

use crate::api::TenantCluster;
use crate::cli::cluster::{CliError, ClusterArgs, api_error};
use crate::cli::format::{NONE, age, render_table};
use crate::cli::view::{phase_text, ready_components};
use crate::reconcile::conditions::types;

/// Arguments of `nestor get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of one TenantCluster; all of the namespace when omitted.
    pub name: Option<String>,

    /// List TenantClusters of every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Columns NAME, VERSION, PHASE, READY, ENDPOINT, AGE.
    Table,
    /// The table plus replica counts, running version and certificate expiry.
    Wide,
    /// The objects as YAML.
    Yaml,
    /// The objects as JSON.
    Json,
}

/// Renders `tenants` as the table for `output` (Table or Wide), seen at `now`.
pub fn tenant_table(
    tenants: &[TenantCluster],
    output: OutputFormat,
    with_namespace: bool,
    now: Timestamp,
) -> String {
    let mut header = vec!["NAME", "VERSION", "PHASE", "READY", "ENDPOINT", "AGE"];
    if output == OutputFormat::Wide {
        header.extend(["ETCD", "APISERVERS", "RUNNING", "CERTS-EXPIRE"]);
    }
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|tenant| {
            let status = tenant.status.as_ref();
            let or_none =
                |value: Option<String>| value.filter(|v| !v.is_empty()).unwrap_or_else(|| NONE.into());
            let mut row = vec![
                tenant.metadata.name.clone().unwrap_or_default(),
                tenant.spec.version.clone(),
                or_none(Some(phase_text(status.and_then(|status| status.phase)))),
                format!("{}/{}", ready_components(tenant), types::COMPONENTS.len()),
                or_none(status.and_then(|status| status.endpoint.clone())),
                tenant
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|created| age(created.0, now))
                    .unwrap_or_else(|| NONE.into()),
            ];
            if output == OutputFormat::Wide {
                row.extend([
                    tenant.spec.etcd.replicas.to_string(),
                    tenant.spec.api_server.replicas.to_string(),
                    or_none(status.and_then(|status| status.version.clone())),
                    or_none(
                        status
                            .and_then(|status| status.certificates_expire_at.as_ref())
                            .map(|expiry| expiry.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    ),
                ]);
            }
            if with_namespace {
                row.insert(0, tenant.metadata.namespace.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    render_table(&header, &rows)
}

/// A TenantCluster as printed by `-o yaml|json`: apiVersion and kind set, managed
/// fields left out as kubectl does by default.
pub fn printable(tenant: &TenantCluster) -> Result<Value, CliError> {
    let mut tenant = tenant.clone();
    tenant.metadata.managed_fields = None;
    let mut value = serde_json::to_value(&tenant).map_err(|error| CliError::Unexpected(error.to_string()))?;
    value["apiVersion"] = json!(TenantCluster::api_version(&()));
    value["kind"] = json!(TenantCluster::kind(&()));
    Ok(value)
}

/// Runs `nestor get`.
pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let (tenants, single) = match &args.name {
        Some(name) => (vec![session.get_tenant(name).await?], true),
        None => {
            let api: Api<TenantCluster> =
                if args.all_namespaces { Api::all(session.client.clone()) } else { session.tenants() };
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|error| api_error(&session.server, &session.namespace, "", error))?;
            (list.items, false)
        }
    };

    let document = || -> Result<Value, CliError> {
        if single {
            return printable(&tenants[0]);
        }
        let items = tenants.iter().map(printable).collect::<Result<Vec<_>, _>>()?;
        Ok(
            json!({ "apiVersion": "v1", "kind": "List", "items": items, "metadata": { "resourceVersion": "" } }),
        )
    };
    match args.output {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&document()?)
                .map_err(|e| CliError::Unexpected(e.to_string()))?;
            println!("{text}");
        }
        OutputFormat::Yaml => {
            let text =
                serde_yaml_ng::to_string(&document()?).map_err(|e| CliError::Unexpected(e.to_string()))?;
            print!("{text}");
        }
        OutputFormat::Table | OutputFormat::Wide if tenants.is_empty() => {
            let scope = if args.all_namespaces {
                "any namespace".to_string()
            } else {
                format!("namespace {:?}", session.namespace)
            };
            eprintln!("No TenantClusters found in {scope}.");
        }
        OutputFormat::Table | OutputFormat::Wide => {
            print!("{}", tenant_table(&tenants, args.output, args.all_namespaces, Timestamp::now()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::api::{Phase, TenantClusterSpec, TenantClusterStatus};

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn tenant(name: &str, age_seconds: i64, status: Option<TenantClusterStatus>) -> TenantCluster {
        let spec: TenantClusterSpec = serde_json::from_value(json!({"version": "1.34.2"})).unwrap();
        let mut tenant = TenantCluster::new(name, spec);
        tenant.metadata.namespace = Some("tenants".into());
        tenant.metadata.creation_timestamp = Some(Time(now() - jiff::SignedDuration::from_secs(age_seconds)));
        tenant.status = status;
        tenant
    }

    fn ready_status() -> TenantClusterStatus {
        let conditions = types::COMPONENTS
            .iter()
            .take(3)
            .map(|type_| Condition {
                type_: type_.to_string(),
                status: "True".into(),
                reason: "Ready".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(now()),
            })
            .collect();
        TenantClusterStatus {
            phase: Some(Phase::Provisioning),
            conditions,
            endpoint: Some("https://a-apiserver.tenants.svc:6443".into()),
            version: Some("1.34.2".into()),
            ..TenantClusterStatus::default()
        }
    }

    #[test]
    fn table_has_kubectl_columns_and_placeholders() {
        let tenants = [tenant("a", 200, Some(ready_status())), tenant("bb", 5 * 86400, None)];
        assert_eq!(
            tenant_table(&tenants, OutputFormat::Table, false, now()),
            "NAME   VERSION   PHASE          READY   ENDPOINT                               AGE\n\
             a      1.34.2    Provisioning   3/6     https://a-apiserver.tenants.svc:6443   3m20s\n\
             bb     1.34.2    <none>         0/6     <none>                                 5d\n"
        );
    }

    #[test]
    fn wide_and_all_namespaces_add_columns() {
        let table = tenant_table(&[tenant("a", 10, Some(ready_status()))], OutputFormat::Wide, true, now());
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAMESPACE",
                "NAME",
                "VERSION",
                "PHASE",
                "READY",
                "ENDPOINT",
                "AGE",
                "ETCD",
                "APISERVERS",
                "RUNNING",
                "CERTS-EXPIRE"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[0], "tenants");
        assert_eq!(&row[7..], ["3", "1", "1.34.2", "<none>"]);
    }

    #[test]
    fn printable_objects_carry_type_and_no_managed_fields() {
        let mut object = tenant("a", 10, None);
        object.metadata.managed_fields = Some(Vec::new());
        let value = printable(&object).unwrap();
        assert_eq!(value["apiVersion"], "nestor.dev/v1alpha1");
        assert_eq!(value["kind"], "TenantCluster");
        assert!(value["metadata"].get("managedFields").is_none());
    }
}
