//! SASL listeners on the real binary: librdkafka (SCRAM-SHA-512,
//! SCRAM-SHA-256 and PLAIN) over SASL_PLAINTEXT and SASL_SSL, users added
//! offline with `ferry user add` or online with AlterUserScramCredentials,
//! wrong passwords and early requests refused while the broker keeps serving.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ferry_auth::credential::salted;
use ferry_auth::ScramMechanism;
use ferry_tests::certs::{self, Signed};
use ferry_tests::kafka::{metadata_port, produce_all, read_all};
use ferry_tests::raw::frame;
use ferry_tests::{closed_by_peer, ferry_bin, free_port, read_frame, Ferry};
use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey, ApiVersionsRequest, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, MetadataRequest, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

const MECHANISMS: &str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512";

/// Ports of a broker with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners.
struct Ports {
    sasl: u16,
    sasl_ssl: u16,
}

fn unstarted(server: &Signed, extra: &[&str]) -> (Ferry, Ports) {
    let (port, sasl, sasl_ssl) = (free_port(), free_port(), free_port());
    let listen = format!("PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl},SASL_SSL://127.0.0.1:{sasl_ssl}");
    let (cert, key) = (server.cert.to_string_lossy().into_owned(), server.key.to_string_lossy().into_owned());
    let mut args = vec!["--listen", &listen, "--ssl-certificate-location", &cert, "--ssl-key-location", &key];
    args.extend_from_slice(&["--sasl-enabled-mechanisms", MECHANISMS]);
    args.extend_from_slice(extra);
    (Ferry::unstarted(port, &args, &[("FERRY_LOG", "info,ferry_kafka::connection=debug")]), Ports { sasl, sasl_ssl })
}

/// `ferry user ARGS --data-dir DIR` with `stdin`; (success, stdout + stderr).
fn ferry_user(data_dir: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(ferry_bin())
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry user");
    // A refusal (the broker holds the store's lock) may exit before reading
    // stdin; the broken pipe is not the test's failure, the exit status is.
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("ferry user");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn client(port: u16, ca: Option<&Path>, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("security.protocol", if ca.is_some() { "sasl_ssl" } else { "sasl_plaintext" })
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("message.timeout.ms", "10000");
    if let Some(ca) = ca {
        c.set("ssl.ca.location", ca.to_string_lossy());
    }
    c
}

#[tokio::test]
async fn scram_and_plain_round_trips_over_both_sasl_listeners_with_a_user_added_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs::ca(dir.path(), "ca");
    let server = ca.sign(dir.path(), "server", "localhost", true);
    let (mut ferry, ports) = unstarted(&server, &[]);
    let added = ferry_user(&ferry.data_dir, &["add", "alice", "--mechanism", "SCRAM-SHA-512", "--mechanism", "SCRAM-SHA-256", "--password-stdin"], "alice-secret\n");
    assert!(added.0, "{}", added.1);
    ferry.spawn_and_wait();

    let ssl = client(ports.sasl_ssl, Some(&ca.cert), "SCRAM-SHA-512", "alice", "alice-secret");
    let values: Vec<String> = (0..200).map(|i| format!("sasl-{i}")).collect();
    let producer: FutureProducer = ssl.create().expect("producer");
    assert_eq!(produce_all(&producer, "sasl-topic", &values).await.last(), Some(&199), "log:\n{}", ferry.log());
    assert_eq!(read_all(&ssl, "sasl-topic", 200), values, "SCRAM-SHA-512 over SASL_SSL");
    let plain = client(ports.sasl, None, "PLAIN", "alice", "alice-secret");
    assert_eq!(read_all(&plain, "sasl-topic", 200), values, "PLAIN over SASL_PLAINTEXT");
    assert_eq!(metadata_port(&ssl), Ok(i32::from(ports.sasl_ssl)), "SASL_SSL clients are sent to the SASL_SSL listener");
    assert_eq!(metadata_port(&client(ports.sasl, None, "SCRAM-SHA-256", "alice", "alice-secret")), Ok(i32::from(ports.sasl)));
    assert!(ferry.log().contains("User:alice"), "log:\n{}", ferry.log());

    let refused = ferry_user(&ferry.data_dir, &["add", "bob", "--password-stdin"], "pw\n");
    assert!(!refused.0 && refused.1.contains("locked"), "a running broker holds the store: {}", refused.1);
    let listed = ferry_user(&ferry.data_dir, &["list"], "");
    assert!(!listed.0, "even to read: the broker's copy is the live one");
    ferry.terminate();
    let listed = ferry_user(&ferry.data_dir, &["list"], "");
    assert!(listed.1.contains("alice") && listed.1.contains("SCRAM-SHA-512(iterations=8192)"), "{}", listed.1);
    let stored = std::fs::read_to_string(ferry.data_dir.join("security/users.json")).expect("store");
    assert!(!stored.contains("alice-secret"), "no password at rest");
    assert!(ferry_user(&ferry.data_dir, &["delete", "alice"], "").0);
    assert!(!ferry_user(&ferry.data_dir, &["list"], "").1.contains("alice"));
}

#[test]
fn wrong_passwords_and_early_requests_are_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs::ca(dir.path(), "ca");
    let server = ca.sign(dir.path(), "server", "localhost", true);
    let (mut ferry, ports) = unstarted(&server, &[]);
    assert!(ferry_user(&ferry.data_dir, &["add", "carol", "--password-stdin"], "carol-pw\n").0);
    ferry.spawn_and_wait();
    for (mechanism, user, password) in [("SCRAM-SHA-512", "carol", "wrong"), ("PLAIN", "carol", "wrong"), ("SCRAM-SHA-512", "nobody", "carol-pw")] {
        let err = metadata_port(&client(ports.sasl, None, mechanism, user, password)).expect_err("refused");
        assert!(err.contains("Authentication") || err.contains("transport"), "{mechanism} {user}: {err}");
    }
    assert!(ferry.log().contains("invalid credentials"), "log:\n{}", ferry.log());
    assert!(metadata_port(&client(ports.sasl_ssl, Some(&ca.cert), "SCRAM-SHA-256", "carol", "carol-pw")).is_err(), "carol has no SHA-256 credential");

    // Kafka serves nothing but ApiVersions before the SASL handshake.
    let metadata = frame(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
    let mut s = TcpStream::connect(("127.0.0.1", ports.sasl)).expect("connect");
    s.write_all(&metadata).expect("write");
    assert!(closed_by_peer(&mut s), "Metadata before authentication closes the connection");
    let mut s = TcpStream::connect(("127.0.0.1", ports.sasl)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(&frame(ApiKey::ApiVersions, 3, 2, &ApiVersionsRequest::default())).expect("write");
    assert!(read_frame(&mut s).is_some(), "ApiVersions is answered");
    s.write_all(&metadata).expect("write");
    assert!(closed_by_peer(&mut s), "and then Metadata still closes it");
    // A handshake frame larger than sasl.server.max.receive.size closes it too.
    let mut s = TcpStream::connect(("127.0.0.1", ports.sasl)).expect("connect");
    s.write_all(&(1_000_000i32).to_be_bytes()).expect("write");
    assert!(closed_by_peer(&mut s), "oversized frame before authentication");

    assert!(ferry.is_running());
    let ok = client(ports.sasl_ssl, Some(&ca.cert), "SCRAM-SHA-512", "carol", "carol-pw");
    assert_eq!(metadata_port(&ok), Ok(i32::from(ports.sasl_ssl)), "log:\n{}", ferry.log());
    assert!(!ferry.log().contains("panicked"), "log:\n{}", ferry.log());
}

/// Sends one request on a fresh PLAINTEXT connection; the response body.
fn admin_call(ferry: &Ferry, api: ApiKey, bytes: Vec<u8>) -> Bytes {
    let mut s = TcpStream::connect(ferry.bootstrap()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(&bytes).expect("write");
    let mut body = Bytes::from(read_frame(&mut s).expect("answer"));
    ResponseHeader::decode(&mut body, api.response_header_version(0)).expect("header");
    body
}

fn upsert(user: &str, mechanism: i8, iterations: i32, password: &str) -> ScramCredentialUpsertion {
    let salt = b"0123456789abcdef".to_vec();
    let m = ScramMechanism::from_kafka_type(mechanism).unwrap_or(ScramMechanism::Sha512);
    ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(user.into()))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salted_password(Bytes::from(salted(m, password.as_bytes(), &salt, iterations.max(1) as u32)))
        .with_salt(Bytes::from(salt))
}

fn alter(ferry: &Ferry, upsertions: Vec<ScramCredentialUpsertion>, deletions: Vec<ScramCredentialDeletion>) -> Vec<(String, i16)> {
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(upsertions).with_deletions(deletions);
    let mut body = admin_call(ferry, ApiKey::AlterUserScramCredentials, frame(ApiKey::AlterUserScramCredentials, 0, 7, &req));
    let resp = AlterUserScramCredentialsResponse::decode(&mut body, 0).expect("alter response");
    resp.results.iter().map(|r| (r.user.to_string(), r.error_code)).collect()
}

fn describe(ferry: &Ferry, users: &[&str]) -> DescribeUserScramCredentialsResponse {
    let names = users.iter().map(|u| UserName::default().with_name(StrBytes::from_string(u.to_string()))).collect();
    let req = DescribeUserScramCredentialsRequest::default().with_users(Some(names));
    let mut body = admin_call(ferry, ApiKey::DescribeUserScramCredentials, frame(ApiKey::DescribeUserScramCredentials, 0, 8, &req));
    DescribeUserScramCredentialsResponse::decode(&mut body, 0).expect("describe response")
}

#[test]
fn users_created_online_survive_a_restart_and_kafkas_error_codes_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = certs::ca(dir.path(), "ca").sign(dir.path(), "server", "localhost", true);
    let (mut ferry, ports) = unstarted(&server, &[]);
    ferry.spawn_and_wait();
    let deletion = |user: &str, m: i8| ScramCredentialDeletion::default().with_name(StrBytes::from_string(user.into())).with_mechanism(m);
    let got = alter(&ferry, vec![upsert("dave", 2, 4096, "dave-pw"), upsert("erin", 2, 100, "x"), upsert("frank", 9, 4096, "x")], vec![deletion("gina", 1)]);
    assert_eq!(got, vec![("gina".into(), 91), ("dave".into(), 0), ("erin".into(), 93), ("frank".into(), 33)], "RESOURCE_NOT_FOUND, UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM");
    let twice = alter(&ferry, vec![upsert("hank", 1, 4096, "a"), upsert("hank", 1, 4096, "b")], vec![]);
    assert_eq!(twice, vec![("hank".into(), 92)], "DUPLICATE_RESOURCE, and none of hank's changes apply");

    let d = describe(&ferry, &["dave", "hank", "dave"]);
    let codes: Vec<(String, i16)> = d.results.iter().map(|r| (r.user.to_string(), r.error_code)).collect();
    assert_eq!(codes, vec![("dave".into(), 92), ("hank".into(), 91)]);
    let d = describe(&ferry, &["dave"]);
    assert_eq!(d.results[0].credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect::<Vec<_>>(), vec![(2, 4096)]);

    let dave = client(ports.sasl, None, "SCRAM-SHA-512", "dave", "dave-pw");
    assert_eq!(metadata_port(&dave), Ok(i32::from(ports.sasl)), "log:\n{}", ferry.log());
    ferry.restart();
    assert_eq!(metadata_port(&dave), Ok(i32::from(ports.sasl)), "the user survives a restart (SIGKILL)");
    assert_eq!(alter(&ferry, vec![], vec![deletion("dave", 2)]), vec![("dave".into(), 0)]);
    assert!(metadata_port(&dave).is_err(), "a deleted user cannot log in");
}

/// `ferry bench` (and the other librdkafka subcommands) against a SASL_SSL
/// listener with librdkafka's names as flags: measured and read back over
/// SCRAM-SHA-512 and over PLAIN, the protocol named in the result; a wrong
/// password is the broker's authentication error at once, for bench and for
/// `ferry verify --bootstrap-server`, not "is a broker running?".
#[test]
fn bench_and_verify_reach_a_sasl_ssl_listener_and_a_wrong_password_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs::ca(dir.path(), "ca");
    let server = ca.sign(dir.path(), "server", "localhost", true);
    let (mut ferry, ports) = unstarted(&server, &[]);
    assert!(ferry_user(&ferry.data_dir, &["add", "dave", "--mechanism", "SCRAM-SHA-512", "--password-stdin"], "dave-pw\n").0);
    ferry.spawn_and_wait();
    let bootstrap = format!("127.0.0.1:{}", ports.sasl_ssl);
    let ca_file = ca.cert.to_string_lossy().into_owned();
    let run = |cmd: &[&str], mechanism: &str, password: &str| {
        let out = Command::new(ferry_bin())
            .args(cmd)
            .args(["--bootstrap-server", &bootstrap, "--security-protocol", "SASL_SSL", "--sasl-mechanism", mechanism])
            .args(["--sasl-username", "dave", "--ssl-ca-location", &ca_file])
            .env("FERRY_SASL_PASSWORD", password)
            .output()
            .expect("run ferry");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (mechanism, topic) in [("SCRAM-SHA-512", "bench-scram"), ("PLAIN", "bench-plain")] {
        let (ok, stdout, stderr) = run(&["bench", "--topic", topic, "--records", "5000", "--consume", "--output", "json"], mechanism, "dave-pw");
        assert!(ok, "{mechanism}: {stderr}\nlog:\n{}", ferry.log());
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
        assert_eq!((v["delivered"].as_u64(), v["consume"]["records"].as_u64()), (Some(5000), Some(5000)), "{v}");
        assert_eq!((v["security_protocol"].as_str(), v["sasl_mechanism"].as_str()), (Some("SASL_SSL"), Some(mechanism)), "{v}");
    }
    let (ok, stdout, _) = run(&["topic", "list"], "SCRAM-SHA-512", "dave-pw");
    assert!(ok && stdout.contains("bench-scram") && stdout.contains("bench-plain"), "{stdout}");

    let started = std::time::Instant::now();
    let (ok, _, stderr) = run(&["bench", "--records", "100"], "SCRAM-SHA-512", "not-dave-pw");
    assert!(!ok && stderr.contains("refused the connection") && stderr.contains("Authentication failed"), "{stderr}");
    let (ok, _, stderr) = run(&["verify", "--semantics", "at-least-once", "--faults", "none", "--records", "100"], "PLAIN", "not-dave-pw");
    assert!(!ok && stderr.contains("refused the connection") && stderr.contains("Authentication failed"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(40), "refused at once, not after retries: {:?}", started.elapsed());
    // The subcommands that speak Ferry's own PLAINTEXT client say so.
    let (ok, _, stderr) = run(&["topic", "delete-records", "--topic", "bench-plain", "--partition", "0", "--offset", "1"], "PLAIN", "dave-pw");
    assert!(!ok && stderr.contains("speaks PLAINTEXT only"), "{stderr}");
    assert!(ferry.is_running());
}
