//! The listener of the brokers `ferry verify` starts when asked for TLS or
//! SASL (`--security-protocol`): a CA and a server certificate of its own
//! (made with the `openssl` command) for SSL and SASL_SSL, a user added
//! with `ferry user add` before the first start for SASL_PLAINTEXT and
//! SASL_SSL, and the client properties that reach it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use ferry_auth::{SaslMechanism, ScramMechanism};
use ferry_kafka::listener::SecurityProtocol;

use crate::cli::SecurityArgs;

/// The user verify logs in as unless --sasl-username names another.
const DEFAULT_USER: &str = "ferry-verify";

/// How verify's brokers listen, and who may log in.
#[derive(Debug, Clone)]
pub struct BrokerSecurity {
    pub protocol: SecurityProtocol,
    /// SASL: the mechanism, the user and the password.
    login: Option<(SaslMechanism, String, String)>,
    /// -X properties, passed to the clients as they are.
    extra: Vec<(String, String)>,
}

impl BrokerSecurity {
    /// From the flags, for brokers verify starts: None for PLAINTEXT.
    pub fn from_args(args: &SecurityArgs) -> anyhow::Result<Option<BrokerSecurity>> {
        if args.ssl_ca_location.is_some() {
            bail!("--ssl-ca-location is for a broker given with --bootstrap-server: the brokers verify starts get a CA and certificate it makes");
        }
        if args.property.iter().any(|(k, _)| k.starts_with("sasl.") || k == "security.protocol" || k == "ssl.ca.location") {
            bail!("the brokers verify starts take --security-protocol and --sasl-* flags, not -X security.protocol/sasl.*/ssl.ca.location");
        }
        let protocol = args.security_protocol.unwrap_or(SecurityProtocol::Plaintext);
        if !protocol.uses_sasl() && (args.sasl_mechanism.is_some() || args.sasl_username.is_some()) {
            bail!("--sasl-mechanism and --sasl-username need --security-protocol SASL_SSL or SASL_PLAINTEXT");
        }
        if protocol == SecurityProtocol::Plaintext {
            return Ok(None);
        }
        let login = protocol.uses_sasl().then(|| {
            let mechanism = args.sasl_mechanism.unwrap_or(SaslMechanism::Scram(ScramMechanism::Sha512));
            let user = args.sasl_username.clone().unwrap_or_else(|| DEFAULT_USER.to_string());
            let password = args.sasl_password.clone().unwrap_or_else(random_password);
            (mechanism, user, password)
        });
        Ok(Some(BrokerSecurity { protocol, login, extra: args.property.clone() }))
    }

    /// What `ferry serve` needs beyond `--listen`: the certificate (made in
    /// `tls_dir` by `prepare`) and the mechanism.
    pub fn serve_args(&self, tls_dir: &Path) -> Vec<String> {
        let mut args = Vec::new();
        if self.protocol.uses_tls() {
            args.extend(["--ssl-certificate-location".to_string(), path(&tls_dir.join("server.pem"))]);
            args.extend(["--ssl-key-location".to_string(), path(&tls_dir.join("server.key"))]);
        }
        if let Some((mechanism, _, _)) = &self.login {
            args.extend(["--sasl-enabled-mechanisms".to_string(), mechanism.name().to_string()]);
        }
        args
    }

    /// Before the brokers' first start: the certificates (for every host
    /// the brokers listen on) and the user in each data directory.
    pub fn prepare(&self, bin: &Path, tls_dir: &Path, hosts: &[String], data_dirs: &[PathBuf]) -> anyhow::Result<()> {
        if self.protocol.uses_tls() {
            make_certificates(tls_dir, hosts)?;
        }
        if let Some((mechanism, user, password)) = &self.login {
            // PLAIN checks the password against the user's SCRAM credential.
            let scram = match mechanism {
                SaslMechanism::Scram(m) => *m,
                SaslMechanism::Plain => ScramMechanism::Sha512,
            };
            for dir in data_dirs {
                add_user(bin, dir, user, scram, password)?;
            }
        }
        Ok(())
    }

    /// The clients' librdkafka properties.
    pub fn client_properties(&self, tls_dir: &Path) -> Vec<(String, String)> {
        let mut props = vec![("security.protocol".to_string(), self.protocol.name().to_string())];
        if self.protocol.uses_tls() {
            props.push(("ssl.ca.location".to_string(), path(&tls_dir.join("ca.pem"))));
        }
        if let Some((mechanism, user, password)) = &self.login {
            props.push(("sasl.mechanism".to_string(), mechanism.name().to_string()));
            props.push(("sasl.username".to_string(), user.clone()));
            props.push(("sasl.password".to_string(), password.clone()));
        }
        props.extend(self.extra.iter().cloned());
        props
    }

    /// For the log line: protocol and mechanism.
    pub fn describe(&self) -> String {
        match &self.login {
            Some((m, user, _)) => format!("{} {m} as {user}", self.protocol),
            None => self.protocol.to_string(),
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn random_password() -> String {
    let mut bytes = [0u8; 16];
    // /dev/urandom is always there on Linux; a time-based fallback still
    // gives a password nobody chose.
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `ferry user add USER --mechanism M --password-stdin --data-dir DIR`.
fn add_user(bin: &Path, data_dir: &Path, user: &str, mechanism: ScramMechanism, password: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let mut child = Command::new(bin)
        .args(["user", "add", user, "--mechanism", mechanism.name(), "--password-stdin", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} user add", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An early exit (a refusal) shows in the status below.
        let _ = writeln!(stdin, "{password}");
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`ferry user add {user}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A CA (`ca.pem`) and a server certificate it signed (`server.pem`,
/// `server.key`) for `hosts` and localhost, ECDSA P-256, valid two days.
fn make_certificates(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl").current_dir(dir).args(args).output().map_err(|e| {
            anyhow::anyhow!("verify makes the TLS listener's certificates with the `openssl` command, which cannot run ({e}); install openssl")
        })?;
        if !out.status.success() {
            bail!("openssl {} failed: {}", args.first().unwrap_or(&""), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=ferry-verify-ca", "-keyout", "ca.key", "-out", "ca.pem"];
    ca.extend(ec);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(&ca)?;
    let mut names = vec!["DNS:localhost".to_string()];
    for h in hosts {
        let name = if h.parse::<std::net::IpAddr>().is_ok() { format!("IP:{h}") } else { format!("DNS:{h}") };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    std::fs::write(dir.join("server.ext"), format!("extendedKeyUsage=serverAuth\nsubjectAltName={}\n", names.join(",")))?;
    let mut csr = vec!["req", "-subj", "/CN=ferry-verify-broker", "-keyout", "server.key", "-out", "server.csr"];
    csr.extend(ec);
    openssl(&csr)?;
    openssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem"])
}
