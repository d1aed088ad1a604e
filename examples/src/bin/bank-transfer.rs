//! Exactly-once side effects: bank transfers from a topic applied to SQLite
//! accounts, with the debit, the credit and the broker offset commit
//! together or not at all (TwoPhaseCommit). Kill it at any moment; the next
//! start resolves what was in doubt from the decision log.
//!
//!     ferry serve &
//!     cargo run -p ferry-examples --bin bank-transfer -- seed --transfers 500
//!     cargo run -p ferry-examples --bin bank-transfer -- run
//!
//! `FERRY_2PC_FAILPOINT=between-commits:3` (or before-prepare,
//! between-prepares, after-prepares, after-decision, after-commits) kills
//! the process at that step of the third batch.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferry_client::{BatchOutcome, Preset, Semantics, SqlSession, SqlStatement, SqliteParticipant, TwoPhaseCommit, TwoPhaseConfig};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Bank transfers with two-phase commit between SQLite and the broker")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[arg(long, default_value = "transfers")]
    topic: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish transfers between the accounts.
    Seed {
        #[arg(long, default_value_t = 500)]
        transfers: u64,
        #[arg(long, default_value_t = 10)]
        accounts: u64,
    },
    /// Apply the transfers to the database, exactly once.
    Run {
        #[arg(long, default_value = "bank.db")]
        db: PathBuf,
        #[arg(long, default_value = "bank-decisions.log")]
        decision_log: PathBuf,
        #[arg(long, default_value = "bank")]
        group: String,
        #[arg(long, default_value = "bank-transfer-1")]
        transactional_id: String,
        #[arg(long, default_value_t = 10)]
        accounts: u64,
        #[arg(long, default_value_t = 1000)]
        opening_balance: i64,
        #[arg(long, default_value_t = 100)]
        max_batch: usize,
        /// Exit after this long without a transfer.
        #[arg(long, default_value_t = 3000)]
        idle_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Seed { transfers, accounts } => seed(&args.bootstrap_server, &args.topic, transfers, accounts),
        Command::Run { db, decision_log, group, transactional_id, accounts, opening_balance, max_batch, idle_ms } => {
            // Static membership (group.instance.id): a restarted instance takes
            // its old place in the group at once, without a rebalance.
            let preset = Preset::new(Semantics::ExactlyOnce, &args.bootstrap_server)
                .consumer_set("group.instance.id", &transactional_id)
                .transactional_id(transactional_id);
            let mut config = TwoPhaseConfig::new(preset, &group, &[&args.topic], decision_log);
            config.max_batch = max_batch;
            let database = SqliteParticipant::open(&db).with_context(|| format!("open {}", db.display()))?;
            run(config, database, accounts, opening_balance, Duration::from_millis(idle_ms))
        }
    }
}

fn seed(bootstrap: &str, topic: &str, transfers: u64, accounts: u64) -> anyhow::Result<()> {
    ferry_examples::ensure_topic(bootstrap, topic, 2)?;
    let producer: ThreadedProducer<_> =
        Preset::new(Semantics::ExactlyOnce, bootstrap).producer_config().create().context("producer")?;
    for i in 0..transfers {
        let from = i % accounts;
        let to = (i * 7 + 3) % accounts;
        let to = if to == from { (to + 1) % accounts } else { to };
        let body = json!({"id": format!("t-{i}"), "from": format!("acct-{from}"), "to": format!("acct-{to}"), "amount": 1 + (i * 13) % 300})
            .to_string();
        let key = format!("acct-{from}");
        producer.send(BaseRecord::to(topic).key(&key).payload(&body)).map_err(|(e, _)| e).context("send")?;
    }
    producer.flush(Duration::from_secs(30)).context("flush")?;
    ferry_examples::print_summary(json!({"example": "bank-transfer", "seeded": transfers}));
    Ok(())
}

fn transfer_effect(transfer: &serde_json::Value, db: &mut dyn SqlSession) -> Result<Vec<SqlStatement>, String> {
    let id = transfer["id"].as_str().ok_or("transfer without id")?;
    let from = transfer["from"].as_str().ok_or("transfer without from")?;
    let to = transfer["to"].as_str().ok_or("transfer without to")?;
    let amount = transfer["amount"].as_i64().ok_or("transfer without amount")?;
    let balance = db.query_i64("SELECT balance FROM accounts WHERE id = ?1", &[from.into()])?;
    let record = |status: &str| {
        SqlStatement::new(
            "INSERT INTO transfers (id, from_account, to_account, amount, status) VALUES (?1, ?2, ?3, ?4, ?5)",
            vec![id.into(), from.into(), to.into(), amount.into(), status.into()],
        )
    };
    if balance.unwrap_or(0) < amount {
        return Ok(vec![record("rejected")]);
    }
    Ok(vec![
        SqlStatement::new("UPDATE accounts SET balance = balance - ?1 WHERE id = ?2", vec![amount.into(), from.into()]),
        SqlStatement::new("UPDATE accounts SET balance = balance + ?1 WHERE id = ?2", vec![amount.into(), to.into()]),
        record("applied"),
    ])
}

fn run(config: TwoPhaseConfig, database: SqliteParticipant, accounts: u64, opening_balance: i64, idle: Duration) -> anyhow::Result<()> {
    // The schema first: recovery may commit prepared transfers into it.
    database.connection().execute_batch(
        "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0));
         CREATE TABLE IF NOT EXISTS transfers (id TEXT PRIMARY KEY, from_account TEXT NOT NULL,
             to_account TEXT NOT NULL, amount INTEGER NOT NULL, status TEXT NOT NULL);",
    )?;
    for account in 0..accounts {
        database
            .connection()
            .execute("INSERT OR IGNORE INTO accounts (id, balance) VALUES (?1, ?2)", (format!("acct-{account}"), opening_balance))?;
    }
    let mut bank = TwoPhaseCommit::open(config, database).context("open the two-phase-commit coordinator")?;
    let recovery = bank.recovery().clone();
    let (mut batches, mut inputs_committed) = (0u64, 0usize);
    let mut stop = ferry_examples::IdleStop::new(idle);
    while !stop.should_stop() {
        let outcome = bank.process_batch(|message, db| {
            let transfer: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).map_err(|e| format!("bad transfer: {e}"))?;
            transfer_effect(&transfer, db)
        })?;
        match outcome {
            BatchOutcome::Idle => continue,
            BatchOutcome::Committed { inputs, .. } => {
                batches += 1;
                inputs_committed += inputs;
            }
            BatchOutcome::Aborted { reason, .. } => eprintln!("batch aborted: {reason}"),
        }
        stop.touch();
    }
    let db = bank.participant().connection();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0));
    ferry_examples::print_summary(json!({
        "example": "bank-transfer", "semantics": "exactly-once",
        "batches": batches, "inputs_committed": inputs_committed,
        "transfers": count("SELECT COUNT(*) FROM transfers")?,
        "applied": count("SELECT COUNT(*) FROM transfers WHERE status = 'applied'")?,
        "rejected": count("SELECT COUNT(*) FROM transfers WHERE status = 'rejected'")?,
        "total_balance": count("SELECT COALESCE(SUM(balance), 0) FROM accounts")?,
        "recovery": {"committed": recovery.committed, "aborted": recovery.aborted, "broker_redone": recovery.broker_redone},
    }));
    Ok(())
}
