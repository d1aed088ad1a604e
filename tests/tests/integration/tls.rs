//! TLS listeners: PLAINTEXT and SSL side by side on the real binary, with
//! librdkafka (OpenSSL) as the client; certificates from the `openssl` CLI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::certs::{self, Ca, Signed};
use ferry_tests::kafka::{metadata_port, produce_all, read_all};
use ferry_tests::{free_port, Ferry};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

/// A broker with `PLAINTEXT://127.0.0.1:<port>,SSL://127.0.0.1:<ssl_port>`.
fn start(ssl_port: u16, server: &Signed, extra: &[&str]) -> Ferry {
    let port = free_port();
    let listen = format!("PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}");
    let (cert, key) = (server.cert.to_string_lossy().into_owned(), server.key.to_string_lossy().into_owned());
    let mut args = vec!["--listen", &listen, "--ssl-certificate-location", &cert, "--ssl-key-location", &key];
    args.extend_from_slice(extra);
    let mut f = Ferry::unstarted(port, &args, &[("FERRY_LOG", "info,ferry_kafka::connection=debug")]);
    f.spawn_and_wait();
    f
}

fn ssl_client(port: u16, ca: &Path, client: Option<&Signed>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.to_string_lossy())
        .set("message.timeout.ms", "10000")
        .set("socket.timeout.ms", "5000");
    if let Some(s) = client {
        c.set("ssl.certificate.location", s.cert.to_string_lossy()).set("ssl.key.location", s.key.to_string_lossy());
    }
    c
}

#[tokio::test]
async fn ssl_round_trip_next_to_plaintext_and_each_listener_advertises_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs::ca(dir.path(), "ca");
    let server = ca.sign(dir.path(), "server", "localhost", true);
    let ssl_port = free_port();
    let ferry = start(ssl_port, &server, &[]);
    let ssl = ssl_client(ssl_port, &ca.cert, None);

    let values: Vec<String> = (0..200).map(|i| format!("secret-{i}")).collect();
    let producer: FutureProducer = ssl.create().expect("producer");
    let offsets = produce_all(&producer, "tls-topic", &values).await;
    assert_eq!(offsets.last(), Some(&199), "log:\n{}", ferry.log());
    assert_eq!(read_all(&ssl, "tls-topic", 200), values);

    assert_eq!(metadata_port(&ssl), Ok(i32::from(ssl_port)), "SSL clients are sent to the SSL listener");
    let mut plain = ClientConfig::new();
    plain.set("bootstrap.servers", ferry.bootstrap());
    assert_eq!(metadata_port(&plain), Ok(i32::from(ferry.port)), "PLAINTEXT clients to the PLAINTEXT one");
    assert_eq!(read_all(&plain, "tls-topic", 200).len(), 200, "the same topic over PLAINTEXT");
    let other = certs::ca(dir.path(), "other-ca");
    assert!(metadata_port(&ssl_client(ssl_port, &other.cert, None)).is_err(), "a client trusting another CA fails the handshake");
}

#[test]
fn client_auth_required_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs::ca(dir.path(), "ca");
    let server = ca.sign(dir.path(), "server", "localhost", true);
    let alice = ca.sign(dir.path(), "alice", "alice", false);
    let stranger = certs::ca(dir.path(), "stranger-ca").sign(dir.path(), "mallory", "mallory", false);
    let ssl_port = free_port();
    let ca_path = ca.cert.to_string_lossy().into_owned();
    let ferry = start(ssl_port, &server, &["--ssl-ca-location", &ca_path, "--ssl-client-auth", "required"]);
    assert!(metadata_port(&ssl_client(ssl_port, &ca.cert, None)).is_err(), "no certificate, no connection");
    assert!(metadata_port(&ssl_client(ssl_port, &ca.cert, Some(&stranger))).is_err(), "a certificate of another CA is refused");
    assert_eq!(metadata_port(&ssl_client(ssl_port, &ca.cert, Some(&alice))), Ok(i32::from(ssl_port)));
    assert!(ferry.log().contains("User:alice"), "the principal is the certificate's CN; log:\n{}", ferry.log());
}

fn install(from: &Signed, to: &Signed) {
    std::fs::copy(&from.cert, &to.cert).expect("copy cert");
    std::fs::copy(&from.key, &to.key).expect("copy key");
}

fn wait_until(what: &str, ferry: &Ferry, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", ferry.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn certificates_reload_on_sighup_and_on_file_change_and_a_bad_file_keeps_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_ca, new_ca): (Ca, Ca) = (certs::ca(dir.path(), "old-ca"), certs::ca(dir.path(), "new-ca"));
    let old = old_ca.sign(dir.path(), "old", "localhost", true);
    let new = new_ca.sign(dir.path(), "new", "localhost", true);
    let live = Signed { cert: dir.path().join("live.pem"), key: dir.path().join("live.key") };
    install(&old, &live);
    let ssl_port = free_port();
    let ferry = start(ssl_port, &live, &[]);
    let trusts = |ca: &Ca| metadata_port(&ssl_client(ssl_port, &ca.cert, None)).is_ok();
    assert!(trusts(&old_ca) && !trusts(&new_ca));

    install(&new, &live);
    ferry.signal("HUP");
    wait_until("SIGHUP loads the new certificate", &ferry, || trusts(&new_ca));
    assert!(!trusts(&old_ca));

    std::fs::write(&live.cert, "not a certificate").expect("write");
    ferry.signal("HUP");
    wait_until("a bad file is reported", &ferry, || ferry.log().contains("not reloaded"));
    assert!(trusts(&new_ca), "a bad file keeps the certificate in use");

    install(&old, &live);
    wait_until("a changed file is loaded without a signal", &ferry, || trusts(&old_ca));
}

/// Sends `input` and reads until the server closes (it may send a TLS alert first).
fn closed_after(port: u16, input: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    if s.set_read_timeout(Some(Duration::from_secs(15))).is_err() {
        return false;
    }
    // The server may close before reading it all; that is fine.
    let _ = s.write_all(input);
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// Bytes no TLS server expects: a Kafka request in the clear, a TLS record
/// header with nonsense after it, random bytes. Each closes its connection;
/// the broker goes on serving.
#[test]
fn garbage_on_the_ssl_port_closes_the_connection_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = certs::ca(dir.path(), "ca");
    let server = ca.sign(dir.path(), "server", "localhost", true);
    let ssl_port = free_port();
    let mut ferry = start(ssl_port, &server, &[]);
    let api_versions = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0];
    let mut inputs: Vec<Vec<u8>> = vec![api_versions.to_vec(), vec![0x16, 3, 1, 0xff, 0xff, 1, 0, 0xff, 0xff, 3, 3], vec![0x16, 3, 3, 0, 0]];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1usize, 5, 64, 517, 4096, 70_000] {
        inputs.push(
            (0..len)
                .map(|_| {
                    // xorshift: reproducible bytes without a dependency.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect(),
        );
    }
    // In parallel: inputs too short to be a TLS record wait out the
    // handshake timeout (10 s), which this checks too.
    std::thread::scope(|scope| {
        for input in &inputs {
            scope.spawn(move || assert!(closed_after(ssl_port, input), "{} bytes of garbage: connection left open", input.len()));
        }
    });
    assert!(ferry.is_running(), "log:\n{}", ferry.log());
    assert_eq!(metadata_port(&ssl_client(ssl_port, &ca.cert, None)), Ok(i32::from(ssl_port)));
    assert!(!ferry.log().contains("panicked"), "log:\n{}", ferry.log());
}
