//! `ferry verify` end to end: each semantics keeps its promise under every
//! fault kind, each kind is injected, and the JSON output has the
//! documented shape. Long enough (tens of thousands of records, a dozen
//! faults per semantics) to catch what a three-second run never does: a
//! consumer group that never resumes after a kill, offsets handed out twice.

use std::process::Command;

use ferry_tests::ferry_bin;

const FAULT_KINDS: [&str; 5] = ["kill", "pause", "disconnect", "fsync-error", "torn-tail"];

#[test]
fn verify_all_semantics_under_every_fault_kind() {
    let faults = FAULT_KINDS.join(",");
    let out = Command::new(ferry_bin())
        .args(["verify", "--semantics", "all", "--faults", &faults, "--records", "24000", "--rate", "2000", "--max-faults", "12"])
        .args(["--fault-interval-ms", "800", "--seed", "7", "--output", "json"])
        .output()
        .expect("run ferry verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json_line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("no JSON output; stderr:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    let v: serde_json::Value = serde_json::from_str(json_line).expect("valid JSON");
    let results = v["results"].as_array().expect("results array");
    assert_eq!(results.len(), 3);
    for r in results {
        let name = r["semantics"].as_str().unwrap();
        for kind in FAULT_KINDS {
            assert!(r["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1, "{name}: no {kind} fault injected: {r}");
        }
        assert!(r["faults_injected"].as_u64().unwrap() >= 8, "{name}: a dozen faults or so: {r}");
        assert_eq!(r["verdict"], "held", "{name}: {r}");
        assert_eq!(r["inconsistent_offsets"], 0, "{name}: {r}");
        assert!(r["acknowledged"].as_u64().unwrap() > 0, "{name}: something was acknowledged");
        assert_eq!(r["promise_held"], true, "{name}: {r}");
    }
    let eos = &results[2];
    assert_eq!(eos["duplicated"], 0);
    assert_eq!(eos["lost"], 0);
    assert_eq!(eos["aborted_reads"], 0);
    assert!(out.status.success(), "exit status 0 when every promise held");
}

const CLUSTER_FAULT_KINDS: [&str; 4] = ["kill", "pause", "partition", "leader-isolation"];

/// The short CI run on three brokers; the long one is `scripts/soak.sh
/// --brokers 3` (README). Partition faults put the brokers in network
/// namespaces, which needs root, as CI has.
#[test]
fn verify_on_a_cluster_under_kills_pauses_and_cut_links() {
    let faults = CLUSTER_FAULT_KINDS.join(",");
    let out = Command::new(ferry_bin())
        .args(["verify", "--brokers", "3", "--semantics", "all", "--faults", &faults, "--records", "12000", "--rate", "1500"])
        .args(["--max-faults", "8", "--fault-interval-ms", "1500", "--seed", "11", "--output", "json"])
        .output()
        .expect("run ferry verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json_line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON output; stderr:\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(json_line).expect("valid JSON");
    let results = v["results"].as_array().expect("results array");
    let names: Vec<&str> = results.iter().map(|r| r["semantics"].as_str().unwrap()).collect();
    assert_eq!(names, ["at-most-once", "at-least-once", "exactly-once"], "stderr:\n{stderr}");
    for r in results {
        let name = r["semantics"].as_str().unwrap();
        for kind in CLUSTER_FAULT_KINDS {
            assert!(r["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1, "{name}: no {kind} fault injected: {r}");
        }
        assert_eq!(r["verdict"], "held", "{name}: {r}");
        assert_eq!(r["inconsistent_offsets"], 0, "{name}: {r}");
        // A transaction a fault made the client abort is not acknowledged.
        let floor = if name == "exactly-once" { 10_000 } else { 12_000 };
        assert!(r["acknowledged"].as_u64().unwrap() >= floor, "{name}: {r}");
    }
    assert_eq!(results[1]["lost"], 0, "at-least-once on a cluster loses nothing acknowledged");
    let eos = &results[2];
    for count in ["lost", "duplicated", "aborted_reads"] {
        assert_eq!(eos[count], 0, "exactly-once on a cluster: {count}: {eos}");
    }
    assert!(out.status.success(), "exit status 0 when every promise held; stderr:\n{stderr}");
}

#[test]
fn verify_refuses_single_node_faults_on_a_cluster() {
    let out = Command::new(ferry_bin()).args(["verify", "--brokers", "3", "--faults", "torn-tail"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fault `torn-tail` is not one a cluster takes"), "{stderr}");
    let out = Command::new(ferry_bin()).args(["verify", "--faults", "partition"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("fault `partition` is not one a single broker takes"));
}

#[test]
fn verify_check_catches_a_planted_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"type":"send","producer":0,"seq":0,"partition":0,"value":"a","time_ms":0}"#, "\n",
            r#"{"type":"ack","producer":0,"partition":0,"value":"a","offset":0,"latency_us":5}"#, "\n",
            r#"{"type":"deliver","consumer":0,"partition":0,"offset":0,"value":"a","time_ms":1}"#, "\n",
            r#"{"type":"deliver","consumer":1,"partition":0,"offset":0,"value":"a","time_ms":2}"#, "\n",
            r#"{"type":"final","partition":0,"offset":0,"value":"a","committed":true}"#, "\n",
        ),
    )
    .unwrap();
    let out = Command::new(ferry_bin()).args(["verify", "check"]).arg(&path).args(["--semantics", "exactly-once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a broken promise exits 2");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["duplicated"], 1);
    assert_eq!(v["promise_held"], false);
}

#[test]
fn verify_refuses_fewer_faults_than_kinds() {
    let out = Command::new(ferry_bin()).args(["verify", "--faults", "kill,pause,torn-tail", "--max-faults", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-faults 2 is fewer than the 3 fault kinds"), "{stderr}");
}

/// `ferry verify --security-protocol SASL_SSL`: the broker it starts listens
/// on SASL_SSL alone (a CA and certificate verify makes, the user added with
/// `ferry user add` before the first start), so every client it runs —
/// producers, transactional processors, group consumers, the final reads —
/// logs in with SCRAM over TLS, again after each kill; exactly-once holds.
#[test]
fn verify_over_sasl_ssl_starts_its_broker_with_the_listener_and_the_promise_holds() {
    let history = tempfile::tempdir().unwrap();
    let out = Command::new(ferry_bin())
        .args(["verify", "--semantics", "exactly-once", "--faults", "kill,disconnect", "--records", "3000", "--rate", "1500"])
        .args(["--max-faults", "2", "--seed", "5", "--output", "json", "--history-dir"])
        .arg(history.path())
        .args(["--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-256", "--sasl-username", "verifier"])
        .env_remove("FERRY_SASL_PASSWORD")
        .output()
        .expect("run ferry verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("over SASL_SSL SCRAM-SHA-256 as verifier"), "{stderr}");
    let json_line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON output; stderr:\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(json_line).expect("valid JSON");
    let r = &v["results"][0];
    assert_eq!(r["semantics"], "exactly-once", "{r}");
    for kind in ["kill", "disconnect"] {
        assert!(r["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1, "no {kind} fault injected: {r}");
    }
    assert_eq!(r["verdict"], "held", "{r}");
    assert!(r["acknowledged"].as_u64().unwrap() >= 3000, "{r}");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64(), r["aborted_reads"].as_u64()), (Some(0), Some(0), Some(0)), "{r}");
    assert!(out.status.success(), "exit status 0 when the promise held; stderr:\n{stderr}");

    let log = std::fs::read_to_string(history.path().join("exactly-once-broker.log")).expect("the broker's log is kept");
    let listeners: Vec<&str> = log.lines().filter(|l| l.contains("accepting Kafka connections")).collect();
    assert!(!listeners.is_empty() && listeners.iter().all(|l| l.contains("SASL_SSL")), "SASL_SSL is the only listener, at every start:\n{}", listeners.join("\n"));
    assert!(listeners.len() >= 2, "the broker was killed and restarted with the same listener: {listeners:?}");
    let logins = log.lines().filter(|l| l.contains("SASL authenticated") && l.contains("User:verifier")).count();
    // Two producers, two consumers with their transactional producers, the
    // admin client and the final readers, each connection logging in.
    assert!(logins >= 6, "only {logins} logins as User:verifier in the broker log");
    assert!(!log.contains("SASL authentication failed"), "no login was refused");
}
