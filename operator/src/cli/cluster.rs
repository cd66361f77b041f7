//! Connection to the meta cluster for the client verbs, the way kubectl does it:
//! `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else in-cluster),
//! `--context` (else the current context) and `-n/--namespace` (else the context's
//! namespace). Also owns [`CliError`], so every verb reports "not found", "cannot
//! reach the API server" and admission rejections with the same one-line wording.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Api, Client, Config};

use crate::api::TenantCluster;
use crate::cli::format::admission_message;

/// Errors of the client verbs, each worded to stand alone on one `error: ...` line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The TenantCluster does not exist.
    #[error("tenantcluster {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    /// No kubeconfig file and no in-cluster service account.
    #[error("no kubeconfig: {reason} (set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config)")]
    NoKubeconfig { reason: String },
    /// The kubeconfig exists but cannot be used (unknown context, bad file, ...).
    #[error("invalid kubeconfig: {0}")]
    InvalidKubeconfig(String),
    /// No answer from the API server (connection refused, TLS failure, timeout).
    #[error("cannot reach the API server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The API server refused the request: admission, conflict, permission.
    #[error("{0}")]
    Rejected(String),
    /// Another API error, with the API server's message.
    #[error("{0}")]
    Api(String),
    /// Bad command-line input or input file that never reached the API server.
    #[error("{0}")]
    Usage(String),
    /// A wait ran out of time; the text says what was still missing.
    #[error("{0}")]
    TimedOut(String),
    /// Something the verb found in the cluster is not what Nestor writes.
    #[error("{0}")]
    Unexpected(String),
}

/// How the verbs find the meta cluster, as kubectl's flags of the same names.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the TenantCluster (default: the context's namespace, else "default").
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// A client for the meta cluster and the namespace the verb works in.
#[derive(Clone)]
pub struct Session {
    /// Client for the meta cluster.
    pub client: Client,
    /// `--namespace`, else the context's namespace.
    pub namespace: String,
    /// API server URL, for "cannot reach" messages.
    pub server: String,
}

/// Connect timeout of the client verbs: long enough for a slow network, short enough
/// that a wrong address fails while the user still waits for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterArgs {
    /// Builds the client configuration from the flags. No request is sent yet.
    pub async fn config(&self) -> Result<Config, CliError> {
        let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
        let loaded = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|error| match error {
                    error @ KubeconfigError::ReadConfig(..) => {
                        CliError::NoKubeconfig { reason: missing_file_reason(&error) }
                    }
                    other => CliError::InvalidKubeconfig(error_text(&other)),
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        };
        let mut config = match loaded {
            Ok(config) => config,
            // Like kubectl: no kubeconfig at all means "use the pod's service account".
            Err(error) if self.kubeconfig.is_none() && self.context.is_none() && is_missing_file(&error) => {
                Config::incluster()
                    .map_err(|_| CliError::NoKubeconfig { reason: missing_file_reason(&error) })?
            }
            Err(error) if is_missing_file(&error) => {
                return Err(CliError::NoKubeconfig { reason: missing_file_reason(&error) });
            }
            Err(error) => return Err(CliError::InvalidKubeconfig(error_text(&error))),
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        if let Some(namespace) = &self.namespace {
            config.default_namespace = namespace.clone();
        }
        Ok(config)
    }

    /// Connects (lazily: the first request opens the connection).
    pub async fn connect(&self) -> Result<Session, CliError> {
        let config = self.config().await?;
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let namespace = config.default_namespace.clone();
        let client =
            Client::try_from(config).map_err(|error| CliError::InvalidKubeconfig(error_text(&error)))?;
        Ok(Session { client, namespace, server })
    }
}

fn is_missing_file(error: &KubeconfigError) -> bool {
    matches!(error, KubeconfigError::FindPath | KubeconfigError::ReadConfig(..))
}

fn missing_file_reason(error: &KubeconfigError) -> String {
    match error {
        KubeconfigError::ReadConfig(io, path) => format!("cannot read {}: {io}", path.display()),
        KubeconfigError::FindPath => "no home directory to find ~/.kube/config in".into(),
        other => error_text(other),
    }
}

impl Session {
    /// TenantClusters of the session's namespace.
    pub fn tenants(&self) -> Api<TenantCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Objects of kind `K` in the session's namespace.
    pub fn namespaced<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Turns a kube error about TenantCluster `name` into the message the user sees.
    pub fn error(&self, name: &str, error: kube::Error) -> CliError {
        api_error(&self.server, &self.namespace, name, error)
    }

    /// Fetches TenantCluster `name`, or [`CliError::NotFound`].
    pub async fn get_tenant(&self, name: &str) -> Result<TenantCluster, CliError> {
        self.tenants().get(name).await.map_err(|error| self.error(name, error))
    }
}

/// Classifies a kube error about TenantCluster `name` in `namespace`.
pub fn api_error(server: &str, namespace: &str, name: &str, error: kube::Error) -> CliError {
    match error {
        kube::Error::Api(status) if status.is_not_found() && !name.is_empty() => {
            CliError::NotFound { name: name.to_string(), namespace: namespace.to_string() }
        }
        kube::Error::Api(status) if status.is_invalid() || status.code == 400 => {
            CliError::Rejected(admission_message(&status))
        }
        kube::Error::Api(status) if status.is_conflict() || status.is_forbidden() => {
            CliError::Rejected(flatten(&status.message))
        }
        kube::Error::Api(status) => {
            CliError::Api(format!("{} ({} {})", flatten(&status.message), status.code, status.reason))
        }
        error @ (kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_)) => {
            CliError::Unreachable { server: server.to_string(), reason: innermost_reasons(&error) }
        }
        other => CliError::Api(error_text(&other)),
    }
}

/// The error and its sources as one line, skipping sources already quoted by their parent.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut current = Some(error);
    while let Some(cause) = current {
        let message = flatten(&cause.to_string());
        if !message.is_empty() && !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        current = cause.source();
    }
    text
}

/// The most specific part of a transport error: hyper and tower wrap the real cause
/// ("Connection refused", "invalid peer certificate") in several generic layers.
fn innermost_reasons(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = Vec::new();
    let mut current = error.source();
    while let Some(cause) = current {
        messages.push(flatten(&cause.to_string()));
        current = cause.source();
    }
    // The last two layers usually say what failed and why ("tcp connect error: Connection refused").
    let tail: Vec<_> = messages.iter().rev().take(2).rev().cloned().collect();
    if tail.is_empty() { flatten(&error.to_string()) } else { dedup_join(&tail) }
}

fn dedup_join(parts: &[String]) -> String {
    let mut line = String::new();
    for part in parts {
        if part.is_empty() || line.contains(part.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(part);
    }
    line
}

/// Collapses whitespace and line breaks so a message fits on one line.
pub fn flatten(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    #[test]
    fn not_found_names_the_tenant_and_namespace() {
        let status = Status::failure("tenantclusters.nestor.dev \"x\" not found", "NotFound").with_code(404);
        let error = api_error("https://meta:6443", "team", "x", kube::Error::Api(status.boxed()));
        assert_eq!(error.to_string(), r#"tenantcluster "x" not found in namespace "team""#);
    }

    #[test]
    fn forbidden_keeps_the_apiserver_message_on_one_line() {
        let status = Status::failure("tenantclusters is forbidden:\n User \"bob\" cannot list", "Forbidden")
            .with_code(403);
        let error = api_error("https://meta:6443", "team", "x", kube::Error::Api(status.boxed()));
        assert_eq!(error.to_string(), "tenantclusters is forbidden: User \"bob\" cannot list");
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_file_is_reported_as_such() {
        let args = ClusterArgs {
            kubeconfig: Some("/nonexistent/nestor/kubeconfig".into()),
            ..ClusterArgs::default()
        };
        let error = args.config().await.expect_err("no kubeconfig");
        assert!(matches!(error, CliError::NoKubeconfig { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/nestor/kubeconfig"), "{error}");
    }

    #[tokio::test]
    async fn namespace_flag_overrides_the_context_namespace() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
             users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: one\n  context: {cluster: c, user: u, namespace: ctx-ns}\n\
             - name: two\n  context: {cluster: c, user: u}\ncurrent-context: one\n",
        )
        .unwrap();
        let config = |context: Option<&str>, namespace: Option<&str>| {
            let args = ClusterArgs {
                kubeconfig: Some(path.clone()),
                context: context.map(str::to_string),
                namespace: namespace.map(str::to_string),
            };
            async move { args.config().await.unwrap().default_namespace }
        };
        assert_eq!(config(None, None).await, "ctx-ns");
        assert_eq!(config(Some("two"), None).await, "default");
        assert_eq!(config(None, Some("mine")).await, "mine");
        let unknown =
            ClusterArgs { kubeconfig: Some(path.clone()), context: Some("three".into()), namespace: None };
        assert!(matches!(unknown.config().await, Err(CliError::InvalidKubeconfig(_))));
    }
}
