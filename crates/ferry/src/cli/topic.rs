//! `ferry topic create|list|describe|alter|delete|delete-records`.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::json;

use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::wire::WireClient;
use super::{print_table, ConnectArgs, OutputFormat};

#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition; -1 takes the broker's --default-replication-factor.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i32,
        /// A topic config, as Kafka names it (repeatable), e.g. --config retention.ms=60000.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics with their partition counts.
    List,
    /// Show a topic's partitions, offsets and configs.
    Describe { name: String },
    /// Set topic configs (the others keep their values).
    Alter {
        name: String,
        #[arg(long = "config", value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Delete a partition's records below an offset, as kafka-delete-records.sh does.
    ///
    /// Moves the partition's log start offset up to --offset: records below
    /// it can no longer be read (consumers starting earlier are reset by their
    /// auto.offset.reset), and whole segments below it are deleted from disk.
    /// The log start never moves back: a lower offset than the current start
    /// changes nothing. Prints the partition's log start afterwards.
    #[command(name = "delete-records")]
    DeleteRecords {
        /// Topic whose records to delete.
        #[arg(long)]
        topic: String,
        /// Partition of the topic.
        #[arg(long, default_value_t = 0)]
        partition: i32,
        /// New log start offset; -1 means the high watermark (delete everything).
        #[arg(long, allow_hyphen_values = true)]
        offset: i64,
    },
}

fn parse_configs(configs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    configs
        .iter()
        .map(|c| c.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).with_context(|| format!("`{c}` is not KEY=VALUE")))
        .collect()
}

pub async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let connect = &args.connect;
    let admin: AdminClient<DefaultClientContext> = connect.client_config()?.create().context("cannot create a Kafka client")?;
    let opts = AdminOptions::new().request_timeout(Some(connect.timeout()));
    match args.command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let configs = parse_configs(&configs)?;
            let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(replication_factor));
            for (k, v) in &configs {
                topic = topic.set(k, v);
            }
            let r = admin.create_topics([&topic], &opts).await.map_err(|e| connect.explain(e))?;
            match r.first() {
                Some(Ok(_)) => println!("topic {name} created with {partitions} partition(s)"),
                Some(Err((_, code))) => bail!("cannot create topic {name}: {code}"),
                None => bail!("no answer for topic {name}"),
            }
        }
        TopicCommand::List => {
            let md = admin.inner().fetch_metadata(None, connect.timeout()).map_err(|e| connect.explain(e))?;
            let mut rows: Vec<(String, usize)> = md.topics().iter().map(|t| (t.name().to_string(), t.partitions().len())).collect();
            rows.sort();
            match args.output {
                OutputFormat::Json => rows.iter().for_each(|(n, p)| println!("{}", json!({"topic": n, "partitions": p}))),
                OutputFormat::Text => print_table(&["TOPIC", "PARTITIONS"], &rows.iter().map(|(n, p)| vec![n.clone(), p.to_string()]).collect::<Vec<_>>()),
            }
        }
        TopicCommand::Describe { name } => {
            let md = admin.inner().fetch_metadata(Some(&name), connect.timeout()).map_err(|e| connect.explain(e))?;
            let t = md.topics().first().context("no metadata for the topic")?;
            if t.error().is_some() || t.partitions().is_empty() {
                bail!("topic {name} does not exist");
            }
            let mut parts = Vec::new();
            for p in t.partitions() {
                let (low, high) = admin.inner().fetch_watermarks(&name, p.id(), connect.timeout()).map_err(|e| connect.explain(e))?;
                parts.push((p.id(), low, high, p.leader(), p.replicas().to_vec(), p.isr().to_vec()));
            }
            let ids = |v: &[i32]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
            let described = admin.describe_configs([&ResourceSpecifier::Topic(&name)], &opts).await.map_err(|e| connect.explain(e))?;
            let mut configs = BTreeMap::new();
            if let Some(Ok(resource)) = described.first() {
                for e in &resource.entries {
                    configs.insert(e.name.clone(), (e.value.clone().unwrap_or_default(), e.is_default));
                }
            }
            match args.output {
                OutputFormat::Json => println!(
                    "{}",
                    json!({"topic": name, "partitions": parts.iter().map(|(p, l, h, leader, replicas, isr)| json!({"partition": p, "log_start_offset": l, "high_watermark": h, "leader": leader, "replicas": replicas, "isr": isr})).collect::<Vec<_>>(),
                           "configs": configs.iter().map(|(k, (v, d))| (k.clone(), json!({"value": v, "default": d}))).collect::<serde_json::Map<_, _>>()})
                ),
                OutputFormat::Text => {
                    print_table(
                        &["PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START-OFFSET", "HIGH-WATERMARK"],
                        &parts
                            .iter()
                            .map(|(p, l, h, leader, replicas, isr)| vec![p.to_string(), leader.to_string(), ids(replicas), ids(isr), l.to_string(), h.to_string()])
                            .collect::<Vec<_>>(),
                    );
                    println!();
                    print_table(
                        &["CONFIG", "VALUE", "SOURCE"],
                        &configs.iter().map(|(k, (v, d))| vec![k.clone(), v.clone(), if *d { "default".into() } else { "topic".into() }]).collect::<Vec<_>>(),
                    );
                }
            }
        }
        TopicCommand::Alter { name, configs } => {
            // AlterConfigs replaces the whole set: start from the explicit ones.
            let described = admin.describe_configs([&ResourceSpecifier::Topic(&name)], &opts).await.map_err(|e| connect.explain(e))?;
            let mut merged: BTreeMap<String, String> = BTreeMap::new();
            if let Some(Ok(resource)) = described.first() {
                for e in resource.entries.iter().filter(|e| !e.is_default) {
                    merged.insert(e.name.clone(), e.value.clone().unwrap_or_default());
                }
            } else {
                bail!("topic {name} does not exist");
            }
            merged.extend(parse_configs(&configs)?);
            let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&name));
            for (k, v) in &merged {
                alter = alter.set(k, v);
            }
            admin.alter_configs([&alter], &opts).await.map_err(|e| connect.explain(e))?;
            // rust-rdkafka drops per-resource errors: read back to report the truth.
            let check = admin.describe_configs([&ResourceSpecifier::Topic(&name)], &opts).await.map_err(|e| connect.explain(e))?;
            if let Some(Ok(resource)) = check.first() {
                for (k, v) in parse_configs(&configs)? {
                    let now = resource.get(&k).and_then(|e| e.value.clone());
                    if now.as_deref() != Some(v.as_str()) {
                        bail!("the broker refused {k}={v} (it is still {})", now.unwrap_or_else(|| "unset".into()));
                    }
                }
            }
            println!("topic {name} altered");
        }
        TopicCommand::DeleteRecords { topic, partition, offset } => delete_records(connect, args.output, &topic, partition, offset).await?,
        TopicCommand::Delete { name } => {
            let r = admin.delete_topics(&[&name], &opts).await.map_err(|e| connect.explain(e))?;
            match r.first() {
                Some(Ok(_)) => println!("topic {name} deleted"),
                Some(Err((_, code))) => bail!("cannot delete topic {name}: {code}"),
                None => bail!("no answer for topic {name}"),
            }
        }
    }
    Ok(())
}

/// DeleteRecords over the Kafka protocol (librdkafka's admin API is not
/// exposed by rust-rdkafka).
async fn delete_records(connect: &ConnectArgs, output: OutputFormat, topic: &str, partition: i32, offset: i64) -> anyhow::Result<()> {
    if offset < -1 {
        bail!("--offset must be an offset (0 or more) or -1 for the high watermark");
    }
    let req = DeleteRecordsRequest::default().with_timeout_ms(connect.request_timeout_ms.min(i32::MAX as u64) as i32).with_topics(vec![
        DeleteRecordsTopic::default().with_name(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(vec![
            DeleteRecordsPartition::default().with_partition_index(partition).with_offset(offset),
        ]),
    ]);
    let mut client = WireClient::connect(connect).await?;
    let resp: DeleteRecordsResponse = client.call(ApiKey::DeleteRecords, 2, &req).await?;
    let result = resp.topics.first().and_then(|t| t.partitions.first()).context("the broker sent no result for the partition")?;
    match result.error_code {
        0 => {}
        1 => bail!("offset {offset} is above the high watermark of {topic}-{partition}"),
        3 => bail!("topic {topic} partition {partition} does not exist"),
        code => bail!("cannot delete records of {topic}-{partition}: Kafka error code {code}"),
    }
    match output {
        OutputFormat::Json => println!("{}", json!({"topic": topic, "partition": partition, "log_start_offset": result.low_watermark})),
        OutputFormat::Text => println!("{topic}-{partition}: log start offset is now {}", result.low_watermark),
    }
    Ok(())
}

/// Creates `name` with `partitions` partitions unless it exists.
pub async fn ensure(connect: &ConnectArgs, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = connect.client_config()?.create().context("cannot create a Kafka client")?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(connect.timeout()));
    let result = admin.create_topics([&topic], &opts).await.map_err(|e| connect.explain(e))?;
    match result.into_iter().next() {
        Some(Ok(_)) | Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
        Some(Err((_, code))) => bail!("cannot create topic {name}: {code}"),
        None => bail!("cannot create topic {name}: no answer"),
    }
}
