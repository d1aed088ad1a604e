//! Every integration test of the real `ferry` binary, in one test binary:
//! one link instead of one per file (each links rdkafka and Ferry's crates
//! with LTO, which was most of CI's test step). Run one file's tests with
//! a filter on its module: `cargo test --release -p ferry-tests --test
//! integration cluster_join::`.

mod acl;
mod admin;
mod bad_input;
mod cli;
mod cluster;
mod cluster_disk_fault;
mod cluster_join;
mod cluster_leadership;
mod cluster_partition;
mod cluster_reassign;
mod cluster_security;
mod cluster_snapshot;
mod cluster_transactions;
mod cluster_replication;
mod compaction;
mod console_api;
mod crash;
mod delete_records;
mod exactly_once;
mod fetch_limits;
mod groups;
mod observability;
mod offsets_never_go_back;
mod produce_fetch;
mod quotas;
mod recovery;
mod sasl;
mod storage_faults;
mod tls;
mod verify;
