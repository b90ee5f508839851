//! The report's SVG plots. Line charts are drawn with plotters' SVG backend (text as
//! `<text>` elements with a generic font family, so no system font is needed); the
//! heatmap is plain SVG written here, as it is only rectangles and labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Event, Heatmap, ReportInput, SecondStats};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 440;
/// Right-hand column for the legend, so it never covers the lines.
const LEGEND_WIDTH: u32 = 210;
const FONT: &str = "sans-serif";

/// Line colours of the policies, in run order (colour-blind-friendly "tableau" set).
const POLICY_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
const SLO_COLOR: RGBColor = RGBColor(214, 39, 40);

fn policy_color(i: usize) -> RGBColor {
    POLICY_COLORS[i % POLICY_COLORS.len()]
}

/// Event marker colour by kind; unknown kinds are grey.
fn event_color(kind: &str) -> RGBColor {
    match kind {
        "shift" => RGBColor(0, 0, 0),
        "hint" => RGBColor(0, 150, 136),
        "migration" => RGBColor(100, 116, 139),
        "split" => RGBColor(205, 150, 0),
        "merge" => RGBColor(170, 0, 170),
        _ => RGBColor(170, 170, 170),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// The x range: every second of every run, and every event.
fn x_max(input: &ReportInput) -> f64 {
    let mut max: f64 = 1.0;
    for r in input.runs {
        for s in &r.seconds {
            max = max.max(f64::from(s.second) + 1.0);
        }
        for e in &r.events {
            if e.at_s.is_finite() {
                max = max.max(e.at_s);
            }
        }
    }
    max
}

/// Events of all runs grouped by kind, each time once (a workload shift is in every run).
fn events_by_kind(input: &ReportInput) -> BTreeMap<String, Vec<f64>> {
    let mut kinds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in input.runs {
        for Event { at_s, kind, .. } in &r.events {
            if !at_s.is_finite() {
                continue;
            }
            let times = kinds.entry(kind.clone()).or_default();
            if !times.iter().any(|t| (t - at_s).abs() < 1e-3) {
                times.push(*at_s);
            }
        }
    }
    kinds
}

/// Contiguous runs of points (a missing value breaks the line instead of bridging it).
fn segments(
    seconds: &[SecondStats],
    value: impl Fn(&SecondStats) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut previous: Option<u32> = None;
    for s in seconds {
        let v = value(s).filter(|v| v.is_finite());
        let adjacent = previous.is_some_and(|p| p + 1 == s.second);
        match v {
            Some(v) if adjacent || current.is_empty() => {
                current.push((f64::from(s.second) + 0.5, v))
            }
            Some(v) => {
                out.push(std::mem::take(&mut current));
                current.push((f64::from(s.second) + 0.5, v));
            }
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
        previous = Some(s.second);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

enum Swatch {
    Line(RGBColor),
    Dashed(RGBColor),
    Marker(RGBColor),
}

/// A legend drawn in its own column: a swatch and a label per entry.
fn legend(
    area: &DrawingArea<SVGBackend, Shift>,
    entries: &[(String, Swatch)],
) -> anyhow::Result<()> {
    let mut y = 50;
    for (label, swatch) in entries {
        let (x0, x1) = (8, 38);
        match swatch {
            Swatch::Line(c) => {
                area.draw(&PathElement::new(vec![(x0, y), (x1, y)], c.stroke_width(3)))
                    .map_err(err)?;
            }
            Swatch::Dashed(c) => {
                for x in [x0, x0 + 12, x0 + 24] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 7, y)],
                        c.stroke_width(2),
                    ))
                    .map_err(err)?;
                }
            }
            Swatch::Marker(c) => {
                area.draw(&PathElement::new(
                    vec![((x0 + x1) / 2, y - 8), ((x0 + x1) / 2, y + 8)],
                    c.stroke_width(2),
                ))
                .map_err(err)?;
            }
        }
        let mut text: String = label.chars().take(24).collect();
        if label.chars().count() > 24 {
            text.push('…');
        }
        area.draw(&Text::new(
            text,
            (x1 + 8, y - 7),
            (FONT, 14).into_font().color(&BLACK),
        ))
        .map_err(err)?;
        y += 24;
    }
    Ok(())
}

fn event_entries(kinds: &BTreeMap<String, Vec<f64>>) -> Vec<(String, Swatch)> {
    kinds
        .iter()
        .map(|(kind, times)| {
            (
                format!("{kind} ({})", times.len()),
                Swatch::Marker(event_color(kind)),
            )
        })
        .collect()
}

fn no_data(area: &DrawingArea<SVGBackend, Shift>, title: &str, why: &str) -> anyhow::Result<()> {
    area.draw(&Text::new(
        title.to_string(),
        (20, 20),
        (FONT, 20).into_font().color(&BLACK),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        why.to_string(),
        (WIDTH as i32 / 2 - 200, HEIGHT as i32 / 2),
        (FONT, 16).into_font().color(&RGBColor(100, 100, 100)),
    ))
    .map_err(err)?;
    Ok(())
}

/// A log-axis tick label: only 1, 2 and 5 times a power of ten are labelled, so the
/// labels near the top of a decade do not crowd each other.
fn log_tick_label(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return String::new();
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 0.05)
    {
        ms_label(v)
    } else {
        String::new()
    }
}

/// A latency tick label in ms: no trailing zeros, readable from 10 µs to 60 s.
fn ms_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{}", (v * 10.0).round() / 10.0)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// p99 per second, one line per policy, log-scale y, SLO dashed, events as markers.
pub fn p99_svg(input: &ReportInput) -> anyhow::Result<String> {
    let title = "p99 latency per second";
    let slo_ms = input.slo_p99_us as f64 / 1000.0;
    let series: Vec<Vec<Vec<(f64, f64)>>> = input
        .runs
        .iter()
        .map(|r| {
            segments(&r.seconds, |s| {
                (s.p99_us > 0).then(|| s.p99_us as f64 / 1000.0)
            })
        })
        .collect();
    let values = series.iter().flatten().flatten().map(|p| p.1);
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        if hi <= 0.0 {
            no_data(&root, title, "no latency samples in any run")?;
            root.present().map_err(err)?;
            drop(root);
            return Ok(svg);
        }
        let lo = if slo_ms > 0.0 { lo.min(slo_ms) } else { lo };
        let hi = hi.max(slo_ms);
        // Some room around the data; at least a factor 4 so the log axis gets ticks.
        let y_lo = (lo * 0.7).max(0.001);
        let y_hi = (hi * 1.4).max(y_lo * 4.0);
        let x_max = x_max(input);
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("p99 (ms, log scale)")
            .y_labels(12)
            .y_label_formatter(&|v| log_tick_label(*v))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(248, 248, 248))
            .bold_line_style(RGBColor(232, 232, 232))
            .draw()
            .map_err(err)?;
        let kinds = events_by_kind(input);
        for (kind, times) in &kinds {
            let style = event_color(kind).mix(0.75).stroke_width(1);
            chart
                .draw_series(
                    times
                        .iter()
                        .map(|&t| PathElement::new(vec![(t, y_lo), (t, y_hi)], style)),
                )
                .map_err(err)?;
        }
        if slo_ms > 0.0 {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, slo_ms), (x_max, slo_ms)],
                    10,
                    6,
                    SLO_COLOR.stroke_width(2),
                ))
                .map_err(err)?;
        }
        for (i, segs) in series.iter().enumerate() {
            for seg in segs {
                let style = policy_color(i).stroke_width(2);
                chart
                    .draw_series(LineSeries::new(seg.clone(), style))
                    .map_err(err)?;
                if seg.len() == 1 {
                    chart
                        .draw_series(
                            seg.iter()
                                .map(|&p| Circle::new(p, 3, policy_color(i).filled())),
                        )
                        .map_err(err)?;
                }
            }
        }
        let mut entries = policy_entries(input);
        if slo_ms > 0.0 {
            entries.push((
                format!("SLO p99 {} ms", ms_label(slo_ms)),
                Swatch::Dashed(SLO_COLOR),
            ));
        }
        entries.extend(event_entries(&kinds));
        legend(&side, &entries)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Local-hit ratio per second per policy (percent), with the same event markers.
pub fn local_hit_svg(input: &ReportInput) -> anyhow::Result<String> {
    let title = "local-hit ratio per second";
    let series: Vec<Vec<Vec<(f64, f64)>>> = input
        .runs
        .iter()
        .map(|r| segments(&r.seconds, |s| s.local_hit.map(|h| h * 100.0)))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        if series.iter().all(|s| s.is_empty()) {
            no_data(&root, title, "no run reported a local-hit ratio")?;
            root.present().map_err(err)?;
            drop(root);
            return Ok(svg);
        }
        let x_max = x_max(input);
        let (plot, side) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..100f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("requests served locally (%)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(248, 248, 248))
            .bold_line_style(RGBColor(232, 232, 232))
            .draw()
            .map_err(err)?;
        let kinds = events_by_kind(input);
        for (kind, times) in &kinds {
            let style = event_color(kind).mix(0.75).stroke_width(1);
            chart
                .draw_series(
                    times
                        .iter()
                        .map(|&t| PathElement::new(vec![(t, 0.0), (t, 100.0)], style)),
                )
                .map_err(err)?;
        }
        for (i, segs) in series.iter().enumerate() {
            for seg in segs {
                chart
                    .draw_series(LineSeries::new(
                        seg.clone(),
                        policy_color(i).stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
        let mut entries = policy_entries(input);
        entries.extend(event_entries(&kinds));
        legend(&side, &entries)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One legend line per policy, in its colour.
fn policy_entries(input: &ReportInput) -> Vec<(String, Swatch)> {
    input
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.policy.clone(), Swatch::Line(policy_color(i))))
        .collect()
}

pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// White (0) to dark blue (1); NaN or out-of-grid cells are light grey.
fn heat_color(v: Option<f64>) -> String {
    match v.filter(|v| v.is_finite()) {
        None => "#e0e0e0".to_string(),
        Some(v) => {
            let t = v.clamp(0.0, 1.0);
            let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
            format!(
                "#{:02x}{:02x}{:02x}",
                mix(247.0, 8.0),
                mix(251.0, 48.0),
                mix(255.0, 107.0)
            )
        }
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Placement (predicted) beside demand (actual): one grid each, rows and columns labelled, shared colour scale.
pub fn heatmap_svg(policy: &str, h: &Heatmap) -> String {
    let rows = h.rows.len().max(1);
    let cols = h.cols.len().max(1);
    let label_w = 110.0;
    let panel_w = 440.0;
    let gap = 50.0;
    let top = 70.0;
    let cell_w = panel_w / cols as f64;
    let cell_h = (360.0 / rows as f64).clamp(6.0, 28.0);
    let grid_h = cell_h * rows as f64;
    let col_label_h = 70.0;
    let scale_x = label_w + 2.0 * panel_w + gap + 30.0;
    let width = scale_x + 80.0;
    let bar_h = grid_h.max(100.0);
    let height = top + bar_h.max(grid_h + col_label_h) + 10.0;
    // Label every k-th row/column so labels never overlap.
    let row_step = ((14.0 / cell_h).ceil() as usize).max(1);
    let col_step = ((14.0 / cell_w).ceil() as usize).max(1);
    let show_values = cell_w >= 34.0 && cell_h >= 16.0;

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{:.0}\" y=\"26\" font-size=\"20\" text-anchor=\"middle\">placement heatmap: {}</text>",
        width / 2.0,
        xml_escape(policy)
    );
    for (panel, (name, grid)) in [("placement", &h.predicted), ("demand", &h.actual)]
        .into_iter()
        .enumerate()
    {
        let x0 = label_w + panel as f64 * (panel_w + gap);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"16\" text-anchor=\"middle\">{name}</text>",
            x0 + panel_w / 2.0,
            top - 12.0
        );
        for r in 0..rows {
            for c in 0..cols {
                let v = grid.get(r).and_then(|row| row.get(c)).copied();
                let (x, y) = (x0 + c as f64 * cell_w, top + r as f64 * cell_h);
                let _ = write!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell_w:.1}\" height=\"{cell_h:.1}\" \
                     fill=\"{}\" stroke=\"white\" stroke-width=\"0.5\"/>",
                    heat_color(v)
                );
                if let (true, Some(v)) = (show_values, v.filter(|v| v.is_finite())) {
                    let fg = if v > 0.5 { "white" } else { "black" };
                    let _ = write!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" \
                         dominant-baseline=\"central\" fill=\"{fg}\">{v:.2}</text>",
                        x + cell_w / 2.0,
                        y + cell_h / 2.0
                    );
                }
            }
        }
        for (c, name) in h.cols.iter().enumerate().step_by(col_step) {
            let x = x0 + (c as f64 + 0.5) * cell_w;
            let y = top + grid_h + 8.0;
            let _ = write!(
                s,
                "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"11\" text-anchor=\"end\" \
                 dominant-baseline=\"central\" transform=\"rotate(-45 {x:.1} {y:.1})\">{}</text>",
                xml_escape(&cut(name, 12))
            );
        }
    }
    for (r, name) in h.rows.iter().enumerate().step_by(row_step) {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" \
             dominant-baseline=\"central\">{}</text>",
            label_w - 6.0,
            top + (r as f64 + 0.5) * cell_h,
            xml_escape(&cut(name, 16))
        );
    }
    // Colour scale: 0 at the bottom, 1 at the top.
    let steps = 10;
    for i in 0..steps {
        let v = (i as f64 + 0.5) / steps as f64;
        let y = top + bar_h - (i + 1) as f64 * bar_h / steps as f64;
        let _ = write!(
            s,
            "<rect x=\"{scale_x:.1}\" y=\"{y:.1}\" width=\"16\" height=\"{:.1}\" fill=\"{}\"/>",
            bar_h / steps as f64 + 0.5,
            heat_color(Some(v))
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" dominant-baseline=\"central\">1.0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" dominant-baseline=\"central\">0.0</text></svg>",
        scale_x + 22.0,
        top + 4.0,
        scale_x + 22.0,
        top + bar_h - 4.0
    );
    s
}
