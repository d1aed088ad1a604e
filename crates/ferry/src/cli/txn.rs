//! `ferry txn list|describe|abort`: find and end hanging transactions.

use anyhow::bail;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, ListTransactionsRequest, ListTransactionsResponse, TopicName, TransactionalId,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::wire::WireClient;
use super::{print_table, ConnectArgs, OutputFormat};

#[derive(Debug, Args)]
pub struct TxnArgs {
    #[command(subcommand)]
    command: TxnCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum TxnCommand {
    /// List transactional ids with their state and age.
    List {
        /// Only transactions open at least this long (hanging ones).
        #[arg(long, default_value_t = 0)]
        min_age_ms: i64,
    },
    /// Show a transaction: state, age, partitions and the last stable offset each holds back.
    Describe { transactional_id: String },
    /// Abort a transaction by fencing its producer (bumps the epoch, as a
    /// new producer with the same transactional.id would).
    Abort { transactional_id: String },
}

struct Described {
    state: String,
    producer_id: i64,
    epoch: i16,
    timeout_ms: i32,
    age_ms: Option<i64>,
    partitions: Vec<(String, i32)>,
}

async fn describe(client: &mut WireClient, ids: Vec<String>) -> anyhow::Result<Vec<(String, Option<Described>)>> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(ids.iter().map(|i| TransactionalId(StrBytes::from_string(i.clone()))).collect());
    let resp: DescribeTransactionsResponse = client.call(ApiKey::DescribeTransactions, 0, &req).await?;
    Ok(resp
        .transaction_states
        .into_iter()
        .map(|s| {
            let id = s.transactional_id.to_string();
            if s.error_code != 0 {
                return (id, None);
            }
            let partitions = s.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic.to_string(), *p))).collect();
            (
                id,
                Some(Described {
                    state: s.transaction_state.to_string(),
                    producer_id: s.producer_id.0,
                    epoch: s.producer_epoch,
                    timeout_ms: s.transaction_timeout_ms,
                    age_ms: (s.transaction_start_time_ms >= 0 && s.transaction_state.as_str() == "Ongoing").then(|| now - s.transaction_start_time_ms),
                    partitions,
                }),
            )
        })
        .collect())
}

/// (last stable offset, high watermark) of a partition.
async fn stable_and_end(client: &mut WireClient, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
    let mut out = [0i64; 2];
    for (i, isolation) in [1i8, 0].into_iter().enumerate() {
        let req = ListOffsetsRequest::default().with_replica_id((-1).into()).with_isolation_level(isolation).with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-1)])]);
        let resp: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 2, &req).await?;
        out[i] = resp.topics.first().and_then(|t| t.partitions.first()).map_or(-1, |p| p.offset);
    }
    Ok((out[0], out[1]))
}

pub async fn run(args: TxnArgs) -> anyhow::Result<()> {
    let mut client = WireClient::connect(&args.connect).await?;
    match args.command {
        TxnCommand::List { min_age_ms } => {
            let list: ListTransactionsResponse = client.call(ApiKey::ListTransactions, 0, &ListTransactionsRequest::default()).await?;
            let ids: Vec<String> = list.transaction_states.iter().map(|s| s.transactional_id.to_string()).collect();
            let described = describe(&mut client, ids).await?;
            let mut rows = Vec::new();
            for (id, d) in described {
                let Some(d) = d else { continue };
                if min_age_ms > 0 && d.age_ms.is_none_or(|a| a < min_age_ms) {
                    continue;
                }
                rows.push((id, d));
            }
            match args.output {
                OutputFormat::Json => {
                    for (id, d) in rows {
                        println!("{}", json!({"transactional_id": id, "state": d.state, "producer_id": d.producer_id, "epoch": d.epoch, "age_ms": d.age_ms, "partitions": d.partitions.len()}));
                    }
                }
                OutputFormat::Text => print_table(
                    &["TRANSACTIONAL-ID", "STATE", "PRODUCER-ID", "EPOCH", "AGE-MS", "PARTITIONS"],
                    &rows
                        .into_iter()
                        .map(|(id, d)| {
                            vec![id, d.state, d.producer_id.to_string(), d.epoch.to_string(), d.age_ms.map_or("-".into(), |a| a.to_string()), d.partitions.len().to_string()]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        TxnCommand::Describe { transactional_id } => {
            let mut described = describe(&mut client, vec![transactional_id.clone()]).await?;
            let Some((_, Some(d))) = described.pop() else { bail!("no transactional id {transactional_id}") };
            let mut parts = Vec::new();
            for (t, p) in &d.partitions {
                let (lso, hw) = stable_and_end(&mut client, t, *p).await?;
                parts.push((t.clone(), *p, lso, hw));
            }
            match args.output {
                OutputFormat::Json => println!(
                    "{}",
                    json!({"transactional_id": transactional_id, "state": d.state, "producer_id": d.producer_id, "epoch": d.epoch,
                           "timeout_ms": d.timeout_ms, "age_ms": d.age_ms,
                           "partitions": parts.iter().map(|(t, p, lso, hw)| json!({"topic": t, "partition": p, "last_stable_offset": lso, "high_watermark": hw, "held_back": hw - lso})).collect::<Vec<_>>()})
                ),
                OutputFormat::Text => {
                    println!(
                        "{transactional_id}: state {}, producer id {} epoch {}, timeout {} ms, age {}",
                        d.state,
                        d.producer_id,
                        d.epoch,
                        d.timeout_ms,
                        d.age_ms.map_or("-".into(), |a| format!("{a} ms"))
                    );
                    println!();
                    print_table(
                        &["TOPIC", "PARTITION", "LAST-STABLE-OFFSET", "HIGH-WATERMARK", "HELD-BACK"],
                        &parts.iter().map(|(t, p, lso, hw)| vec![t.clone(), p.to_string(), lso.to_string(), hw.to_string(), (hw - lso).to_string()]).collect::<Vec<_>>(),
                    );
                }
            }
        }
        TxnCommand::Abort { transactional_id } => {
            let req = InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_string(transactional_id.clone()))))
                .with_transaction_timeout_ms(60_000);
            let resp: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 1, &req).await?;
            if resp.error_code != 0 {
                bail!("the broker refused to abort {transactional_id}: error code {}", resp.error_code);
            }
            println!("{transactional_id}: open transaction aborted; producer fenced (now epoch {})", resp.producer_epoch);
        }
    }
    Ok(())
}
