//! Every error code an answer carries, for `ferry_request_errors_total`.
//! Handlers set codes at many depths (request, topic, partition, member);
//! reading them off the encoded answer's structure counts them all in one
//! place instead of at every `error_code =` in the handlers.

use kafka_protocol::messages::ResponseKind;

/// Calls `f` with each error code in `body` (zeros included).
pub fn collect(body: &ResponseKind, f: &mut dyn FnMut(i16)) {
    if !data_path(body, f) {
        admin(body, f);
    }
}

/// Produce, fetch, groups and transactions; false if `body` is none of them.
fn data_path(body: &ResponseKind, f: &mut dyn FnMut(i16)) -> bool {
    match body {
        ResponseKind::Produce(r) => r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| f(p.error_code)),
        ResponseKind::Fetch(r) => {
            f(r.error_code);
            r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::OffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            f(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
            for g in &r.groups {
                f(g.error_code);
                g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
            }
        }
        ResponseKind::TxnOffsetCommit(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::AddPartitionsToTxn(r) => {
            f(r.error_code);
            let v3 = r.results_by_topic_v3_and_below.iter();
            let v4 = r.results_by_transaction.iter().flat_map(|t| &t.topic_results);
            v3.chain(v4).flat_map(|t| &t.results_by_partition).for_each(|p| f(p.partition_error_code));
        }
        ResponseKind::FindCoordinator(r) => {
            f(r.error_code);
            r.coordinators.iter().for_each(|c| f(c.error_code));
        }
        ResponseKind::JoinGroup(r) => f(r.error_code),
        ResponseKind::SyncGroup(r) => f(r.error_code),
        ResponseKind::Heartbeat(r) => f(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            f(r.error_code);
            r.members.iter().for_each(|m| f(m.error_code));
        }
        ResponseKind::InitProducerId(r) => f(r.error_code),
        ResponseKind::AddOffsetsToTxn(r) => f(r.error_code),
        ResponseKind::EndTxn(r) => f(r.error_code),
        _ => return false,
    }
    true
}

/// Metadata, topic and config administration, group and transaction listings.
fn admin(body: &ResponseKind, f: &mut dyn FnMut(i16)) {
    match body {
        ResponseKind::Metadata(r) => {
            f(r.error_code);
            for t in &r.topics {
                f(t.error_code);
                t.partitions.iter().for_each(|p| f(p.error_code));
            }
        }
        ResponseKind::ApiVersions(r) => f(r.error_code),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteRecords(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|t| f(t.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::ListGroups(r) => f(r.error_code),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| f(g.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| f(g.error_code)),
        ResponseKind::OffsetDelete(r) => {
            f(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        ResponseKind::DescribeTransactions(r) => r.transaction_states.iter().for_each(|t| f(t.error_code)),
        ResponseKind::ListTransactions(r) => f(r.error_code),
        ResponseKind::DescribeProducers(r) => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code)),
        ResponseKind::DescribeCluster(r) => f(r.error_code),
        ResponseKind::DescribeLogDirs(r) => {
            f(r.error_code);
            r.results.iter().for_each(|d| f(d.error_code));
        }
        _ => {}
    }
}
