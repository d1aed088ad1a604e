//! `ferry acl add|list|remove`: ACLs of a running broker over the Kafka
//! protocol (CreateAcls, DescribeAcls, DeleteAcls), with kafka-acls.sh's
//! flags. The broker must run with `--acls-enable true`, and the caller
//! must be allowed to ALTER (add, remove) or DESCRIBE (list) the cluster.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ferry_auth::acl::{AclBinding, Operation, PatternType, Permission, ResourceType, CLUSTER_NAME};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::wire::WireClient;
use super::{print_table, ConnectArgs, OutputFormat};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
ferry acl add --allow-principal User:alice --operation Write --topic orders\n  \
ferry acl add --allow-principal User:app --operation Read --group app- --resource-pattern-type prefixed\n  \
ferry acl add --allow-principal User:tx --operation Write --transactional-id tx-1\n  \
ferry acl add --deny-principal User:mallory --operation All --topic '*'\n  \
ferry acl list --topic orders\n  \
ferry acl remove --allow-principal User:alice --operation Write --topic orders\n\n\
The broker must run with --acls-enable true; the caller must be allowed ALTER \
(add, remove) or DESCRIBE (list) on the cluster, e.g. be one of --super-users.")]
pub struct AclArgs {
    #[command(subcommand)]
    command: AclCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Add ACLs: every principal × operation × resource given.
    Add(Selection),
    /// List ACLs matching the selection (all without one).
    List(Selection),
    /// Remove the ACLs matching the selection.
    Remove(Selection),
}

/// kafka-acls.sh's flags.
#[derive(Debug, Args, Clone)]
struct Selection {
    /// Principal allowed, e.g. User:alice (User:* is everyone); repeatable.
    #[arg(long)]
    allow_principal: Vec<String>,
    /// Principal denied; repeatable. A DENY wins over any ALLOW.
    #[arg(long)]
    deny_principal: Vec<String>,
    /// Host (an IP address, * for any) the ACL applies to [default: *].
    #[arg(long)]
    host: Option<String>,
    /// Operation: Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All; repeatable [default for add: All].
    #[arg(long)]
    operation: Vec<String>,
    /// Topic name (or prefix with --resource-pattern-type prefixed; * for all); repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// Consumer group id (or prefix); repeatable.
    #[arg(long)]
    group: Vec<String>,
    /// Transactional id (or prefix); repeatable.
    #[arg(long)]
    transactional_id: Vec<String>,
    /// The cluster resource (kafka-cluster).
    #[arg(long)]
    cluster: bool,
    /// literal or prefixed (add); also any or match (list, remove) [default: literal; any for list/remove].
    #[arg(long)]
    resource_pattern_type: Option<String>,
}

impl Selection {
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let named = |rt: ResourceType, names: &[String]| names.iter().map(move |n| (rt, n.clone())).collect::<Vec<_>>();
        let mut out = named(ResourceType::Topic, &self.topic);
        out.extend(named(ResourceType::Group, &self.group));
        out.extend(named(ResourceType::TransactionalId, &self.transactional_id));
        if self.cluster {
            out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        out
    }

    fn principals(&self) -> Vec<(String, Permission)> {
        let allow = self.allow_principal.iter().map(|p| (p.clone(), Permission::Allow));
        allow.chain(self.deny_principal.iter().map(|p| (p.clone(), Permission::Deny))).collect()
    }

    fn operations(&self) -> anyhow::Result<Vec<Operation>> {
        self.operation.iter().map(|o| o.parse::<Operation>().map_err(anyhow::Error::from)).collect()
    }

    /// The ACLs `add` creates, checked here for a clear message.
    fn bindings(&self) -> anyhow::Result<Vec<AclBinding>> {
        let pattern_type = match self.resource_pattern_type.as_deref().unwrap_or("literal").parse::<PatternType>()? {
            PatternType::Match => bail!("--resource-pattern-type must be literal or prefixed when adding"),
            p => p,
        };
        let (resources, principals) = (self.resources(), self.principals());
        if resources.is_empty() || principals.is_empty() {
            bail!("name a resource (--topic, --group, --transactional-id or --cluster) and a principal (--allow-principal or --deny-principal)");
        }
        let mut operations = self.operations()?;
        if operations.is_empty() {
            operations.push(Operation::All);
        }
        let host = self.host.clone().unwrap_or_else(|| "*".into());
        let mut out = Vec::new();
        for (rt, name) in &resources {
            for (principal, permission) in &principals {
                for op in &operations {
                    let acl = AclBinding { resource_type: *rt, pattern_type, name: name.clone(), principal: principal.clone(), host: host.clone(), operation: *op, permission: *permission };
                    acl.validate().with_context(|| format!("{acl}"))?;
                    out.push(acl);
                }
            }
        }
        Ok(out)
    }

    /// Filters for list and remove: one per resource (or one for all),
    /// narrowed by principal, operation and host when given.
    fn filters(&self) -> anyhow::Result<Vec<DeleteAclsFilter>> {
        let pattern = match self.resource_pattern_type.as_deref() {
            None | Some("any") | Some("ANY") => 1,
            Some(p) => p.parse::<PatternType>()?.code(),
        };
        let resources: Vec<(i8, Option<String>)> = match self.resources() {
            r if r.is_empty() => vec![(1, None)],
            r => r.into_iter().map(|(rt, n)| (rt.code(), Some(n))).collect(),
        };
        let principals: Vec<(Option<String>, i8)> = match self.principals() {
            p if p.is_empty() => vec![(None, 1)],
            p => p.into_iter().map(|(p, perm)| (Some(p), perm.code())).collect(),
        };
        let operations: Vec<i8> = match self.operations()? {
            o if o.is_empty() => vec![1],
            o => o.into_iter().map(Operation::code).collect(),
        };
        let s = |x: &Option<String>| x.clone().map(StrBytes::from_string);
        let mut out = Vec::new();
        for (rt, name) in &resources {
            for (principal, permission) in &principals {
                for op in &operations {
                    out.push(
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(*rt)
                            .with_resource_name_filter(s(name))
                            .with_pattern_type_filter(pattern)
                            .with_principal_filter(s(principal))
                            .with_host_filter(s(&self.host))
                            .with_operation(*op)
                            .with_permission_type(*permission),
                    );
                }
            }
        }
        Ok(out)
    }
}

fn describe_request(f: &DeleteAclsFilter) -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(f.resource_type_filter)
        .with_resource_name_filter(f.resource_name_filter.clone())
        .with_pattern_type_filter(f.pattern_type_filter)
        .with_principal_filter(f.principal_filter.clone())
        .with_host_filter(f.host_filter.clone())
        .with_operation(f.operation)
        .with_permission_type(f.permission_type)
}

/// A wire ACL back in the model's terms, for printing.
fn row(rt: i8, name: &str, pt: i8, principal: &str, host: &str, op: i8, perm: i8) -> Vec<String> {
    let label = |r: Result<String, ferry_auth::acl::AclError>| r.unwrap_or_else(|_| "?".into());
    vec![
        principal.to_string(),
        label(Permission::from_code(perm).map(|p| p.to_string())),
        label(Operation::from_code(op).map(|o| o.to_string())),
        label(ResourceType::from_code(rt).map(|r| r.to_string())),
        label(PatternType::from_code(pt).map(|p| p.to_string())),
        name.to_string(),
        host.to_string(),
    ]
}

const HEADER: [&str; 7] = ["PRINCIPAL", "PERMISSION", "OPERATION", "RESOURCE", "PATTERN", "NAME", "HOST"];

fn print(rows: Vec<Vec<String>>, output: OutputFormat) {
    match output {
        OutputFormat::Text => print_table(&HEADER, &rows),
        OutputFormat::Json => {
            for r in rows {
                let fields: serde_json::Map<String, serde_json::Value> = HEADER.iter().zip(r).map(|(h, v)| (h.to_lowercase(), json!(v))).collect();
                println!("{}", serde_json::Value::Object(fields));
            }
        }
    }
}

fn check(code: i16, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code != 0 {
        bail!("the broker refused (error {code}): {}", message.map(|m| m.to_string()).unwrap_or_default());
    }
    Ok(())
}

pub async fn run(args: AclArgs) -> anyhow::Result<()> {
    let mut client = WireClient::connect(&args.connect).await?;
    match &args.command {
        AclCommand::Add(sel) => {
            let acls = sel.bindings()?;
            let creations = acls.iter().map(|a| {
                AclCreation::default()
                    .with_resource_type(a.resource_type.code())
                    .with_resource_name(StrBytes::from_string(a.name.clone()))
                    .with_resource_pattern_type(a.pattern_type.code())
                    .with_principal(StrBytes::from_string(a.principal.clone()))
                    .with_host(StrBytes::from_string(a.host.clone()))
                    .with_operation(a.operation.code())
                    .with_permission_type(a.permission.code())
            });
            let req = CreateAclsRequest::default().with_creations(creations.collect());
            let resp: CreateAclsResponse = client.call(ApiKey::CreateAcls, 3, &req).await?;
            for (acl, r) in acls.iter().zip(&resp.results) {
                check(r.error_code, r.error_message.as_ref()).with_context(|| format!("adding {acl}"))?;
            }
            let rows = acls.iter().map(|a| row(a.resource_type.code(), &a.name, a.pattern_type.code(), &a.principal, &a.host, a.operation.code(), a.permission.code()));
            print(rows.collect(), args.output);
        }
        AclCommand::List(sel) => {
            let mut rows = Vec::new();
            for f in sel.filters()? {
                let resp: DescribeAclsResponse = client.call(ApiKey::DescribeAcls, 3, &describe_request(&f)).await?;
                check(resp.error_code, resp.error_message.as_ref())?;
                for r in &resp.resources {
                    for a in &r.acls {
                        rows.push(row(r.resource_type, &r.resource_name, r.pattern_type, &a.principal, &a.host, a.operation, a.permission_type));
                    }
                }
            }
            rows.sort();
            rows.dedup();
            print(rows, args.output);
        }
        AclCommand::Remove(sel) => {
            let filters = sel.filters()?;
            let req = DeleteAclsRequest::default().with_filters(filters);
            let resp: DeleteAclsResponse = client.call(ApiKey::DeleteAcls, 3, &req).await?;
            let mut rows = Vec::new();
            for r in &resp.filter_results {
                check(r.error_code, r.error_message.as_ref())?;
                for a in &r.matching_acls {
                    rows.push(row(a.resource_type, &a.resource_name, a.pattern_type, &a.principal, &a.host, a.operation, a.permission_type));
                }
            }
            if rows.is_empty() && args.output == OutputFormat::Text {
                eprintln!("no ACL matched");
            }
            print(rows, args.output);
        }
    }
    Ok(())
}
