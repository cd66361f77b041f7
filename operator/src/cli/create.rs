//! `nestor create`: a TenantCluster from flags or from YAML documents, applied
//! server-side under the field manager `nestor-cli`. The object carries only the
//! fields the user gave; the API server fills in the defaults, so `nestor-cli` does
//! not claim fields it never chose.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kube::api::{Patch, PatchParams, ValidationDirective};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{GROUP, TenantCluster, VERSION};
use crate::cli::cluster::{CliError, ClusterArgs, Session};
use crate::cli::view::resource_ref;

/// Field manager of every change the `nestor` command line makes.
pub const CLI_FIELD_MANAGER: &str = "nestor-cli";

/// Kubernetes version of a tenant created without `--version`.
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.34.2";

/// Arguments of `nestor create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster (or use -f).
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    pub name: Option<String>,

    /// YAML file with one or more TenantCluster documents ("-" reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Option<PathBuf>,

    /// Kubernetes version of the control plane, MAJOR.MINOR.PATCH.
    #[arg(long = "version", value_name = "VERSION", default_value = DEFAULT_KUBERNETES_VERSION, conflicts_with = "filename")]
    pub kubernetes_version: String,

    /// Number of etcd members (1, 3 or 5; the API server's default when unset).
    #[arg(long, value_name = "N", conflicts_with = "filename")]
    pub etcd_replicas: Option<i32>,

    /// Number of kube-apiserver replicas.
    #[arg(long, value_name = "N", conflicts_with = "filename")]
    pub apiserver_replicas: Option<i32>,

    /// Registry and repository prefix of the control-plane images.
    #[arg(long, value_name = "REPOSITORY", conflicts_with = "filename")]
    pub image_repository: Option<String>,

    /// Keep etcd data in an emptyDir (throwaway clusters only; immutable).
    #[arg(long, conflicts_with = "filename")]
    pub ephemeral_etcd: bool,

    /// Type of the apiserver Service in the meta cluster.
    #[arg(long, value_enum, ignore_case = true, conflicts_with = "filename")]
    pub service_type: Option<ServiceTypeArg>,

    /// Host name or IP that clients outside the meta cluster use.
    #[arg(long, value_name = "HOST", conflicts_with = "filename")]
    pub external_host: Option<String>,
}

/// `--service-type`, spelled as in the Service API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServiceTypeArg {
    #[value(name = "ClusterIP")]
    ClusterIp,
    #[value(name = "NodePort")]
    NodePort,
    #[value(name = "LoadBalancer")]
    LoadBalancer,
}

impl ServiceTypeArg {
    fn api_name(self) -> &'static str {
        match self {
            ServiceTypeArg::ClusterIp => "ClusterIP",
            ServiceTypeArg::NodePort => "NodePort",
            ServiceTypeArg::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The TenantCluster `args` describe, as the JSON to apply: only the fields given.
pub fn tenant_from_flags(name: &str, args: &CreateArgs) -> Value {
    let mut spec = Map::new();
    spec.insert("version".into(), json!(args.kubernetes_version));
    let mut etcd = Map::new();
    if let Some(replicas) = args.etcd_replicas {
        etcd.insert("replicas".into(), json!(replicas));
    }
    if args.ephemeral_etcd {
        etcd.insert("storage".into(), json!({ "ephemeral": true }));
    }
    if !etcd.is_empty() {
        spec.insert("etcd".into(), Value::Object(etcd));
    }
    if let Some(replicas) = args.apiserver_replicas {
        spec.insert("apiServer".into(), json!({ "replicas": replicas }));
    }
    if let Some(repository) = &args.image_repository {
        spec.insert("imageRepository".into(), json!(repository));
    }
    let mut network = Map::new();
    if let Some(service_type) = args.service_type {
        network.insert("serviceType".into(), json!(service_type.api_name()));
    }
    if let Some(host) = &args.external_host {
        network.insert("externalHost".into(), json!(host));
    }
    if !network.is_empty() {
        spec.insert("network".into(), Value::Object(network));
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "TenantCluster",
        "metadata": { "name": name },
        "spec": spec,
    })
}

/// A TenantCluster document of a `-f` file, checked enough to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// metadata.name.
    pub name: String,
    /// metadata.namespace, if the document sets one.
    pub namespace: Option<String>,
    /// The document as written.
    pub object: Value,
}

/// Reads TenantCluster documents from multi-document YAML; empty documents are skipped.
pub fn parse_documents(yaml: &str) -> Result<Vec<Document>, CliError> {
    let mut documents = Vec::new();
    for (index, deserializer) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let position = index + 1;
        let object = Value::deserialize(deserializer)
            .map_err(|error| CliError::Usage(format!("document {position}: invalid YAML: {error}")))?;
        if object.is_null() {
            continue;
        }
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_string);
        let api_version = text("/apiVersion").unwrap_or_default();
        let kind = text("/kind").unwrap_or_default();
        if api_version != format!("{GROUP}/{VERSION}") || kind != "TenantCluster" {
            return Err(CliError::Usage(format!(
                "document {position}: expected apiVersion {GROUP}/{VERSION} and kind TenantCluster, \
                 got {api_version:?} {kind:?}"
            )));
        }
        let name = text("/metadata/name")
            .filter(|name| !name.is_empty())
            .ok_or_else(|| CliError::Usage(format!("document {position}: metadata.name is missing")))?;
        documents.push(Document { name, namespace: text("/metadata/namespace"), object });
    }
    if documents.is_empty() {
        return Err(CliError::Usage("no TenantCluster documents in the input".into()));
    }
    Ok(documents)
}

/// What an apply did, in kubectl's words.
fn outcome(before: Option<&TenantCluster>, after: &TenantCluster) -> &'static str {
    match before {
        None => "created",
        Some(before) if before.metadata.resource_version == after.metadata.resource_version => "unchanged",
        Some(_) => "configured",
    }
}

/// Applies one object in `namespace` and prints what happened.
async fn apply(session: &Session, namespace: &str, name: &str, object: &Value) -> Result<(), CliError> {
    let tenants = kube::Api::<TenantCluster>::namespaced(session.client.clone(), namespace);
    let error = |error| crate::cli::cluster::api_error(&session.server, namespace, name, error);
    let before = tenants.get_opt(name).await.map_err(error)?;
    let mut params = PatchParams::apply(CLI_FIELD_MANAGER);
    // Typos in a hand-written file are refused instead of silently dropped.
    params.field_validation = Some(ValidationDirective::Strict);
    let after = tenants.patch(name, &params, &Patch::Apply(object)).await.map_err(error)?;
    println!("{} {}", resource_ref(name), outcome(before.as_ref(), &after));
    Ok(())
}

/// Runs `nestor create`.
pub async fn run(args: CreateArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    if let Some(path) = &args.filename {
        let yaml = read_input(path)?;
        let documents = parse_documents(&yaml)?;
        for document in &documents {
            let namespace = match (&document.namespace, &args.cluster.namespace) {
                (Some(own), Some(flag)) if own != flag => {
                    return Err(CliError::Usage(format!(
                        "the namespace of {} ({own:?}) does not match --namespace {flag:?}",
                        document.name
                    ))
                    .into());
                }
                (Some(own), _) => own.clone(),
                (None, _) => session.namespace.clone(),
            };
            apply(&session, &namespace, &document.name, &document.object).await?;
        }
        return Ok(());
    }
    let name = args.name.as_deref().ok_or_else(|| CliError::Usage("a NAME or -f FILE is required".into()))?;
    apply(&session, &session.namespace, name, &tenant_from_flags(name, &args)).await?;
    Ok(())
}

fn read_input(path: &PathBuf) -> Result<String, CliError> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| CliError::Usage(format!("cannot read stdin: {error}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn create_args(argv: &[&str]) -> CreateArgs {
        let argv = ["nestor", "create"].iter().chain(argv).copied();
        let Command::Create(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("create verb expected")
        };
        args
    }

    #[test]
    fn flags_become_only_the_fields_given() {
        let args = create_args(&["team-a"]);
        assert_eq!(
            tenant_from_flags("team-a", &args),
            json!({
                "apiVersion": "nestor.dev/v1alpha1",
                "kind": "TenantCluster",
                "metadata": { "name": "team-a" },
                "spec": { "version": "1.34.2" },
            })
        );

        let args = create_args(&[
            "team-b",
            "--version",
            "1.35.0",
            "--etcd-replicas",
            "1",
            "--ephemeral-etcd",
            "--apiserver-replicas",
            "2",
            "--image-repository",
            "nestor.local",
            "--service-type",
            "nodeport",
            "--external-host",
            "api.example.com",
            "-n",
            "tenants",
        ]);
        assert_eq!(args.cluster.namespace.as_deref(), Some("tenants"));
        assert_eq!(
            tenant_from_flags("team-b", &args)["spec"],
            json!({
                "version": "1.35.0",
                "etcd": { "replicas": 1, "storage": { "ephemeral": true } },
                "apiServer": { "replicas": 2 },
                "imageRepository": "nestor.local",
                "network": { "serviceType": "NodePort", "externalHost": "api.example.com" },
            })
        );
    }

    #[test]
    fn name_and_file_exclude_each_other() {
        let parse = |argv: &[&str]| Cli::try_parse_from(["nestor", "create"].iter().chain(argv).copied());
        assert!(parse(&[]).is_err(), "a name or a file is required");
        assert!(parse(&["a", "-f", "x.yaml"]).is_err());
        assert!(parse(&["-f", "x.yaml", "--etcd-replicas", "3"]).is_err());
        assert!(parse(&["-f", "x.yaml"]).is_ok());
    }

    #[test]
    fn documents_are_read_in_order_and_checked() {
        let yaml = "apiVersion: nestor.dev/v1alpha1\nkind: TenantCluster\nmetadata: {name: a}\nspec: {version: 1.34.2}\n\
                    ---\n---\napiVersion: nestor.dev/v1alpha1\nkind: TenantCluster\n\
                    metadata: {name: b, namespace: other}\nspec: {version: 1.35.0}\n";
        let documents = parse_documents(yaml).unwrap();
        assert_eq!(documents.len(), 2);
        assert_eq!((documents[0].name.as_str(), documents[0].namespace.as_deref()), ("a", None));
        assert_eq!((documents[1].name.as_str(), documents[1].namespace.as_deref()), ("b", Some("other")));
        assert_eq!(documents[1].object["spec"]["version"], "1.35.0");

        let wrong_kind =
            parse_documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n").unwrap_err();
        assert!(wrong_kind.to_string().starts_with("document 1: expected apiVersion nestor.dev/v1alpha1"));
        let nameless =
            parse_documents("apiVersion: nestor.dev/v1alpha1\nkind: TenantCluster\nmetadata: {}\n")
                .unwrap_err();
        assert_eq!(nameless.to_string(), "document 1: metadata.name is missing");
        assert!(parse_documents("---\n").is_err());
    }
}
