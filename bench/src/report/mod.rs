//! The comparison report of a scenario run: a terminal table, CSVs, SVG plots and one
//! self-contained HTML page (SVGs and CSS inline, no scripts, no external URLs), so the
//! page can be mailed or archived as one file and still render offline.

mod html;
mod plots;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use hdrhistogram::Histogram;

use crate::driver::{self, Window};

/// One second of one policy's run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecondStats {
    pub second: u32,
    pub ops: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
    pub local_hit: Option<f64>,
    /// Requests the nodes routed again (an owner said moved, or a fence held them)...
    pub reroutes: u64,
    /// ... and the time client batches waited for that, summed over the nodes, ms.
    pub reroute_wait_ms: u64,
}

/// Something that happened during a run, drawn as a vertical marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_s: f64,
    /// "migration", "split", "merge", "hint", "shift".
    pub kind: String,
    pub label: String,
}

/// Predicted and actual share of load per (row, column), values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub predicted: Vec<Vec<f64>>,
    pub actual: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Successful operations per second over the run.
    pub throughput: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub local_hit: Option<f64>,
    /// Seconds whose p99 exceeded the SLO.
    pub slo_violation_s: u32,
    pub bytes_migrated: u64,
    pub migrations: u64,
    pub splits: u64,
    pub merges: u64,
    pub forecast_error: Option<f64>,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    pub policy: String,
    pub seconds: Vec<SecondStats>,
    pub summary: Summary,
    pub events: Vec<Event>,
    pub heatmap: Option<Heatmap>,
}

pub struct ReportInput<'a> {
    pub scenario: &'a str,
    pub description: &'a str,
    pub slo_p99_us: u64,
    /// The command line that produced the report, shown on the page.
    pub command: &'a str,
    pub runs: &'a [PolicyRun],
}

/// Per-second stats and the latency/error part of the summary of a driver run.
/// Percentiles come from the merged histogram of all seconds (percentiles do not
/// average). `local_hit[i]` is second i's local-hit ratio if the caller sampled it;
/// the run's ratio is their mean weighted by each second's operations. The fields
/// the driver cannot know (migrations, bytes, forecast error) are left zero/None.
pub fn summarize(
    windows: &[Window],
    slo_p99_us: u64,
    local_hit: &[Option<f64>],
) -> (Vec<SecondStats>, Summary) {
    let mut merged = driver::new_histogram();
    let mut seconds = Vec::with_capacity(windows.len());
    let (mut ok, mut errors) = (0u64, 0u64);
    for (i, w) in windows.iter().enumerate() {
        // Same bounds everywhere; a histogram that cannot be merged is left out
        // rather than failing the whole report.
        let _ = merged.add(&w.latency);
        ok += w.ok;
        errors += w.errors;
        seconds.push(SecondStats {
            second: w.second,
            ops: w.ok,
            p50_us: quantile(&w.latency, 0.5),
            p99_us: quantile(&w.latency, 0.99),
            p999_us: quantile(&w.latency, 0.999),
            errors: w.errors,
            local_hit: local_hit.get(i).copied().flatten(),
            ..SecondStats::default()
        });
    }
    let summary = Summary {
        throughput: if windows.is_empty() {
            0.0
        } else {
            ok as f64 / windows.len() as f64
        },
        p50_us: quantile(&merged, 0.5),
        p99_us: quantile(&merged, 0.99),
        p999_us: quantile(&merged, 0.999),
        local_hit: weighted_local_hit(&seconds),
        slo_violation_s: slo_violations(&seconds, slo_p99_us),
        errors,
        ..Summary::default()
    };
    (seconds, summary)
}

fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// Seconds whose p99 is above the SLO.
pub fn slo_violations(seconds: &[SecondStats], slo_p99_us: u64) -> u32 {
    seconds.iter().filter(|s| s.p99_us > slo_p99_us).count() as u32
}

fn weighted_local_hit(seconds: &[SecondStats]) -> Option<f64> {
    let (mut hits, mut ops) = (0.0, 0.0);
    let mut any = false;
    for s in seconds {
        if let Some(h) = s.local_hit {
            any = true;
            hits += h * s.ops as f64;
            ops += s.ops as f64;
        }
    }
    match (any, ops > 0.0) {
        (false, _) => None,
        (true, true) => Some(hits / ops),
        (true, false) => {
            let known: Vec<f64> = seconds.iter().filter_map(|s| s.local_hit).collect();
            Some(known.iter().sum::<f64>() / known.len() as f64)
        }
    }
}

/// The table's columns: header and the cell of one run.
type Column = (&'static str, fn(&Summary) -> String);

const COLUMNS: [Column; 12] = [
    ("ops/s", |s| format!("{:.0}", s.throughput)),
    ("p50 ms", |s| ms(s.p50_us)),
    ("p99 ms", |s| ms(s.p99_us)),
    ("p99.9 ms", |s| ms(s.p999_us)),
    ("local hit", |s| percent(s.local_hit)),
    ("SLO viol s", |s| s.slo_violation_s.to_string()),
    ("migrated", |s| bytes(s.bytes_migrated)),
    ("moves", |s| s.migrations.to_string()),
    ("splits", |s| s.splits.to_string()),
    ("merges", |s| s.merges.to_string()),
    ("fcst err", |s| {
        s.forecast_error
            .map_or("-".to_string(), |e| format!("{e:.3}"))
    }),
    ("errors", |s| s.errors.to_string()),
];

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Header and one row of cells per run, as strings.
fn table_cells(input: &ReportInput) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["policy".to_string()];
    header.extend(COLUMNS.iter().map(|(h, _)| h.to_string()));
    let rows = input
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![r.policy.clone()];
            row.extend(COLUMNS.iter().map(|(_, cell)| cell(&r.summary)));
            row
        })
        .collect();
    (header, rows)
}

/// An aligned text table, one row per policy (policy left-aligned, numbers right).
/// Each policy's figures over repeated runs (`runs[rep][policy]`, policies in the same
/// order every time): the median and, in brackets, the smallest and largest.
pub fn repeats_table(scenario: &str, slo_p99_ms: f64, runs: &[Vec<PolicyRun>]) -> String {
    let mut out = format!(
        "scenario {scenario} — {} repetitions, median [min–max]; SLO p99 {slo_p99_ms} ms\n",
        runs.len()
    );
    let Some(first) = runs.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "{:<11} {:>22} {:>22} {:>22} {:>20} {:>14}",
        "policy", "ops/s", "p99 ms", "local hit %", "SLO viol s", "moves"
    );
    for (i, policy) in first.iter().map(|r| &r.policy).enumerate() {
        let of = |f: &dyn Fn(&Summary) -> f64| -> Vec<f64> {
            runs.iter()
                .filter_map(|rep| rep.get(i))
                .filter(|r| &r.policy == policy)
                .map(|r| f(&r.summary))
                .collect()
        };
        let _ = writeln!(
            out,
            "{:<11} {:>22} {:>22} {:>22} {:>20} {:>14}",
            policy,
            spread(&of(&|s| s.throughput), 0),
            spread(&of(&|s| s.p99_us as f64 / 1000.0), 2),
            spread(&of(&|s| s.local_hit.map_or(f64::NAN, |h| 100.0 * h)), 1),
            spread(&of(&|s| f64::from(s.slo_violation_s)), 0),
            spread(&of(&|s| s.migrations as f64), 0),
        );
    }
    out
}

/// `median [min–max]` of finite values, or `-`.
fn spread(values: &[f64], decimals: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    format!(
        "{median:.decimals$} [{:.decimals$}–{:.decimals$}]",
        v[0],
        v[n - 1]
    )
}

pub fn summary_table(input: &ReportInput) -> String {
    let (header, rows) = table_cells(input);
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}");
            } else {
                let _ = write!(out, "  {cell:>w$}");
            }
        }
        out.trim_end().to_string()
    };
    let mut out = format!(
        "scenario {} — SLO p99 {} ms\n",
        input.scenario,
        ms(input.slo_p99_us)
    );
    out.push_str(&line(&header));
    out.push('\n');
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

fn summary_csv(input: &ReportInput) -> String {
    let mut out = String::from(
        "policy,throughput_ops,p50_us,p99_us,p999_us,local_hit,slo_violation_s,\
         bytes_migrated,migrations,splits,merges,forecast_error,errors\n",
    );
    for r in input.runs {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "{},{:.3},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.policy),
            s.throughput,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            opt(s.local_hit),
            s.slo_violation_s,
            s.bytes_migrated,
            s.migrations,
            s.splits,
            s.merges,
            opt(s.forecast_error),
            s.errors
        );
    }
    out
}

fn seconds_csv(input: &ReportInput) -> String {
    let mut out = String::from(
        "policy,second,ops,p50_us,p99_us,p999_us,errors,local_hit,reroutes,reroute_wait_ms\n",
    );
    for r in input.runs {
        for s in &r.seconds {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                csv_field(&r.policy),
                s.second,
                s.ops,
                s.p50_us,
                s.p99_us,
                s.p999_us,
                s.errors,
                opt(s.local_hit),
                s.reroutes,
                s.reroute_wait_ms
            );
        }
    }
    out
}

/// A file name part from a policy name: letters, digits, '-' and '_' only.
fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "run".to_string()
    } else {
        s
    }
}

/// Create `dir` and write the report's files into it; returns `report.html`'s path.
pub fn write(dir: &Path, input: &ReportInput) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let put = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let table = summary_table(input);
    put("summary.txt", &table)?;
    put("summary.csv", &summary_csv(input))?;
    put("seconds.csv", &seconds_csv(input))?;
    let p99 = plots::p99_svg(input).map_err(|e| anyhow!("drawing p99.svg: {e}"))?;
    put("p99.svg", &p99)?;
    let local_hit =
        plots::local_hit_svg(input).map_err(|e| anyhow!("drawing local_hit.svg: {e}"))?;
    put("local_hit.svg", &local_hit)?;
    let mut heatmaps = Vec::new();
    for run in input.runs {
        if let Some(h) = &run.heatmap {
            let svg = plots::heatmap_svg(&run.policy, h);
            let name = format!("heatmap-{}.svg", file_safe(&run.policy));
            put(&name, &svg)?;
            heatmaps.push((run.policy.as_str(), svg));
        }
    }
    let page = html::page(input, &p99, &local_hit, &heatmaps);
    put("report.html", &page)?;
    Ok(dir.join("report.html"))
}

#[cfg(test)]
mod tests;
