//! `warren-loadtest`: drives a running Warren server over real sockets and reports what it cost
//! the server (memory, CPU time) from its `/proc` entries. See README.md for the scenarios.

mod cli;
mod client;
mod procfs;
mod protocol;
mod runtime;
mod scenario;
mod ws;

use clap::Parser;
use cli::{Cli, Scenario};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match procfs::raise_nofile_limit() {
        Ok(limit) => eprintln!("warren-loadtest: open-file limit {limit}"),
        Err(e) => eprintln!("warren-loadtest: cannot raise the open-file limit: {e}"),
    }
    let result = match &cli.scenario {
        Scenario::Idle(args) => scenario::idle::run(args),
        Scenario::ClientEvents(args) => scenario::client_events::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
