//! `ferry group list|describe|reset-offsets|delete`.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::{print_table, ConnectArgs, OutputFormat};

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List consumer groups with their state.
    List,
    /// Show a group's members, assignments, committed offsets and lag.
    Describe { group: String },
    /// Move a group's committed offsets (the group must have no members).
    ResetOffsets {
        group: String,
        /// Topic whose partitions to reset.
        #[arg(long)]
        topic: String,
        /// Reset to the first offset still in the log.
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        /// Reset to the log end (skip everything there now).
        #[arg(long, conflicts_with_all = ["to_earliest", "to_offset"])]
        to_latest: bool,
        /// Reset every partition to this offset.
        #[arg(long, conflicts_with_all = ["to_earliest", "to_latest"])]
        to_offset: Option<i64>,
        /// Apply the change; without it the plan is only printed.
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group and its committed offsets (the group must have no members).
    Delete { group: String },
}

/// (topic, partitions) of a consumer-protocol assignment.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Option<&'a [u8]> {
        let s = b.get(*pos..*pos + n)?;
        *pos += n;
        Some(s)
    }
    let mut out = Vec::new();
    let mut pos = 2usize;
    let Some(count) = take(bytes, &mut pos, 4).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]])) else { return out };
    for _ in 0..count.clamp(0, 100_000) {
        let Some(len) = take(bytes, &mut pos, 2).map(|s| i16::from_be_bytes([s[0], s[1]]).max(0) as usize) else { break };
        let Some(name) = take(bytes, &mut pos, len) else { break };
        let Some(n) = take(bytes, &mut pos, 4).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]])) else { break };
        let mut parts = Vec::new();
        for _ in 0..n.clamp(0, 100_000) {
            let Some(p) = take(bytes, &mut pos, 4) else { break };
            parts.push(i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
        }
        out.push((String::from_utf8_lossy(name).into_owned(), parts));
    }
    out
}

fn consumer(connect: &ConnectArgs, group: &str) -> anyhow::Result<BaseConsumer> {
    connect
        .client_config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka client")
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let connect = &args.connect;
    match args.command {
        GroupCommand::List => {
            let c = consumer(connect, "ferry-cli")?;
            let list = c.fetch_group_list(None, connect.timeout()).map_err(|e| connect.explain(e))?;
            let mut rows: Vec<Vec<String>> = list
                .groups()
                .iter()
                .map(|g| vec![g.name().to_string(), g.state().to_string(), g.protocol_type().to_string(), g.members().len().to_string()])
                .collect();
            rows.sort();
            match args.output {
                OutputFormat::Json => {
                    for r in rows {
                        println!("{}", json!({"group": r[0], "state": r[1], "protocol_type": r[2], "members": r[3].parse::<usize>().unwrap_or(0)}));
                    }
                }
                OutputFormat::Text => print_table(&["GROUP", "STATE", "PROTOCOL-TYPE", "MEMBERS"], &rows),
            }
        }
        GroupCommand::Describe { group } => describe(connect, &group, args.output)?,
        GroupCommand::ResetOffsets { group, topic, to_earliest, to_latest, to_offset, execute } => {
            if !(to_earliest || to_latest || to_offset.is_some()) {
                bail!("say where to: --to-earliest, --to-latest or --to-offset N");
            }
            let c = consumer(connect, &group)?;
            let md = c.fetch_metadata(Some(&topic), connect.timeout()).map_err(|e| connect.explain(e))?;
            let t = md.topics().first().context("no metadata for the topic")?;
            if t.error().is_some() || t.partitions().is_empty() {
                bail!("topic {topic} does not exist");
            }
            let mut tpl = TopicPartitionList::new();
            let mut rows = Vec::new();
            for p in t.partitions() {
                let (low, high) = c.fetch_watermarks(&topic, p.id(), connect.timeout()).map_err(|e| connect.explain(e))?;
                let target = if to_earliest { low } else if to_latest { high } else { to_offset.unwrap_or(0).clamp(low, high) };
                tpl.add_partition_offset(&topic, p.id(), Offset::Offset(target))?;
                rows.push(vec![topic.clone(), p.id().to_string(), target.to_string()]);
            }
            print_table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
            if execute {
                c.commit(&tpl, CommitMode::Sync).map_err(|e| {
                    anyhow::anyhow!("reset refused ({e}); a group with active members cannot be reset: stop its consumers first")
                })?;
                println!("offsets of group {group} reset");
            } else {
                println!("(dry run: add --execute to apply)");
            }
        }
        GroupCommand::Delete { group } => {
            let admin: AdminClient<DefaultClientContext> = connect.client_config()?.create().context("cannot create a Kafka client")?;
            let r = admin.delete_groups(&[&group], &AdminOptions::new()).await.map_err(|e| connect.explain(e))?;
            match r.first() {
                Some(Ok(_)) => println!("group {group} deleted"),
                Some(Err((_, code))) => bail!("cannot delete group {group}: {code}"),
                None => bail!("no answer for group {group}"),
            }
        }
    }
    Ok(())
}

fn describe(connect: &ConnectArgs, group: &str, output: OutputFormat) -> anyhow::Result<()> {
    let c = consumer(connect, group)?;
    let list = c.fetch_group_list(Some(group), connect.timeout()).map_err(|e| connect.explain(e))?;
    let info = list.groups().first().context("no such group")?;
    let mut assigned: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in info.members() {
        for (topic, parts) in parse_assignment(m.assignment().unwrap_or_default()) {
            for p in parts {
                assigned.insert((topic.clone(), p), m.id().to_string());
            }
        }
    }
    // Committed offsets for every partition of every topic the broker has.
    let md = c.fetch_metadata(None, connect.timeout()).map_err(|e| connect.explain(e))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let committed = c.committed_offsets(tpl, connect.timeout()).map_err(|e| connect.explain(e))?;
    let mut rows = Vec::new();
    for e in committed.elements() {
        let Offset::Offset(offset) = e.offset() else {
            if !assigned.contains_key(&(e.topic().to_string(), e.partition())) {
                continue;
            }
            rows.push((e.topic().to_string(), e.partition(), None, None));
            continue;
        };
        let (_, high) = c.fetch_watermarks(e.topic(), e.partition(), connect.timeout()).map_err(|e| connect.explain(e))?;
        rows.push((e.topic().to_string(), e.partition(), Some(offset), Some(high)));
    }
    match output {
        OutputFormat::Json => {
            let members: Vec<_> = info
                .members()
                .iter()
                .map(|m| json!({"member_id": m.id(), "client_id": m.client_id(), "host": m.client_host(), "assignment": parse_assignment(m.assignment().unwrap_or_default())}))
                .collect();
            let offsets: Vec<_> = rows
                .iter()
                .map(|(t, p, o, h)| json!({"topic": t, "partition": p, "committed_offset": o, "log_end_offset": h, "lag": o.zip(*h).map(|(o, h)| h - o), "member": assigned.get(&(t.clone(), *p))}))
                .collect();
            println!("{}", json!({"group": group, "state": info.state(), "protocol": info.protocol(), "members": members, "offsets": offsets}));
        }
        OutputFormat::Text => {
            println!("group {group}: state {}, protocol {}, {} member(s)", info.state(), info.protocol(), info.members().len());
            println!();
            print_table(
                &["TOPIC", "PARTITION", "COMMITTED-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER"],
                &rows
                    .iter()
                    .map(|(t, p, o, h)| {
                        vec![
                            t.clone(),
                            p.to_string(),
                            o.map_or("-".into(), |o| o.to_string()),
                            h.map_or("-".into(), |h| h.to_string()),
                            o.zip(*h).map_or("-".into(), |(o, h)| (h - o).to_string()),
                            assigned.get(&(t.clone(), *p)).cloned().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    Ok(())
}
