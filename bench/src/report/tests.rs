use super::*;
use crate::driver::{new_histogram, Window};

fn window(second: u32, values: &[(u64, u64)]) -> Window {
    let mut latency = new_histogram();
    for &(v, n) in values {
        latency.record_n(v, n).unwrap();
    }
    let ok = latency.len();
    Window {
        second,
        sent: ok,
        ok,
        errors: 0,
        per_site: vec![latency.clone()],
        latency,
    }
}

/// A deterministic pseudo-random stream (no rand dependency needed in tests).
fn noise(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f64) / ((1u64 << 31) as f64)
}

/// Three policies over 60 s with two workload shifts, as a scenario run would give.
fn synthetic_runs() -> Vec<PolicyRun> {
    let mut runs = Vec::new();
    let mut seed = 7u64;
    for (p, policy) in ["static", "reactive", "predictive"].iter().enumerate() {
        let mut windows = Vec::new();
        let mut hits = Vec::new();
        for s in 0..60u32 {
            let since_shift = [0u32, 20, 40]
                .iter()
                .filter(|&&t| t <= s)
                .map(|&t| s - t)
                .min()
                .unwrap();
            let recovery = match p {
                0 => 1000.0,
                1 => 6.0,
                _ => 1.5,
            };
            let pain = if s >= 20 {
                (-(since_shift as f64) / recovery).exp()
            } else {
                0.0
            };
            let base = 400.0 + 100.0 * noise(&mut seed);
            let tail = base * (2.0 + 30.0 * pain) + 200.0 * noise(&mut seed);
            windows.push(window(
                s,
                &[
                    (base as u64, 9800),
                    (tail as u64, 150),
                    ((tail * 3.0) as u64, 50),
                ],
            ));
            hits.push(Some((0.95 - 0.6 * pain).clamp(0.0, 1.0)));
        }
        let (seconds, mut summary) = summarize(&windows, 2_000, &hits);
        let mut events = vec![
            Event {
                at_s: 20.0,
                kind: "shift".into(),
                label: "hotspot moves to node 2".into(),
            },
            Event {
                at_s: 40.0,
                kind: "shift".into(),
                label: "hotspot moves to node 3".into(),
            },
        ];
        if p > 0 {
            for k in 0..4 {
                for shift in [20.0, 40.0] {
                    let lag = if p == 1 { 3.0 } else { -0.5 };
                    events.push(Event {
                        at_s: shift + lag + k as f64 * 0.7,
                        kind: "migration".into(),
                        label: format!("range {k} -> node {}", 2 + k % 2),
                    });
                }
            }
            events.push(Event {
                at_s: 44.0,
                kind: "split".into(),
                label: "range 3 split".into(),
            });
        }
        if p == 2 {
            events.push(Event {
                at_s: 18.5,
                kind: "hint".into(),
                label: "forecast: shift".into(),
            });
            events.push(Event {
                at_s: 50.0,
                kind: "merge".into(),
                label: "ranges 4+5".into(),
            });
        }
        summary.migrations = events.iter().filter(|e| e.kind == "migration").count() as u64;
        summary.bytes_migrated = (summary.migrations * 48) << 20;
        summary.forecast_error = (p == 2).then_some(0.083);
        let heatmap = (p > 0).then(|| {
            let rows: Vec<String> = (0..8).map(|r| format!("range {r}")).collect();
            let cols: Vec<String> = (1..=3).map(|n| format!("node {n}")).collect();
            let actual: Vec<Vec<f64>> = (0..8)
                .map(|r| (0..3).map(|c| if r % 3 == c { 0.8 } else { 0.1 }).collect())
                .collect();
            let predicted = actual
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| (v + 0.15 * noise(&mut seed)).min(1.0))
                        .collect()
                })
                .collect();
            Heatmap {
                rows,
                cols,
                predicted,
                actual,
            }
        });
        runs.push(PolicyRun {
            policy: policy.to_string(),
            seconds,
            summary,
            events,
            heatmap,
        });
    }
    runs
}

fn input(runs: &[PolicyRun]) -> ReportInput<'_> {
    ReportInput {
        scenario: "moving-hotspot",
        description:
            "A hotspot that moves between nodes every 20 s; see http://example.invalid/why",
        slo_p99_us: 2_000,
        command: "augur bench scenario moving-hotspot --seconds 60",
        runs,
    }
}

#[test]
fn percentiles_come_from_the_merged_histogram() {
    let windows = vec![window(0, &[(100, 1000)]), window(1, &[(50_000, 10)])];
    let (seconds, summary) = summarize(&windows, 1_000, &[]);
    assert_eq!(seconds.len(), 2);
    assert_eq!(
        seconds[1].p99_us,
        windows[1].latency.value_at_quantile(0.99)
    );
    // 1010 requests, 10 slow: the merged p99 is fast, the p99.9 slow. The mean of the
    // per-second p99s (~25 ms) would be wrong.
    assert!(summary.p99_us <= 101, "p99 {}", summary.p99_us);
    assert!(summary.p999_us >= 49_000, "p99.9 {}", summary.p999_us);
    assert_eq!(summary.slo_violation_s, 1);
    assert!((summary.throughput - 505.0).abs() < 1e-9);
    assert_eq!(summary.local_hit, None);
}

#[test]
fn slo_seconds_and_local_hit_are_counted() {
    let windows: Vec<Window> = (0..10)
        .map(|s| {
            window(
                s,
                &[(
                    if s % 3 == 0 { 5_000 } else { 500 },
                    100 * (u64::from(s) + 1),
                )],
            )
        })
        .collect();
    let hits: Vec<Option<f64>> = (0..10)
        .map(|s| (s != 4).then_some(if s < 5 { 1.0 } else { 0.0 }))
        .collect();
    let (seconds, summary) = summarize(&windows, 1_000, &hits);
    // Seconds 0, 3, 6, 9 are over the SLO.
    assert_eq!(summary.slo_violation_s, 4);
    assert_eq!(slo_violations(&seconds, 1_000), 4);
    assert_eq!(seconds[4].local_hit, None);
    // Weighted by ops: seconds 0..3 (100+200+300+400 ops) hit, 5..9 (600..1000) missed.
    let expect = 1000.0 / (1000.0 + 4000.0);
    assert!(
        (summary.local_hit.unwrap() - expect).abs() < 1e-9,
        "{:?}",
        summary.local_hit
    );
}

#[test]
fn table_has_one_row_per_policy() {
    let runs = synthetic_runs();
    let table = summary_table(&input(&runs));
    let lines: Vec<&str> = table.lines().collect();
    // Title, header, rule, then the rows.
    assert_eq!(lines.len(), 3 + runs.len(), "{table}");
    for (line, run) in lines[3..].iter().zip(&runs) {
        assert!(line.starts_with(&run.policy), "{line}");
    }
    // Aligned: every row as wide as the header (numbers right-aligned).
    assert_eq!(
        lines[3].chars().count(),
        lines[1].chars().count(),
        "{table}"
    );
    assert!(lines[1].contains("p99 ms") && lines[1].contains("SLO viol s"));
}

#[test]
fn write_produces_every_file_and_a_self_contained_page() {
    let runs = synthetic_runs();
    let keep = std::env::var_os("AUGUR_REPORT_DEMO_DIR");
    let dir = match &keep {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("augur-report-test-{}", std::process::id())),
    };
    let html_path = write(&dir, &input(&runs)).unwrap();
    assert_eq!(html_path, dir.join("report.html"));
    for name in [
        "p99.svg",
        "local_hit.svg",
        "heatmap-reactive.svg",
        "heatmap-predictive.svg",
    ] {
        let svg = fs::read_to_string(dir.join(name)).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
        assert!(svg.contains("<text"), "{name} has labels");
    }
    assert!(
        !dir.join("heatmap-static.svg").exists(),
        "no heatmap given for static"
    );
    let p99 = fs::read_to_string(dir.join("p99.svg")).unwrap();
    assert!(p99.contains("stroke-dasharray") || p99.matches("<polyline").count() > 3);
    for policy in [
        "static",
        "reactive",
        "predictive",
        "SLO p99 2 ms",
        "shift (2)",
    ] {
        assert!(p99.contains(policy), "p99.svg legend lacks {policy}");
    }
    let summary_csv = fs::read_to_string(dir.join("summary.csv")).unwrap();
    assert_eq!(summary_csv.lines().count(), 1 + runs.len());
    let seconds_csv = fs::read_to_string(dir.join("seconds.csv")).unwrap();
    assert_eq!(seconds_csv.lines().count(), 1 + 60 * runs.len());
    let txt = fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert_eq!(txt, summary_table(&input(&runs)));

    let html = fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "both plots and two heatmaps inlined"
    );
    assert!(!html.contains("<script"));
    assert!(html.contains("augur bench scenario moving-hotspot --seconds 60"));
    assert_eq!(html.matches("How to read this").count(), 4);
    // The only URL is the one in the description's text, escaped, not a reference.
    assert_eq!(
        html.matches("http").count(),
        1,
        "{}",
        &html[..html.len().min(4000)]
    );
    for attr in ["src=", "href=", "url("] {
        assert!(
            !html.contains(attr),
            "page refers to something outside: {attr}"
        );
    }
    if keep.is_none() {
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn empty_runs_still_give_readable_plots() {
    let runs = vec![PolicyRun {
        policy: "a,b \"quoted\"".into(),
        seconds: Vec::new(),
        summary: Summary::default(),
        events: Vec::new(),
        heatmap: None,
    }];
    let p99 = plots::p99_svg(&input(&runs)).unwrap();
    assert!(p99.contains("no latency samples"));
    let hit = plots::local_hit_svg(&input(&runs)).unwrap();
    assert!(hit.contains("no run reported a local-hit ratio"));
    let csv = summary_csv(&input(&runs));
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("\"a,b \"\"quoted\"\"\","),
        "{csv}"
    );
}

#[test]
fn repeats_give_each_policys_median_and_range() {
    let runs = synthetic_runs();
    let mut reps: Vec<Vec<PolicyRun>> = (0..3).map(|_| runs.clone()).collect();
    for (k, rep) in reps.iter_mut().enumerate() {
        for r in rep.iter_mut() {
            r.summary.p99_us = 1000 * (k as u64 + 1); // 1, 2, 3 ms
            r.summary.slo_violation_s = [7, 1, 4][k];
        }
    }
    let table = repeats_table("hotspot", 5.0, &reps);
    assert!(table.contains("3 repetitions"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + runs.len(), "{table}");
    for (line, run) in lines[2..].iter().zip(&runs) {
        assert!(line.starts_with(&run.policy), "{line}");
        assert!(
            line.contains("2.00 [1.00–3.00]"),
            "p99 median and range: {line}"
        );
        assert!(
            line.contains("4 [1–7]"),
            "SLO seconds median and range: {line}"
        );
    }
    assert_eq!(spread(&[], 1), "-");
    assert_eq!(spread(&[f64::NAN, 2.0, 4.0], 1), "3.0 [2.0–4.0]");
}
