//! Kafka's listener syntax: `PROTOCOL://HOST:PORT`, comma-separated, for
//! `--listen` and `--advertised-listener`. A bare `HOST:PORT` is PLAINTEXT.
//!
//! Ferry has no `listener.security.protocol.map`: a listener's name is its
//! security protocol, so each protocol appears at most once (Kafka refuses
//! duplicate listener names too), and an advertised entry belongs to the
//! listener with the same protocol.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// Kafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Connections on this listener start with a TLS handshake.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SecurityProtocol {
    type Err = ();

    /// Case-insensitive, as Kafka upper-cases listener names.
    fn from_str(s: &str) -> Result<Self, ()> {
        [SecurityProtocol::Plaintext, SecurityProtocol::Ssl, SecurityProtocol::SaslPlaintext, SecurityProtocol::SaslSsl]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// One entry of a listener list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub protocol: SecurityProtocol,
    /// Without brackets for IPv6; empty means every interface (Kafka's `SSL://:9093`).
    pub host: String,
    pub port: u16,
    /// Written as a bare `HOST:PORT`, without `PROTOCOL://`.
    pub bare: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerError {
    #[error("empty listener list")]
    Empty,
    #[error("listener `{spec}`: unknown security protocol `{protocol}` (expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)")]
    UnknownProtocol { spec: String, protocol: String },
    #[error("listener `{0}` is not [PROTOCOL://]HOST:PORT")]
    NotHostPort(String),
    #[error("listener `{0}`: the host to listen on must be an IP address or empty (every interface)")]
    NotAnIp(String),
    #[error("advertised listener `{0}` has no host")]
    NoAdvertisedHost(String),
    #[error("two listeners use {0}; each security protocol may appear once")]
    Duplicate(SecurityProtocol),
    #[error("advertised listener `{0}` matches no listener with its protocol")]
    NotListening(String),
}

impl ListenerSpec {
    pub fn parse(spec: &str) -> Result<ListenerSpec, ListenerError> {
        let spec = spec.trim();
        let (protocol, address, bare) = match spec.split_once("://") {
            Some((p, rest)) => {
                let protocol = p
                    .parse()
                    .map_err(|()| ListenerError::UnknownProtocol { spec: spec.to_string(), protocol: p.to_string() })?;
                (protocol, rest, false)
            }
            None => (SecurityProtocol::Plaintext, spec, true),
        };
        let not_host_port = || ListenerError::NotHostPort(spec.to_string());
        let (host, port) = address.rsplit_once(':').ok_or_else(not_host_port)?;
        let port = port.parse::<u16>().map_err(|_| not_host_port())?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Ok(ListenerSpec { protocol, host: host.to_string(), port, bare })
    }

    /// The socket address to bind: the host must be an IP, or empty for all interfaces.
    pub fn bind_addr(&self) -> Result<SocketAddr, ListenerError> {
        let ip = if self.host.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            self.host.parse().map_err(|_| ListenerError::NotAnIp(self.to_string()))?
        };
        Ok(SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{}://{}:{}", self.protocol, host, self.port)
    }
}

/// Parses a comma-separated list; refuses a protocol given twice.
pub fn parse_listeners(list: &str) -> Result<Vec<ListenerSpec>, ListenerError> {
    let specs = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(ListenerSpec::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err(ListenerError::Empty);
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.protocol == s.protocol) {
            return Err(ListenerError::Duplicate(s.protocol));
        }
    }
    Ok(specs)
}

/// A listener to open: where to bind and what Metadata tells its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPlan {
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Pairs `--listen` with `--advertised-listener`. A listener with no
/// advertised entry advertises its own address. A single bare `HOST:PORT`
/// advertised with a single listener applies to it whatever its protocol,
/// so today's `--advertised-listener host:port` keeps working.
pub fn plan_listeners(listen: &str, advertised: Option<&str>) -> Result<Vec<ListenerPlan>, ListenerError> {
    let listeners = parse_listeners(listen)?;
    let advertised = advertised.map(parse_listeners).transpose()?.unwrap_or_default();
    let single_bare = listeners.len() == 1 && advertised.len() == 1 && advertised[0].bare;
    for a in &advertised {
        if a.host.is_empty() {
            return Err(ListenerError::NoAdvertisedHost(a.to_string()));
        }
        if !single_bare && !listeners.iter().any(|l| l.protocol == a.protocol) {
            return Err(ListenerError::NotListening(a.to_string()));
        }
    }
    listeners
        .iter()
        .map(|l| {
            let bind = l.bind_addr()?;
            let adv = if single_bare { advertised.first() } else { advertised.iter().find(|a| a.protocol == l.protocol) };
            let (advertised_host, advertised_port) = match adv {
                Some(a) => (a.host.clone(), a.port),
                None => (bind.ip().to_string(), bind.port()),
            };
            Ok(ListenerPlan { protocol: l.protocol, bind, advertised_host, advertised_port })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use SecurityProtocol::*;

    fn spec(p: SecurityProtocol, host: &str, port: u16, bare: bool) -> ListenerSpec {
        ListenerSpec { protocol: p, host: host.into(), port, bare }
    }

    #[test]
    fn parses_kafkas_syntax_and_bare_addresses() {
        let got = parse_listeners("PLAINTEXT://127.0.0.1:9092, SASL_SSL://127.0.0.1:9093,ssl://:9094").expect("parses");
        assert_eq!(got, vec![spec(Plaintext, "127.0.0.1", 9092, false), spec(SaslSsl, "127.0.0.1", 9093, false), spec(Ssl, "", 9094, false)]);
        assert_eq!(ListenerSpec::parse("SASL_PLAINTEXT://h:1").expect("parses").protocol, SaslPlaintext);
        assert_eq!(ListenerSpec::parse("[::1]:1").expect("parses"), spec(Plaintext, "::1", 1, true));
        assert_eq!(ListenerSpec::parse("SSL://[::1]:9093").expect("parses").to_string(), "SSL://[::1]:9093");
        assert_eq!(ListenerSpec::parse("SSL://:9093").expect("parses").bind_addr(), Ok("0.0.0.0:9093".parse().expect("addr")));
    }

    #[test]
    fn refuses_malformed_lists() {
        assert!(matches!(parse_listeners("TLS://h:1"), Err(ListenerError::UnknownProtocol { .. })));
        assert!(matches!(parse_listeners("PLAINTEXT://h"), Err(ListenerError::NotHostPort(_))));
        assert!(matches!(parse_listeners("h:99999"), Err(ListenerError::NotHostPort(_))));
        assert_eq!(parse_listeners(" , "), Err(ListenerError::Empty));
        assert_eq!(parse_listeners("h:1,PLAINTEXT://h:2"), Err(ListenerError::Duplicate(Plaintext)));
        assert!(matches!(spec(Ssl, "example.com", 1, false).bind_addr(), Err(ListenerError::NotAnIp(_))));
    }

    #[test]
    fn each_listener_advertises_its_own_entry() {
        let plans = plan_listeners("PLAINTEXT://127.0.0.1:9092,SSL://0.0.0.0:9093", Some("SSL://broker.example:19093")).expect("plans");
        assert_eq!(plans[0].advertised_host, "127.0.0.1");
        assert_eq!(plans[0].advertised_port, 9092);
        assert_eq!((plans[1].protocol, plans[1].advertised_host.as_str(), plans[1].advertised_port), (Ssl, "broker.example", 19093));
        assert!(matches!(plan_listeners("127.0.0.1:9092", Some("SSL://h:1")), Err(ListenerError::NotListening(_))));
        assert!(matches!(plan_listeners("127.0.0.1:9092", Some("SSL://:1")), Err(ListenerError::NoAdvertisedHost(_))));
    }

    #[test]
    fn a_single_bare_address_keeps_todays_meaning() {
        let plans = plan_listeners("127.0.0.1:9092", None).expect("plans");
        assert_eq!(plans, vec![ListenerPlan {
            protocol: Plaintext,
            bind: "127.0.0.1:9092".parse().expect("addr"),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
        }]);
        let plans = plan_listeners("SSL://0.0.0.0:9093", Some("broker.example:443")).expect("plans");
        assert_eq!((plans[0].advertised_host.as_str(), plans[0].advertised_port), ("broker.example", 443));
    }
}
