//! `ferry user add|list|delete`: SCRAM users in a stopped broker's data
//! directory, like Kafka's `kafka-storage.sh format --add-scram`. A running
//! broker holds the store's lock; change its users online with
//! `kafka-configs.sh --entity-type users` (AlterUserScramCredentials).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ferry_auth::mechanism::{MAX_ITERATIONS, MIN_ITERATIONS};
use ferry_auth::{Change, ScramCredential, ScramMechanism, UserStore};
use serde_json::json;

use super::{print_table, OutputFormat};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    /// Data directory of the (stopped) broker; users live in DIR/security/users.json.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user, or set its password for a mechanism (PLAIN logins check any
    /// of the user's SCRAM credentials).
    ///
    /// Only a salted, iterated SCRAM credential is stored, never the password.
    /// Example: echo "$PASSWORD" | ferry user add alice --mechanism SCRAM-SHA-512 --password-stdin --data-dir ./data
    Add {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable: one credential each).
        #[arg(long = "mechanism", default_value = "SCRAM-SHA-512")]
        mechanisms: Vec<ScramMechanism>,
        /// Read the password from the first line of standard input (never from the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// PBKDF2 iterations, 4096 to 16384 as Kafka allows.
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
    /// List users with their mechanisms and iterations.
    List,
    /// Delete a user's credentials (all of them, or one mechanism's).
    Delete {
        name: String,
        /// Delete only this mechanism's credential.
        #[arg(long)]
        mechanism: Option<ScramMechanism>,
    },
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    if !args.data_dir.exists() {
        std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    }
    let store = UserStore::open(&args.data_dir)?;
    match args.command {
        UserCommand::Add { name, mechanisms, password_stdin: _, iterations } => add(&store, name, mechanisms, iterations),
        UserCommand::List => {
            list(&store, args.output);
            Ok(())
        }
        UserCommand::Delete { name, mechanism } => delete(&store, name, mechanism),
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_string();
    if password.is_empty() {
        bail!("empty password: give it on standard input, e.g. `echo \"$PASSWORD\" | ferry user add NAME --password-stdin`");
    }
    Ok(password)
}

fn add(store: &UserStore, name: String, mechanisms: Vec<ScramMechanism>, iterations: u32) -> anyhow::Result<()> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        bail!("--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}");
    }
    let password = read_password()?;
    let mut changes = Vec::new();
    for m in &mechanisms {
        let credential = ScramCredential::generate(*m, password.as_bytes(), iterations).context("no randomness for the salt")?;
        changes.push(Change::Upsert { user: name.clone(), mechanism: *m, credential });
    }
    for outcome in store.apply(changes)? {
        outcome?;
    }
    let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
    println!("user {name} set for {} ({iterations} iterations) in {}", names.join(", "), store.path().display());
    Ok(())
}

fn list(store: &UserStore, output: OutputFormat) {
    let users = store.list();
    match output {
        OutputFormat::Json => {
            for (user, creds) in users {
                let creds: Vec<_> = creds.iter().map(|(m, i)| json!({"mechanism": m.name(), "iterations": i})).collect();
                println!("{}", json!({"user": user, "credentials": creds}));
            }
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = users
                .into_iter()
                .map(|(user, creds)| {
                    let creds: Vec<String> = creds.iter().map(|(m, i)| format!("{m}(iterations={i})")).collect();
                    vec![user, creds.join(",")]
                })
                .collect();
            print_table(&["USER", "CREDENTIALS"], &rows);
        }
    }
}

fn delete(store: &UserStore, name: String, mechanism: Option<ScramMechanism>) -> anyhow::Result<()> {
    let mechanisms: Vec<ScramMechanism> = match mechanism {
        Some(m) => vec![m],
        None => store.describe(&name).map(|c| c.into_iter().map(|(m, _)| m).collect()).unwrap_or_default(),
    };
    if mechanisms.is_empty() {
        bail!("no user {name} in {}", store.path().display());
    }
    let changes = mechanisms.iter().map(|m| Change::Delete { user: name.clone(), mechanism: *m }).collect();
    for outcome in store.apply(changes)? {
        outcome?;
    }
    println!("user {name}: deleted {}", mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "));
    Ok(())
}
