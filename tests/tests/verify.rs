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
