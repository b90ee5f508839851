//! `report.html`: one self-contained page. The SVGs are inlined (their namespace
//! attribute dropped, which HTML does not need, so the page holds no URL at all apart
//! from what the caller's text contains), CSS is inline, and there is no script.

use std::fmt::Write as _;

use super::plots::xml_escape;
use super::{ms, table_cells, ReportInput};

const STYLE: &str = "\
body{font-family:sans-serif;margin:24px auto;max-width:1240px;color:#222;line-height:1.4}\
h1{font-size:26px;margin-bottom:4px}h2{font-size:20px;margin-top:34px;border-bottom:1px solid #ddd}\
.desc{color:#444;margin-top:0}code{background:#f3f3f3;padding:2px 5px;border-radius:3px;\
word-break:break-all}table{border-collapse:collapse;font-size:14px}\
th,td{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}\
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left;font-weight:bold}\
.plot svg{max-width:100%;height:auto;display:block}\
.how{background:#f8f8f4;border-left:3px solid #c8c8a0;padding:6px 12px;font-size:14px;color:#333}\
.events td,.events th{font-weight:normal;text-align:left}.events th{font-weight:bold}";

/// Most events listed per run in the page's table (all are in the plots).
const MAX_LISTED_EVENTS: usize = 40;

/// Inline an SVG document: drop an XML prolog and the namespace attribute.
fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(at) => &svg[at..],
        None => svg,
    };
    body.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

pub fn page(
    input: &ReportInput,
    p99_svg: &str,
    local_hit_svg: &str,
    heatmaps: &[(&str, String)],
) -> String {
    let e = xml_escape;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>augur bench: {}</title><style>{STYLE}</style></head><body>\n",
        e(input.scenario)
    );
    let _ = write!(
        h,
        "<h1>augur scenario: {}</h1>\n<p class=\"desc\">{}</p>\n\
         <p>Produced by <code>{}</code></p>\n",
        e(input.scenario),
        e(input.description),
        e(input.command)
    );

    let (header, rows) = table_cells(input);
    let _ = write!(
        h,
        "<h2>Summary</h2>\n<p>SLO: p99 at most {} ms in every second.</p>\n<table><tr>",
        ms(input.slo_p99_us)
    );
    for cell in &header {
        let _ = write!(h, "<th>{}</th>", e(cell));
    }
    h.push_str("</tr>\n");
    for row in &rows {
        h.push_str("<tr>");
        for cell in row {
            let _ = write!(h, "<td>{}</td>", e(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h.push_str(
        "<p class=\"how\">How to read this: one row per placement policy over the same \
         workload. Latency percentiles are over every request of the run (merged \
         histograms, from each request's scheduled send time, so queueing counts). \
         <b>SLO viol s</b> counts the seconds whose p99 exceeded the SLO; <b>local hit</b> \
         is the share of requests the receiving node served without a remote hop; \
         <b>migrated</b>, <b>moves</b>, <b>splits</b>, <b>merges</b> are the data-movement \
         cost paid for it; <b>fcst err</b> is the forecaster's error where a policy \
         forecasts.</p>\n",
    );

    let _ = write!(
        h,
        "<h2>p99 latency per second</h2>\n<div class=\"plot\">{}</div>\n",
        inline_svg(p99_svg)
    );
    h.push_str(
        "<p class=\"how\">How to read this: one line per policy; each point is the p99 of \
         the replies seen in that second, on a log scale. The red dashed line is the SLO: \
         points above it are violating seconds. Vertical lines mark events (legend on the \
         right, with counts): <i>shift</i> and <i>hint</i> are workload changes shared by \
         every run; <i>migration</i>, <i>split</i>, <i>merge</i> are placement actions \
         of any policy. A good policy's line stays under the SLO and recovers soon after \
         a shift.</p>\n",
    );
    let _ = write!(
        h,
        "<h2>Local-hit ratio per second</h2>\n<div class=\"plot\">{}</div>\n",
        inline_svg(local_hit_svg)
    );
    h.push_str(
        "<p class=\"how\">How to read this: the share of requests served by the node that \
         received them, per second and policy. It drops when the hot keys move away from \
         their clients (a shift) and climbs back as the policy moves data; the time it \
         takes to climb back is the policy's reaction time.</p>\n",
    );

    if !heatmaps.is_empty() {
        h.push_str("<h2>Placement heatmaps</h2>\n");
        for (policy, svg) in heatmaps {
            let _ = write!(
                h,
                "<h3>{}</h3>\n<div class=\"plot\">{}</div>\n",
                e(policy),
                inline_svg(svg)
            );
        }
        h.push_str(
            "<p class=\"how\">How to read this: rows are client sites, columns seconds. \
             Left (placement): 1 where that site's node owned the workload's hot range at \
             the end of the second — the policy's bet on where the load would be. Right \
             (demand): that site's share of the hot range's requests in the second. A \
             policy that predicts well has its dark cells on the left start no later than \
             those on the right; a reactive one trails them by its reaction time.</p>\n",
        );
    }

    if input.runs.iter().any(|r| !r.events.is_empty()) {
        h.push_str("<h2>Events</h2>\n");
        for r in input.runs {
            if r.events.is_empty() {
                continue;
            }
            let _ = write!(
                h,
                "<h3>{} ({} events)</h3>\n<table class=\"events\"><tr><th>at (s)</th>\
                 <th>kind</th><th>what</th></tr>\n",
                e(&r.policy),
                r.events.len()
            );
            let mut events: Vec<_> = r.events.iter().collect();
            events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
            for ev in events.into_iter().take(MAX_LISTED_EVENTS) {
                let _ = writeln!(
                    h,
                    "<tr><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
                    ev.at_s,
                    e(&ev.kind),
                    e(&ev.label)
                );
            }
            if r.events.len() > MAX_LISTED_EVENTS {
                let _ = writeln!(
                    h,
                    "<tr><td></td><td></td><td>… {} more</td></tr>",
                    r.events.len() - MAX_LISTED_EVENTS
                );
            }
            h.push_str("</table>\n");
        }
    }
    h.push_str("</body></html>\n");
    h
}
