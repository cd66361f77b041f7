//! The `nestor` command line: one subcommand per verb, each in its own module with
//! its arguments and its `run`. `main.rs` only parses and reports errors.
//!
//! More verbs (create, get, describe, kubeconfig, wait, upgrade, delete) slot in
//! as new [`Command`] variants and modules.

pub mod completions;
pub mod crd;
pub mod operator;

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
}

impl Cli {
    /// Runs the chosen verb.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Operator(args) => operator::run(args).await,
            Command::Crd => crd::run(),
            Command::Completions(args) => completions::run(&args),
        }
    }
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
