//! The evaluation harness end to end, small: `augur bench scenario hotspot` under static and
//! reactive on real 3-node clusters writes its table, plots and report, every request is
//! answered without error, static moves nothing and reactive moves the hot range.

use std::process::Command;

mod common;

fn column(header: &str, row: &str, name: &str) -> String {
    let at = header
        .split(',')
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header}"));
    row.split(',').nth(at).unwrap_or_default().to_string()
}

#[test]
fn hotspot_scenario_writes_a_report_and_reactive_moves() {
    let out = std::env::temp_dir().join(format!("augur-test-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(common::augur())
        .args([
            "bench",
            "scenario",
            "hotspot",
            "--policy",
            "static,reactive",
        ])
        .args(["--seconds", "8", "--rate", "400", "--records", "3000"])
        .args(["--period-s", "3", "--connections", "2"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("augur runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "scenario failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for file in [
        "report.html",
        "summary.csv",
        "seconds.csv",
        "p99.svg",
        "local_hit.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing; stdout: {stdout}");
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).expect("summary");
    let mut lines = summary.lines();
    let header = lines.next().expect("header");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{summary}");
    for row in &rows {
        let policy = column(header, row, "policy");
        let ops: f64 = column(header, row, "throughput_ops").parse().expect("ops");
        assert!(
            ops > 200.0,
            "{policy}: {ops} ops/s of 400 scheduled\n{summary}"
        );
        assert_eq!(
            column(header, row, "errors"),
            "0",
            "{policy}: errors\n{summary}"
        );
        let moves: u64 = column(header, row, "migrations").parse().expect("moves");
        match policy.as_str() {
            "static" => assert_eq!(moves, 0, "static moved\n{summary}"),
            "reactive" => assert!(moves > 0, "reactive never moved\n{summary}"),
            other => panic!("unexpected policy {other}"),
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("reactive"));
    let _ = std::fs::remove_dir_all(&out);
}
