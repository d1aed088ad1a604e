//! The console's login when ACLs are on (`--acls-enable true`): HTTP Basic
//! credentials checked against the SASL user store (the SCRAM credentials
//! that SASL/PLAIN checks too), and what the user sees limited to what the
//! ACLs let its principal `User:<name>` DESCRIBE. Without ACLs every
//! request is served as before. Basic suits the console: the browser asks
//! once and sends the credentials with every fetch of the page, and
//! Prometheus scrapes with `basic_auth` the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferry_auth::acl::{Authorizer, Operation, ResourceType, Session, CLUSTER_NAME};
use ferry_auth::{ScramMechanism, UserStore};
use hyper::header::AUTHORIZATION;
use hyper::Request;
use tracing::info;

/// A failed login waits this long before its answer (Kafka's
/// `connection.failed.authentication.delay.ms`, for the same reason).
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// What the console checks logins against (present when ACLs are on).
#[derive(Clone)]
pub struct ConsoleAuth {
    pub users: Arc<UserStore>,
    pub acls: Arc<Authorizer>,
}

/// Who a request acts for.
#[derive(Clone)]
pub enum Access {
    /// ACLs are off: everything, as for Kafka clients.
    Open,
    User { session: Session, acls: Arc<Authorizer> },
}

impl Access {
    pub fn may(&self, op: Operation, resource: ResourceType, name: &str) -> bool {
        match self {
            Access::Open => true,
            Access::User { session, acls } => acls.authorize(session, op, resource, name),
        }
    }

    pub fn may_describe(&self, resource: ResourceType, name: &str) -> bool {
        self.may(Operation::Describe, resource, name)
    }

    pub fn may_describe_cluster(&self) -> bool {
        self.may(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME)
    }
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginRefused {
    /// No credentials sent: ask for them.
    Missing,
    /// Malformed, an unknown user or a wrong password (one answer for all,
    /// as SASL gives).
    Invalid,
}

/// The request's access: Open without ACLs, else the user its Basic
/// credentials prove.
pub async fn access<B>(auth: Option<&ConsoleAuth>, req: &Request<B>, peer: SocketAddr) -> Result<Access, LoginRefused> {
    let Some(auth) = auth else { return Ok(Access::Open) };
    let header = req.headers().get(AUTHORIZATION).ok_or(LoginRefused::Missing)?;
    let credentials = header.to_str().ok().and_then(basic_credentials);
    // The check costs a PBKDF2: off the runtime's workers.
    let users = auth.users.clone();
    let checked = tokio::task::spawn_blocking(move || credentials.filter(|(user, password)| password_matches(&users, user, password)))
        .await
        .ok()
        .flatten();
    match checked {
        Some((user, _)) => {
            let session = Session { principal: format!("User:{user}"), host: peer.ip().to_string() };
            Ok(Access::User { session, acls: auth.acls.clone() })
        }
        None => {
            info!(%peer, "console login refused");
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            Err(LoginRefused::Invalid)
        }
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

fn password_matches(users: &UserStore, user: &str, password: &str) -> bool {
    [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| users.credential(user, m).map(|c| (m, c)))
        .is_some_and(|(m, c)| c.matches_password(m, password.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_parsed() {
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(basic_credentials(&format!("Basic {}", encode("alice:pa:ss"))), Some(("alice".into(), "pa:ss".into())));
        assert_eq!(basic_credentials(&format!("basic {}", encode("bob:"))), Some(("bob".into(), String::new())));
        assert_eq!(basic_credentials(&format!("Bearer {}", encode("alice:x"))), None);
        assert_eq!(basic_credentials(&format!("Basic {}", encode(":x"))), None);
        assert_eq!(basic_credentials(&format!("Basic {}", encode("no-colon"))), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }
}
