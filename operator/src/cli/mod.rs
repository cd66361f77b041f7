//! The `nestor` command line: one subcommand per verb, each in its own module with
//! its arguments and its `run`. `main.rs` only parses and reports errors.
//!
//! The client verbs (create, get, describe, kubeconfig, wait, upgrade, delete) talk
//! to the meta cluster like kubectl ([`cluster`]), share pure formatting ([`format`],
//! [`view`]) and fail with one `error: ...` line ([`cluster::CliError`]).

pub mod backup;
pub mod cluster;
pub mod completions;
pub mod crd;
pub mod create;
pub mod delete;
pub mod describe;
pub mod format;
pub mod get;
pub mod join;
pub mod kubeconfig;
pub mod operator;
pub mod upgrade;
pub mod view;
pub mod wait;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Nestor: Kubernetes control planes as TenantCluster objects.
#[derive(Debug, Parser)]
#[command(name = "nestor", version, about, propagate_version = true)]
pub struct Cli {
    /// Log line format (the level is set with RUST_LOG, default "info,kube=warn").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "NESTOR_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the TenantCluster operator.
    Operator(operator::OperatorArgs),
    /// Print the TenantCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Create or update TenantClusters from flags or YAML (server-side apply).
    // `--version` is the Kubernetes version here, not the program's.
    #[command(disable_version_flag = true)]
    Create(create::CreateArgs),
    /// List TenantClusters, or show one as YAML or JSON.
    Get(get::GetArgs),
    /// Show a TenantCluster in detail: conditions, components, certificates, events.
    Describe(describe::DescribeArgs),
    /// Print the admin kubeconfig of a tenant, or issue a short-lived one for a user.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Create a bootstrap token in a tenant and print the `kubeadm join` line for a node.
    Join(join::JoinArgs),
    /// Wait until a TenantCluster is Ready or deleted.
    Wait(wait::WaitArgs),
    /// Move a TenantCluster to another Kubernetes version.
    // `--version` is an alias of `--to` here, not the program's version.
    #[command(disable_version_flag = true)]
    Upgrade(upgrade::UpgradeArgs),
    /// Delete a TenantCluster and wait until it is gone.
    Delete(delete::DeleteArgs),
    /// Take a backup of a TenantCluster now (a Job from its backup CronJob) and wait for it.
    Backup(backup::BackupArgs),
    /// List the snapshots stored for a TenantCluster.
    Backups(backup::BackupsArgs),
    /// Create a TenantCluster from a snapshot of another (or of a deleted one).
    Restore(backup::RestoreArgs),
    /// Take one etcd snapshot into the backup store (the backup CronJob's program).
    #[command(hide = true)]
    BackupAgent(crate::backup::agent::AgentArgs),
    /// Restore an etcd member from a snapshot before it first starts (an init container).
    #[command(hide = true)]
    EtcdRestore(crate::backup::restore::RestoreArgs),
}

impl Cli {
    /// Runs the chosen verb.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Operator(args) => operator::run(args).await,
            Command::Crd => crd::run(),
            Command::Completions(args) => completions::run(&args),
            Command::Create(args) => quiet_unless_asked(create::run(args)).await,
            Command::Get(args) => quiet_unless_asked(get::run(args)).await,
            Command::Describe(args) => quiet_unless_asked(describe::run(args)).await,
            Command::Kubeconfig(args) => quiet_unless_asked(kubeconfig::run(args)).await,
            Command::Join(args) => quiet_unless_asked(join::run(args)).await,
            Command::Wait(args) => quiet_unless_asked(wait::run(args)).await,
            Command::Upgrade(args) => quiet_unless_asked(upgrade::run(args)).await,
            Command::Delete(args) => quiet_unless_asked(delete::run(args)).await,
            Command::Backup(args) => quiet_unless_asked(backup::run_backup(args)).await,
            Command::Backups(args) => quiet_unless_asked(backup::run_backups(args)).await,
            Command::Restore(args) => quiet_unless_asked(backup::run_restore(args)).await,
            Command::BackupAgent(args) => crate::backup::agent::run(args).await,
            Command::EtcdRestore(args) => crate::backup::restore::run(args).await,
        }
    }
}

/// Runs a client verb without log output unless RUST_LOG asks for it: the verb reports
/// failures itself as one `error:` line, and kube's own error log of a refused
/// connection would only repeat it in another format.
async fn quiet_unless_asked<F: Future>(verb: F) -> F::Output {
    use tracing::instrument::WithSubscriber;
    let asked = std::env::var_os("RUST_LOG").is_some_and(|value| !value.is_empty());
    if asked { verb.await } else { verb.with_subscriber(tracing::subscriber::NoSubscriber::default()).await }
}

/// An error as the single `error: ...` line `main` prints: the cause chain joined
/// with ": ", with line breaks flattened. Many library errors already repeat their
/// source in their own message, so a cause whose text the line already holds is skipped.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::from("error:");
    for cause in error.chain() {
        let message = cause.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        if message.is_empty() || line.contains(&message) {
            continue;
        }
        if line != "error:" {
            line.push(':');
        }
        line.push(' ');
        line.push_str(&message);
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn errors_print_as_one_line_with_their_causes() {
        let error =
            anyhow::anyhow!("connection refused\n(os error 111)").context("cannot configure the client");
        assert_eq!(
            error_line(&error),
            "error: cannot configure the client: connection refused (os error 111)"
        );
    }

    #[test]
    fn completions_offer_every_client_verb() {
        let mut script = Vec::new();
        let mut command = Cli::command();
        clap_complete::generate(clap_complete::Shell::Bash, &mut command, "nestor", &mut script);
        let script = String::from_utf8(script).expect("UTF-8 script");
        for verb in ["create", "get", "describe", "kubeconfig", "wait", "upgrade", "delete", "operator"] {
            assert!(script.contains(&format!("nestor__subcmd__{verb}")), "no completion for {verb}");
        }
    }

    #[test]
    fn client_verbs_take_kubectl_connection_flags_and_delete_waits_by_default() {
        let cli = Cli::try_parse_from([
            "nestor",
            "delete",
            "team-a",
            "--kubeconfig",
            "/k",
            "--context",
            "meta",
            "-n",
            "tenants",
            "--no-wait",
        ])
        .expect("parses");
        let Command::Delete(args) = cli.command else { panic!("delete verb expected") };
        assert!(!args.wait());
        assert_eq!(args.cluster.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(args.cluster.context.as_deref(), Some("meta"));
        assert_eq!(args.cluster.namespace.as_deref(), Some("tenants"));
        let Command::Delete(args) = Cli::try_parse_from(["nestor", "delete", "x"]).expect("parses").command
        else {
            panic!("delete verb expected")
        };
        assert!(args.wait());
        assert_eq!(args.timeout, std::time::Duration::from_secs(300));
        assert!(Cli::try_parse_from(["nestor", "wait", "x", "--for", "ready", "--timeout", "soon"]).is_err());
        assert!(
            Cli::try_parse_from(["nestor", "kubeconfig", "x", "--ttl", "1h"]).is_err(),
            "--ttl needs --user"
        );
    }

    #[test]
    fn upgrade_takes_the_target_as_to_or_version() {
        for flag in ["--to", "--version"] {
            let cli = Cli::try_parse_from(["nestor", "upgrade", "team-a", flag, "1.35.4"]).expect(flag);
            let Command::Upgrade(args) = cli.command else { panic!("upgrade verb expected") };
            assert_eq!(args.to, "1.35.4", "{flag}");
        }
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn operator_defaults_enable_leader_election_on_port_8080() {
        let cli = Cli::try_parse_from(["nestor", "operator"]).expect("parses");
        let Command::Operator(args) = cli.command else { panic!("operator verb expected") };
        assert!(args.leader_election());
        assert_eq!(args.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(args.lease_name, "nestor-operator");
        assert_eq!(args.lease_namespace, None);
        assert_eq!(cli.log_format, LogFormat::Text);
    }

    #[test]
    fn last_leader_election_flag_wins() {
        let parse = |flags: &[&str]| {
            let argv = ["nestor", "operator"].iter().chain(flags).copied();
            let Command::Operator(args) = Cli::try_parse_from(argv).expect("parses").command else {
                panic!("operator verb expected")
            };
            args.leader_election()
        };
        assert!(!parse(&["--no-leader-election"]));
        assert!(parse(&["--no-leader-election", "--leader-election"]));
        assert!(!parse(&["--leader-election", "--no-leader-election"]));
    }

    #[test]
    fn log_format_is_global_and_bad_addresses_are_rejected() {
        let cli = Cli::try_parse_from(["nestor", "operator", "--log-format", "json"]).expect("parses");
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["nestor", "operator", "--metrics-addr", "localhost"]).is_err());
    }
}
