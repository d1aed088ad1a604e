//! The `ferry` binary.

mod cli;
mod config;
mod serve;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Ferry: a Kafka-compatible broker where at-most-once, at-least-once and
/// exactly-once are each a clear choice.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (Kafka protocol on --listen, data under --data-dir).
    Serve(config::ServeArgs),
    /// Consumer groups: list, describe (members, offsets, lag), reset-offsets, delete.
    Group(cli::group::GroupArgs),
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The broker logs at info; client commands keep librdkafka's chatter out
    // of the way and report failures themselves.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn,librdkafka=off,rdkafka=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(|settings| {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve::run(settings))
        }),
        Command::Group(args) => client_runtime().and_then(|rt| rt.block_on(cli::group::run(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
