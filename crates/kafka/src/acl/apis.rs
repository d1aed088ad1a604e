//! CreateAcls, DescribeAcls and DeleteAcls (kafka-acls.sh, every
//! AdminClient), with Kafka's errors: SECURITY_DISABLED without
//! `--acls-enable`, CLUSTER_AUTHORIZATION_FAILED for a caller that may not
//! ALTER (create, delete) or DESCRIBE (describe) the cluster,
//! INVALID_REQUEST for a malformed ACL or filter. Changes are written
//! through on the blocking pool before they are answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_auth::acl::{AclBinding, AclError, AclFilter, Authorizer, Operation, PatternFilter, PatternType, Permission, ResourceType};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse};

use crate::codes::{CLUSTER_AUTHORIZATION_FAILED, INVALID_REQUEST, KAFKA_STORAGE_ERROR, NONE, SECURITY_DISABLED};
use crate::handlers::str_bytes;
use crate::server::Context;

const DISABLED: &str = "No Authorizer is configured on the broker (start it with --acls-enable true)";

/// The authorizer, or the error every result carries.
fn authorizer(ctx: &Context, op: Operation) -> Result<Arc<Authorizer>, (i16, String)> {
    let Some(a) = &ctx.acls else { return Err((SECURITY_DISABLED, DISABLED.into())) };
    if !super::cluster(ctx, op) {
        return Err((CLUSTER_AUTHORIZATION_FAILED, format!("Cluster authorization failed: {op} on the cluster is not allowed")));
    }
    Ok(a.clone())
}

fn binding(c: &AclCreation) -> Result<AclBinding, AclError> {
    Ok(AclBinding {
        resource_type: ResourceType::from_code(c.resource_type)?,
        pattern_type: PatternType::from_code(c.resource_pattern_type)?,
        name: c.resource_name.to_string(),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation)?,
        permission: Permission::from_code(c.permission_type)?,
    })
}

type FilterFields<'a> = (i8, Option<&'a str>, i8, Option<&'a str>, Option<&'a str>, i8, i8);

fn filter((rt, name, pattern, principal, host, op, perm): FilterFields) -> Result<AclFilter, AclError> {
    let f = AclFilter {
        resource_type: ResourceType::from_filter_code(rt)?,
        name: name.map(str::to_string),
        pattern: PatternFilter::from_code(pattern)?,
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation: Operation::from_filter_code(op)?,
        permission: Permission::from_filter_code(perm)?,
    };
    f.validate()?;
    Ok(f)
}

pub async fn create(ctx: &Context, r: CreateAclsRequest) -> CreateAclsResponse {
    let result = |(code, message): (i16, Option<String>)| AclCreationResult::default().with_error_code(code).with_error_message(message.map(str_bytes));
    let all = |code: i16, message: String| {
        CreateAclsResponse::default().with_results(r.creations.iter().map(|_| result((code, Some(message.clone())))).collect())
    };
    let authorizer = match authorizer(ctx, Operation::Alter) {
        Ok(a) => a,
        Err((code, message)) => return all(code, message),
    };
    let parsed: Vec<Result<AclBinding, AclError>> = r.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let work = std::sync::Arc::new(move || authorizer.create(valid.clone()));
    let written = match crate::security_replica::change(ctx, crate::security_replica::ACLS, work).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(e)) => return all(KAFKA_STORAGE_ERROR, e.to_string()),
        Err((code, message)) => return all(code, message),
    };
    let mut written = written.into_iter();
    let results = parsed
        .into_iter()
        .map(|p| match p.and_then(|_| written.next().unwrap_or(Ok(()))) {
            Ok(()) => result((NONE, None)),
            Err(e) => result((INVALID_REQUEST, Some(e.to_string()))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe(ctx: &Context, r: DescribeAclsRequest) -> DescribeAclsResponse {
    let failed = |code: i16, message: String| DescribeAclsResponse::default().with_error_code(code).with_error_message(Some(str_bytes(message)));
    let authorizer = match authorizer(ctx, Operation::Describe) {
        Ok(a) => a,
        Err((code, message)) => return failed(code, message),
    };
    let fields = (
        r.resource_type_filter,
        r.resource_name_filter.as_deref(),
        r.pattern_type_filter,
        r.principal_filter.as_deref(),
        r.host_filter.as_deref(),
        r.operation,
        r.permission_type,
    );
    let f = match filter(fields) {
        Ok(f) => f,
        Err(e) => return failed(INVALID_REQUEST, e.to_string()),
    };
    // One entry per resource pattern, its ACLs under it, as Kafka answers.
    let mut resources: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> = BTreeMap::new();
    for acl in authorizer.describe(&f) {
        let entry = AclDescription::default()
            .with_principal(str_bytes(acl.principal))
            .with_host(str_bytes(acl.host))
            .with_operation(acl.operation.code())
            .with_permission_type(acl.permission.code());
        resources.entry((acl.resource_type, acl.name, acl.pattern_type)).or_default().push(entry);
    }
    let resources = resources
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            DescribeAclsResource::default().with_resource_type(rt.code()).with_resource_name(str_bytes(name)).with_pattern_type(pt.code()).with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

fn delete_filter(f: &DeleteAclsFilter) -> Result<AclFilter, AclError> {
    filter((
        f.resource_type_filter,
        f.resource_name_filter.as_deref(),
        f.pattern_type_filter,
        f.principal_filter.as_deref(),
        f.host_filter.as_deref(),
        f.operation,
        f.permission_type,
    ))
}

pub async fn delete(ctx: &Context, r: DeleteAclsRequest) -> DeleteAclsResponse {
    let failed = |code: i16, message: String| DeleteAclsFilterResult::default().with_error_code(code).with_error_message(Some(str_bytes(message)));
    let all = |code: i16, message: String| DeleteAclsResponse::default().with_filter_results(r.filters.iter().map(|_| failed(code, message.clone())).collect());
    let authorizer = match authorizer(ctx, Operation::Alter) {
        Ok(a) => a,
        Err((code, message)) => return all(code, message),
    };
    let parsed: Vec<Result<AclFilter, AclError>> = r.filters.iter().map(delete_filter).collect();
    let valid: Vec<AclFilter> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let work = std::sync::Arc::new(move || authorizer.delete(&valid));
    let removed = match crate::security_replica::change(ctx, crate::security_replica::ACLS, work).await {
        Ok(Ok(removed)) => removed,
        Ok(Err(e)) => return all(KAFKA_STORAGE_ERROR, e.to_string()),
        Err((code, message)) => return all(code, message),
    };
    let mut removed = removed.into_iter();
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Err(e) => failed(INVALID_REQUEST, e.to_string()),
            Ok(_) => DeleteAclsFilterResult::default().with_matching_acls(removed.next().unwrap_or_default().into_iter().map(matching).collect()),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

fn matching(acl: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(str_bytes(acl.name))
        .with_pattern_type(acl.pattern_type.code())
        .with_principal(str_bytes(acl.principal))
        .with_host(str_bytes(acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}
