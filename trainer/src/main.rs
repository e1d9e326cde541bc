//! The `tether` command line. Errors reach the user as one sentence with a hint, never a
//! backtrace.

use std::process::ExitCode;

use clap::Parser;
use tether_trainer::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
