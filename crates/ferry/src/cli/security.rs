//! How a client subcommand reaches a TLS or SASL listener: librdkafka's
//! (and Kafka's) setting names as flags, and kcat's `-X key=value` for any
//! other librdkafka property.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use ferry_auth::SaslMechanism;
use ferry_kafka::listener::SecurityProtocol;

#[derive(Debug, Args, Clone, Default)]
pub struct SecurityArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (librdkafka's and Kafka's security.protocol).
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol, global = true)]
    pub security_protocol: Option<SecurityProtocol>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl.mechanism).
    #[arg(long, value_name = "MECHANISM", value_parser = parse_mechanism, global = true)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// sasl.username.
    #[arg(long, value_name = "USER", global = true)]
    pub sasl_username: Option<String>,
    /// sasl.password (FERRY_SASL_PASSWORD keeps it off the command line).
    #[arg(long, value_name = "PASSWORD", env = "FERRY_SASL_PASSWORD", hide_env_values = true, global = true)]
    pub sasl_password: Option<String>,
    /// PEM file of the CA the broker's certificate is checked against (ssl.ca.location).
    #[arg(long, value_name = "FILE", global = true)]
    pub ssl_ca_location: Option<PathBuf>,
    /// Any other librdkafka property, as kcat's -X (repeatable), e.g. -X ssl.endpoint.identification.algorithm=none.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property, global = true)]
    pub property: Vec<(String, String)>,
}

fn parse_protocol(s: &str) -> Result<SecurityProtocol, String> {
    s.parse().map_err(|()| format!("`{s}` is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"))
}

fn parse_mechanism(s: &str) -> Result<SaslMechanism, String> {
    s.parse().map_err(|e: ferry_auth::mechanism::UnknownMechanism| e.to_string())
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

impl SecurityArgs {
    /// The flags' librdkafka properties, then -X's (which win), checked
    /// together: SASL settings need a SASL protocol and a SASL protocol
    /// needs a mechanism, a user name and a password; a CA file needs TLS.
    pub fn properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut props = Vec::new();
        if let Some(p) = self.security_protocol {
            props.push(("security.protocol".to_string(), p.name().to_string()));
        }
        if let Some(m) = self.sasl_mechanism {
            props.push(("sasl.mechanism".to_string(), m.name().to_string()));
        }
        if let Some(u) = &self.sasl_username {
            props.push(("sasl.username".to_string(), u.clone()));
        }
        if let Some(p) = &self.sasl_password {
            props.push(("sasl.password".to_string(), p.clone()));
        }
        if let Some(ca) = &self.ssl_ca_location {
            if let Err(e) = std::fs::metadata(ca) {
                bail!("--ssl-ca-location {}: {e}", ca.display());
            }
            props.push(("ssl.ca.location".to_string(), ca.display().to_string()));
        }
        props.extend(self.property.iter().cloned());
        let get = |key: &str| props.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let protocol = match get("security.protocol") {
            None => SecurityProtocol::Plaintext,
            Some(p) => parse_protocol(p).map_err(|e| anyhow::anyhow!("security.protocol: {e}"))?,
        };
        if protocol.uses_sasl() {
            for (key, flag) in [("sasl.mechanism", "--sasl-mechanism"), ("sasl.username", "--sasl-username"), ("sasl.password", "--sasl-password")] {
                if get(key).is_none() {
                    bail!("--security-protocol {protocol} needs {flag} (or -X {key}=...)");
                }
            }
        } else if let Some(flag) = [("--sasl-mechanism", self.sasl_mechanism.is_some()), ("--sasl-username", self.sasl_username.is_some())]
            .into_iter()
            .find_map(|(flag, set)| set.then_some(flag))
        {
            // (A password alone may come from FERRY_SASL_PASSWORD, set for other commands.)
            bail!("{flag} needs --security-protocol SASL_SSL or SASL_PLAINTEXT (it is {protocol})");
        }
        if self.ssl_ca_location.is_some() && !protocol.uses_tls() {
            bail!("--ssl-ca-location needs --security-protocol SSL or SASL_SSL (it is {protocol})");
        }
        Ok(props)
    }

    /// The protocol the clients will speak (`properties` checked it).
    pub fn protocol(&self) -> anyhow::Result<SecurityProtocol> {
        match self.properties()?.into_iter().rev().find(|(k, _)| k == "security.protocol") {
            None => Ok(SecurityProtocol::Plaintext),
            Some((_, v)) => parse_protocol(&v).map_err(anyhow::Error::msg),
        }
    }

    /// Sets the properties on a librdkafka configuration.
    pub fn apply(&self, config: &mut rdkafka::ClientConfig) -> anyhow::Result<()> {
        for (k, v) in self.properties()? {
            config.set(k, v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        security: SecurityArgs,
    }

    fn props(args: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map_err(|e| anyhow::anyhow!("{e}"))?;
        cli.security.properties()
    }

    #[test]
    fn flags_become_librdkafka_properties_and_x_wins() {
        let p = props(&["--security-protocol", "sasl_ssl", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "alice", "--sasl-password", "pw", "-X", "sasl.password=other", "-X", "linger.ms=0"]).expect("valid");
        assert_eq!(p.first(), Some(&("security.protocol".into(), "SASL_SSL".into())));
        assert!(p.contains(&("sasl.mechanism".into(), "SCRAM-SHA-512".into())));
        assert_eq!(p.iter().rev().find(|(k, _)| k == "sasl.password").map(|(_, v)| v.as_str()), Some("other"));
        assert!(props(&[]).expect("nothing is fine").is_empty());
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_flag_to_add() {
        let e = props(&["--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN", "--sasl-username", "a"]).unwrap_err().to_string();
        assert!(e.contains("--sasl-password"), "{e}");
        let e = props(&["--sasl-username", "a"]).unwrap_err().to_string();
        assert!(e.contains("needs --security-protocol SASL_SSL"), "{e}");
        let e = props(&["--security-protocol", "SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN", "-X", "sasl.username=a", "-X", "sasl.password=b", "--ssl-ca-location", "/"]).unwrap_err().to_string();
        assert!(e.contains("--ssl-ca-location needs"), "{e}");
        assert!(props(&["--sasl-mechanism", "GSSAPI"]).unwrap_err().to_string().contains("GSSAPI"));
        assert!(props(&["--security-protocol", "TLS"]).is_err());
        assert!(props(&["-X", "novalue"]).unwrap_err().to_string().contains("KEY=VALUE"));
        let e = props(&["-X", "security.protocol=bogus"]).unwrap_err().to_string();
        assert!(e.contains("security.protocol"), "{e}");
    }
}
