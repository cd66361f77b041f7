//! The `nestor` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use nestor::cli::{Cli, error_line};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = nestor::telemetry::init(cli.log_format) {
        eprintln!("{}", error_line(&error.into()));
        return ExitCode::FAILURE;
    }
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_line(&error));
            ExitCode::FAILURE
        }
    }
}
