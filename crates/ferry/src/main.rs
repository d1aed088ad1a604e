//! The `ferry` binary.

mod cli;
mod cluster_sync;
mod config;
mod serve;

use clap::{Parser, Subcommand};

/// Untrusted array counts in requests must not abort the broker: see
/// `ferry_kafka::alloc`.
#[global_allocator]
static ALLOCATOR: ferry_kafka::alloc::NoReserveLargeAlloc = ferry_kafka::alloc::NoReserveLargeAlloc;
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
    /// Produce records from stdin (one per line) with a delivery semantics.
    Produce(cli::records::ProduceArgs),
    /// Consume records in a group; the semantics decide when offsets are committed.
    Consume(cli::consume::ConsumeArgs),
    /// Topics: create, list, describe (partitions, offsets, configs), alter, delete.
    Topic(cli::topic::TopicArgs),
    /// Consumer groups: list, describe (members, offsets, lag), reset-offsets, delete.
    Group(cli::group::GroupArgs),
    /// Transactions: list, describe (state, age, partitions, LSO held back), abort hanging ones.
    Txn(cli::txn::TxnArgs),
    /// Add, list and remove ACLs of a running broker (like kafka-acls.sh).
    Acl(cli::acl::AclArgs),
    /// SCRAM users of a stopped broker's data directory: add, list, delete
    /// (online: kafka-configs.sh --entity-type users).
    User(cli::user::UserArgs),
    /// Prove the delivery semantics: run each under faults (broker SIGKILL/SIGSTOP) and count
    /// what was lost, duplicated or read uncommitted.
    Verify(cli::verify::VerifyArgs),
    /// Measure produce (and consume) throughput and latency against a running broker,
    /// with a delivery semantics. Side by side with other brokers: bench/peers/run.sh.
    Bench(cli::bench::BenchArgs),
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
        Command::Produce(args) => cli::records::produce(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Consume(args) => cli::consume::consume(args),
        Command::Topic(args) => client_runtime().and_then(|rt| rt.block_on(cli::topic::run(args))),
        Command::Group(args) => client_runtime().and_then(|rt| rt.block_on(cli::group::run(args))),
        Command::Txn(args) => client_runtime().and_then(|rt| rt.block_on(cli::txn::run(args))),
        Command::Acl(args) => client_runtime().and_then(|rt| rt.block_on(cli::acl::run(args))),
        Command::User(args) => cli::user::run(args),
        Command::Verify(args) => match cli::verify::run(args) {
            Ok(cli::verify::Verdict::Held) => Ok(()),
            Ok(cli::verify::Verdict::Broken) => {
                eprintln!("ferry verify: a promise was broken (see the table)");
                return std::process::ExitCode::from(2);
            }
            Ok(cli::verify::Verdict::Inconclusive) => {
                eprintln!("ferry verify: inconclusive: a requested fault kind was never injected (see the table)");
                return std::process::ExitCode::from(3);
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
