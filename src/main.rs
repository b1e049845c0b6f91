//! `gatehouse`: one binary for every way Gatehouse runs.
//!
//! - `gatehouse` — everything in one process with the embedded default
//!   (SQLite under `--data-dir`, the in-process bus, no servers to install).
//! - `gatehouse serve <service>` — one service against PostgreSQL, Kafka and
//!   Redis, as in production.
//! - `gatehouse migrate`, `gatehouse rebuild <projection>`, `gatehouse bench …`,
//!   `gatehouse openapi [--check]`.

mod bench;
mod cli;
mod embedded;
mod openapi;
mod server;

use clap::Parser;

use crate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => embedded::run(cli.embedded).await,
        Some(Command::Serve(args)) => server::serve(args).await,
        Some(Command::Migrate(args)) => server::migrate(args).await,
        Some(Command::Rebuild(args)) => server::rebuild(args).await,
        Some(Command::Bench(args)) => bench::run(args).await,
        Some(Command::Openapi(args)) => openapi::run(&args.dir, args.check),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
