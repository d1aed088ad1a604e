//! The table and the HTML page a verify run prints.

use serde_json::json;

use super::{name_of, promise_of, OutputFormat, RunResult, Verdict};
use crate::cli::print_table;

pub fn print_results(results: &[RunResult], output: OutputFormat) {
    match output {
        OutputFormat::Json => {
            let list: Vec<_> = results
                .iter()
                .map(|r| {
                    let rep = &r.report;
                    json!({
                        "semantics": name_of(r.semantics), "sent": rep.sent, "acknowledged": rep.acknowledged,
                        "delivered": rep.delivered, "lost": rep.lost, "unseen": rep.unseen, "duplicated": rep.duplicated,
                        "log_duplicates": rep.log_duplicates, "inconsistent_offsets": rep.inconsistent_offsets,
                        "aborted_reads": rep.aborted_reads, "precommitted_reads": rep.precommitted_reads,
                        "reordered": rep.reordered, "faults_injected": rep.faults_injected,
                        "faults_by_kind": rep.faults_by_kind, "faults_missing": r.missing_faults,
                        "verdict": r.verdict_text(),
                        "throughput_records_per_s": r.throughput, "latency_p50_ms": r.latency_p50_ms,
                        "latency_p99_ms": r.latency_p99_ms, "promise_held": rep.promise_held(promise_of(r.semantics)),
                        "examples": rep.examples,
                    })
                })
                .collect();
            println!("{}", json!({ "results": list }));
        }
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    let rep = &r.report;
                    vec![
                        name_of(r.semantics).into(),
                        rep.sent.to_string(),
                        rep.acknowledged.to_string(),
                        rep.delivered.to_string(),
                        rep.lost.to_string(),
                        rep.unseen.to_string(),
                        rep.duplicated.to_string(),
                        rep.aborted_reads.to_string(),
                        rep.faults_injected.to_string(),
                        format!("{:.0}", r.throughput),
                        format!("{:.1}/{:.1}", r.latency_p50_ms, r.latency_p99_ms),
                        r.verdict_text().into(),
                    ]
                })
                .collect();
            print_table(
                &["SEMANTICS", "SENT", "ACKED", "DELIVERED", "LOST", "UNSEEN", "DUPLICATED", "ABORTED-READS", "FAULTS", "REC/S", "P50/P99-MS", "PROMISE"],
                &rows,
            );
            for r in results {
                let by_kind: Vec<String> = r.report.faults_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
                if !by_kind.is_empty() {
                    println!("  {} faults: {}", name_of(r.semantics), by_kind.join(", "));
                }
                if !r.missing_faults.is_empty() {
                    println!("  {} inconclusive: never injected: {}", name_of(r.semantics), r.missing_faults.join(", "));
                }
                for (kind, examples) in &r.report.examples {
                    for e in examples {
                        println!("  {} {kind}: {e}", name_of(r.semantics));
                    }
                }
            }
        }
    }
}

pub fn html_report(results: &[RunResult]) -> String {
    let max = results.iter().map(|r| r.report.sent.max(1)).max().unwrap_or(1) as f64;
    let mut rows = String::new();
    let mut bars = String::new();
    for (i, r) in results.iter().enumerate() {
        let rep = &r.report;
        let verdict = r.verdict();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1} / {:.1}</td><td class=\"{}\">{}</td></tr>\n",
            name_of(r.semantics), rep.sent, rep.acknowledged, rep.delivered, rep.lost, rep.duplicated, rep.aborted_reads,
            rep.faults_injected, r.throughput, r.latency_p50_ms, r.latency_p99_ms,
            if verdict == Verdict::Held { "ok" } else { "bad" }, r.verdict_text()
        ));
        let y = 30 + i * 90;
        for (j, (label, v, color)) in [("acknowledged", rep.acknowledged, "#4a7"), ("lost", rep.lost, "#d44"), ("duplicated", rep.duplicated, "#e90")].iter().enumerate() {
            let w = (*v as f64 / max * 500.0).max(1.0);
            let yy = y + j * 24;
            bars.push_str(&format!(
                "<rect x=\"160\" y=\"{yy}\" width=\"{w:.0}\" height=\"20\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{}\" font-size=\"12\">{label}: {v}</text>\n",
                165.0 + w,
                yy + 15
            ));
        }
        bars.push_str(&format!("<text x=\"10\" y=\"{}\" font-size=\"14\">{}</text>\n", y + 30, name_of(r.semantics)));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ferry verify</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.ok{{color:#171}}.bad{{color:#b11;font-weight:bold}}</style></head><body>\
<h1>ferry verify: the three semantics under faults</h1><table><tr><th>semantics</th><th>sent</th><th>acknowledged</th><th>delivered</th><th>lost</th><th>duplicated</th><th>aborted reads</th><th>faults</th><th>records/s</th><th>p50 / p99 ms</th><th>promise</th></tr>\n{rows}</table>\
<svg width=\"900\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">{bars}</svg></body></html>\n",
        40 + results.len() * 90
    )
}

