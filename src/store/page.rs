//! The analytics page (`GET /analytics` on the admin listener): server-rendered HTML with inline SVG
//! charts (override rate per rule, firing rate over time, top override reasons) and no script, so it
//! needs no front-end build and works in any browser an operator has.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::analytics::{Analytics, RuleFigures};

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{:.0}%", v * 100.0))
}

fn num(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2430}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}\
table{border-collapse:collapse}th,td{padding:.25rem .6rem;border-bottom:1px solid #dde;text-align:right}\
th:nth-child(-n+4),td:nth-child(-n+4){text-align:left}\
.flag{color:#fff;background:#c0392b;border-radius:3px;padding:0 .3rem}\
.muted{color:#667}svg text{font:11px system-ui,sans-serif;fill:#1d2430}";

/// The whole page.
pub fn render(analytics: &Analytics) -> String {
    let mut html = String::new();
    let w = &analytics.window;
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Cardinal analytics</title><style>{STYLE}</style></head><body>\
         <h1>Cardinal: cards, feedback and drift</h1>\
         <p class=\"muted\">{} to {} · {} database · drift: today against the {} days before, factor {}</p>",
        esc(&w.since.format("%Y-%m-%d %H:%M UTC").to_string()),
        esc(&w.until.format("%Y-%m-%d %H:%M UTC").to_string()),
        analytics.database,
        analytics.drift_baseline_days,
        analytics.drift_factor,
    );
    drift_section(&mut html, analytics);
    rules_table(&mut html, analytics);
    html.push_str("<h2>Override rate per rule (active)</h2>");
    override_chart(&mut html, &analytics.rules);
    html.push_str("<h2>Firing rate over time (cards per 1,000 calls per day)</h2>");
    firing_chart(&mut html, analytics);
    html.push_str("<h2>Top override reasons</h2>");
    reasons_chart(&mut html, &analytics.rules);
    html.push_str("</body></html>");
    html
}

fn drift_section(html: &mut String, analytics: &Analytics) {
    let flagged: Vec<_> = analytics.drift.iter().filter(|d| d.flagged).collect();
    html.push_str("<h2>Drift</h2>");
    if flagged.is_empty() {
        html.push_str("<p id=\"drift-none\">No rule's firing rate has drifted today.</p>");
        return;
    }
    html.push_str("<ul id=\"drift\">");
    for d in flagged {
        let _ = write!(
            html,
            "<li><span class=\"flag\">{}</span> {} / {}: {:.1} per 1,000 calls today against {:.1} before</li>",
            d.direction,
            esc(&d.service_id),
            esc(&d.rule_id),
            d.today_rate * 1000.0,
            d.baseline_rate * 1000.0,
        );
    }
    html.push_str("</ul>");
}

fn rules_table(html: &mut String, analytics: &Analytics) {
    html.push_str(
        "<h2>Rules</h2><table id=\"rules\"><thead><tr><th>Service</th><th>Rule</th><th>Version</th>\
         <th>Mode</th><th>Shown</th><th>Accepted</th><th>Overridden</th><th>No feedback</th>\
         <th>Override rate</th><th>Suggestions accepted</th><th>Patients</th><th>Repeats</th>\
         <th>Per 1,000 calls</th><th>Drift</th></tr></thead><tbody>",
    );
    for r in &analytics.rules {
        let drift = analytics
            .drift
            .iter()
            .find(|d| {
                d.flagged
                    && r.mode == "active"
                    && d.service_id == r.service_id
                    && d.rule_id == r.rule_id
            })
            .map_or_else(String::new, |d| {
                format!("<span class=\"flag\">{}</span>", d.direction)
            });
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.service_id),
            esc(&r.rule_id),
            esc(&r.rule_version),
            esc(&r.mode),
            r.shown,
            r.accepted,
            r.overridden,
            r.no_feedback,
            pct(r.override_rate),
            r.suggestions_accepted,
            r.patients,
            r.repeats,
            num(r.firings_per_1000_calls),
            drift,
        );
    }
    html.push_str("</tbody></table>");
    if analytics.rules.is_empty() {
        html.push_str("<p>No cards in this window.</p>");
    }
}

/// Horizontal bars, one per label, `value` in 0..=`max`.
fn bars(html: &mut String, id: &str, rows: &[(String, f64, String)], max: f64) {
    const LABEL: f64 = 260.0;
    const WIDTH: f64 = 360.0;
    let height = 22.0 * rows.len() as f64 + 10.0;
    let _ = write!(
        html,
        "<svg id=\"{id}\" width=\"{}\" height=\"{height}\" role=\"img\">",
        LABEL + WIDTH + 80.0
    );
    for (i, (label, value, text)) in rows.iter().enumerate() {
        let y = 22.0 * i as f64 + 5.0;
        let w = if max > 0.0 { WIDTH * value / max } else { 0.0 };
        let _ = write!(
            html,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{LABEL}\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"#3b6ea8\"/>\
             <text x=\"{:.1}\" y=\"{}\">{}</text>",
            y + 12.0,
            esc(label),
            LABEL + w + 4.0,
            y + 12.0,
            esc(text),
        );
    }
    html.push_str("</svg>");
}

fn override_chart(html: &mut String, rules: &[RuleFigures]) {
    let rows: Vec<_> = rules
        .iter()
        .filter(|r| r.mode == "active")
        .filter_map(|r| {
            r.override_rate.map(|rate| {
                (
                    format!("{} / {} v{}", r.service_id, r.rule_id, r.rule_version),
                    rate,
                    pct(Some(rate)),
                )
            })
        })
        .collect();
    if rows.is_empty() {
        html.push_str("<p>No feedback in this window.</p>");
    } else {
        bars(html, "override-chart", &rows, 1.0);
    }
}

fn reasons_chart(html: &mut String, rules: &[RuleFigures]) {
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    for reason in rules.iter().flat_map(|r| &r.override_reasons) {
        let label = reason
            .display
            .clone()
            .or_else(|| reason.code.clone())
            .unwrap_or_else(|| "(no reason given)".into());
        *reasons.entry(label).or_default() += reason.count;
    }
    let mut ranked: Vec<_> = reasons.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(10);
    let max = ranked.first().map_or(0, |r| r.1) as f64;
    let rows: Vec<_> = ranked
        .into_iter()
        .map(|(label, n)| (label, n as f64, n.to_string()))
        .collect();
    if rows.is_empty() {
        html.push_str("<p>No overrides in this window.</p>");
    } else {
        bars(html, "reasons-chart", &rows, max);
    }
}

/// One polyline per active rule over the window's days.
fn firing_chart(html: &mut String, analytics: &Analytics) {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const COLORS: [&str; 6] = [
        "#3b6ea8", "#c0392b", "#27ae60", "#8e44ad", "#d68910", "#17a589",
    ];
    let days: Vec<&str> = {
        let mut d: Vec<&str> = analytics.daily.iter().map(|d| d.day.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    let mut series: BTreeMap<(String, String), Vec<(usize, f64)>> = BTreeMap::new();
    for d in analytics.daily.iter().filter(|d| d.mode == "active") {
        let Some(x) = days.iter().position(|day| *day == d.day) else {
            continue;
        };
        let rate = if d.calls > 0 {
            d.cards as f64 * 1000.0 / d.calls as f64
        } else {
            0.0
        };
        series
            .entry((d.service_id.clone(), d.rule_id.clone()))
            .or_default()
            .push((x, rate));
    }
    if series.is_empty() {
        html.push_str("<p>No active cards in this window.</p>");
        return;
    }
    let max = series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let step = if days.len() > 1 {
        W / (days.len() - 1) as f64
    } else {
        0.0
    };
    let _ = write!(
        html,
        "<svg id=\"firing-chart\" width=\"{}\" height=\"{}\" role=\"img\">\
         <line x1=\"40\" y1=\"{H}\" x2=\"{}\" y2=\"{H}\" stroke=\"#889\"/>\
         <text x=\"0\" y=\"12\">{max:.0}</text><text x=\"0\" y=\"{H}\">0</text>",
        W + 60.0,
        H + 40.0 + 14.0 * (series.len() / 4) as f64,
        W + 40.0,
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            html,
            "<text x=\"40\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\">{}</text>",
            H + 16.0,
            esc(first),
            W - 30.0,
            H + 16.0,
            esc(last)
        );
    }
    for (i, ((service, rule), points)) in series.iter().enumerate() {
        let color = COLORS.get(i % COLORS.len()).copied().unwrap_or("#333");
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", 40.0 + step * *x as f64, H - H * y / max))
            .collect();
        for point in &path {
            if let Some((x, y)) = point.split_once(',') {
                let _ = write!(
                    html,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>"
                );
            }
        }
        let _ = write!(
            html,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"><title>{} / {}</title></polyline>\
             <text x=\"{}\" y=\"{}\" style=\"fill:{color}\">{} / {}</text>",
            path.join(" "),
            esc(service),
            esc(rule),
            40.0 + 160.0 * (i % 4) as f64,
            H + 32.0 + 14.0 * (i / 4) as f64,
            esc(service),
            esc(rule),
        );
    }
    html.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
