//! What a simulation tells an informaticist, derived from its counts: per service and rule, patients
//! evaluated and fired, the firing rate with its 95% interval, cards by indicator and per 100
//! patients, errors; the same by sex, age band, race and ethnicity, with the largest disparities
//! flagged; the condition that most often stopped each rule and, where the data to decide was absent,
//! the share of patients whose records lack it; candidates beside the rules they would replace.
//! As a terminal table, as JSON (which carries the raw counts, so shards merge), and as one
//! self-contained HTML page with inline SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::input::InputError;
use super::tally::{Counts, EvaluationError, RuleTally, Tally};

/// Groups smaller than this are not compared: their intervals say nothing.
const MIN_GROUP: u64 = 5;
/// 97.5th percentile of the standard normal: 95% two-sided intervals.
const Z: f64 = 1.959_964;

/// A proportion with its Wilson score 95% interval (sound for small groups and rates near 0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub numerator: u64,
    pub denominator: u64,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

impl Rate {
    pub fn wilson(numerator: u64, denominator: u64) -> Self {
        if denominator == 0 {
            return Self {
                numerator,
                denominator,
                rate: 0.0,
                low: 0.0,
                high: 0.0,
            };
        }
        let n = denominator as f64;
        let p = numerator as f64 / n;
        let z2 = Z * Z;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
        Self {
            numerator,
            denominator,
            rate: p,
            low: (centre - half).max(0.0),
            high: (centre + half).min(1.0),
        }
    }

    /// `12.5% [8.1–18.7]`.
    pub fn text(&self) -> String {
        format!(
            "{:.1}% [{:.1}–{:.1}]",
            self.rate * 100.0,
            self.low * 100.0,
            self.high * 100.0
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRate {
    pub dimension: String,
    pub group: String,
    pub fired: Rate,
}

/// A rule's results beside those of its candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    pub version: String,
    pub fired: Rate,
    /// Calls where candidate and rule in use disagreed.
    pub disagreements: u64,
}

/// An element whose absence left a rule undecided, and how many of the patients it ran for lack it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlindSpot {
    pub element: String,
    pub patients: u64,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    pub rule_id: String,
    pub version: String,
    pub mode: String,
    pub fired: Rate,
    pub cards: BTreeMap<String, u64>,
    pub cards_per_100_patients: f64,
    pub errors: u64,
    /// The condition that most often stopped it, and in how many calls.
    pub top_stop: Option<(String, u64)>,
    pub blind_spots: Vec<BlindSpot>,
    pub candidate: Option<CandidateReport>,
    pub groups: Vec<GroupRate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub id: String,
    pub hook: String,
    pub fired: Rate,
    pub calls: u64,
    pub rules: Vec<RuleReport>,
}

/// The widest gap in firing rate between two groups of one dimension, for one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disparity {
    pub service: String,
    pub rule: String,
    pub dimension: String,
    pub high_group: String,
    pub high: Rate,
    pub low_group: String,
    pub low: Rate,
    /// The intervals do not overlap.
    pub flagged: bool,
}

impl Disparity {
    pub fn gap(&self) -> f64 {
        self.high.rate - self.low.rate
    }
}

/// Everything derived, plus the counts it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub at: String,
    pub rule_set: String,
    pub shards: Vec<String>,
    pub patients: u64,
    pub calls: u64,
    pub services: Vec<ServiceReport>,
    /// Largest first; flagged ones are those whose intervals do not overlap.
    pub disparities: Vec<Disparity>,
    pub unsupported_searches: BTreeMap<String, u64>,
    pub input_errors: Vec<InputError>,
    pub evaluation_errors: Vec<EvaluationError>,
    /// The raw counts: `cardinal simulate merge` adds these up.
    pub tally: Tally,
}

fn group_rates(rule: &RuleTally) -> Vec<GroupRate> {
    let mut out = Vec::new();
    for (dimension, groups) in &rule.evaluated.groups {
        for (group, &evaluated) in groups {
            out.push(GroupRate {
                dimension: dimension.clone(),
                group: group.clone(),
                fired: Rate::wilson(rule.fired.group(dimension, group), evaluated),
            });
        }
    }
    out
}

fn disparities(service: &str, rule: &RuleTally, groups: &[GroupRate]) -> Vec<Disparity> {
    let mut out = Vec::new();
    for dimension in rule.evaluated.groups.keys() {
        let comparable: Vec<&GroupRate> = groups
            .iter()
            .filter(|g| &g.dimension == dimension && g.group != "unknown")
            .filter(|g| g.fired.denominator >= MIN_GROUP)
            .collect();
        let high = comparable
            .iter()
            .max_by(|a, b| a.fired.rate.total_cmp(&b.fired.rate));
        let low = comparable
            .iter()
            .min_by(|a, b| a.fired.rate.total_cmp(&b.fired.rate));
        if let (Some(high), Some(low)) = (high, low)
            && high.group != low.group
            && high.fired.rate > low.fired.rate
        {
            out.push(Disparity {
                service: service.to_owned(),
                rule: rule.rule_id.clone(),
                dimension: dimension.clone(),
                high_group: high.group.clone(),
                high: high.fired,
                low_group: low.group.clone(),
                low: low.fired,
                flagged: high.fired.low > low.fired.high,
            });
        }
    }
    out
}

fn counts_rate(fired: &Counts, evaluated: &Counts) -> Rate {
    Rate::wilson(fired.total, evaluated.total)
}

impl Report {
    pub fn from_tally(tally: Tally) -> Self {
        let mut services = Vec::new();
        let mut all_disparities = Vec::new();
        for (id, service) in &tally.services {
            let mut rules = Vec::new();
            for (key, rule) in &service.rules {
                if rule.mode == "candidate" {
                    continue;
                }
                let candidate =
                    service
                        .rules
                        .get(&format!("{key}@candidate"))
                        .map(|c| CandidateReport {
                            version: c.version.clone(),
                            fired: counts_rate(&c.fired, &c.evaluated),
                            disagreements: rule.disagreements,
                        });
                let groups = group_rates(rule);
                all_disparities.extend(disparities(id, rule, &groups));
                let evaluated = rule.evaluated.total;
                let blind_spots = rule
                    .unknown_elements
                    .iter()
                    .map(|(element, &patients)| BlindSpot {
                        element: element.clone(),
                        patients,
                        share: if evaluated == 0 {
                            0.0
                        } else {
                            patients as f64 / evaluated as f64
                        },
                    })
                    .collect();
                let cards: u64 = rule.cards.values().sum();
                rules.push(RuleReport {
                    rule_id: rule.rule_id.clone(),
                    version: rule.version.clone(),
                    mode: rule.mode.clone(),
                    fired: counts_rate(&rule.fired, &rule.evaluated),
                    cards: rule.cards.clone(),
                    cards_per_100_patients: if evaluated == 0 {
                        0.0
                    } else {
                        cards as f64 * 100.0 / evaluated as f64
                    },
                    errors: rule.errors.values().sum(),
                    top_stop: rule
                        .stopped_by
                        .iter()
                        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                        .map(|(c, n)| (c.clone(), *n)),
                    blind_spots,
                    candidate,
                    groups,
                });
            }
            services.push(ServiceReport {
                id: id.clone(),
                hook: service.hook.clone(),
                fired: counts_rate(&service.fired, &service.evaluated),
                calls: service.calls,
                rules,
            });
        }
        all_disparities.sort_by(|a, b| {
            b.flagged
                .cmp(&a.flagged)
                .then(b.gap().total_cmp(&a.gap()))
                .then_with(|| (&a.service, &a.rule).cmp(&(&b.service, &b.rule)))
        });
        Self {
            at: tally.at.clone(),
            rule_set: tally.rule_set.clone(),
            shards: tally.shards.iter().cloned().collect(),
            patients: tally.patients.total,
            calls: tally.calls,
            services,
            disparities: all_disparities,
            unsupported_searches: tally.unsupported_searches.clone(),
            input_errors: tally.input_errors.clone(),
            evaluation_errors: tally.evaluation_errors.clone(),
            tally,
        }
    }

    /// The terminal table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "simulated {} patients ({} calls) at {}, rule set {}{}",
            self.patients,
            self.calls,
            self.at,
            self.rule_set,
            if self.shards.len() == 1 && self.shards.first().is_some_and(|s| s == "1/1") {
                String::new()
            } else {
                format!(", shards {}", self.shards.join(", "))
            }
        );
        let _ = writeln!(
            out,
            "\n{:<38} {:<13} {:>8} {:>7}  {:<24} {:>9} {:>6}",
            "service / rule", "hook", "patients", "fired", "rate [95% CI]", "cards/100", "errors"
        );
        for service in &self.services {
            let _ = writeln!(
                out,
                "{:<38} {:<13} {:>8} {:>7}  {:<24} {:>9} {:>6}",
                service.id,
                service.hook,
                service.fired.denominator,
                service.fired.numerator,
                service.fired.text(),
                "",
                ""
            );
            for rule in &service.rules {
                let mode = if rule.mode == "active" {
                    String::new()
                } else {
                    format!(" [{}]", rule.mode)
                };
                let _ = writeln!(
                    out,
                    "  {:<36} {:<13} {:>8} {:>7}  {:<24} {:>9.1} {:>6}",
                    format!("{}{mode}", rule.rule_id),
                    "",
                    rule.fired.denominator,
                    rule.fired.numerator,
                    rule.fired.text(),
                    rule.cards_per_100_patients,
                    rule.errors
                );
                if let Some(c) = &rule.candidate {
                    let _ = writeln!(
                        out,
                        "    candidate {}: {} ({} calls disagree)",
                        c.version,
                        c.fired.text(),
                        c.disagreements
                    );
                }
                if rule.fired.numerator < rule.fired.denominator
                    && let Some((condition, calls)) = &rule.top_stop
                {
                    let _ = writeln!(
                        out,
                        "    most often stopped by: {condition} ({calls} calls)"
                    );
                }
                for spot in &rule.blind_spots {
                    let _ = writeln!(
                        out,
                        "    BLIND: {} absent for {} of {} patients ({:.0}%)",
                        spot.element,
                        spot.patients,
                        rule.fired.denominator,
                        spot.share * 100.0
                    );
                }
            }
        }
        let flagged: Vec<&Disparity> = self.disparities.iter().filter(|d| d.flagged).collect();
        if let Some(widest) = self.disparities.first() {
            let _ = writeln!(out, "\nlargest disparities (firing rate by group):");
            for d in self.disparities.iter().take(5) {
                let _ = writeln!(
                    out,
                    "  {}{} / {} by {}: {} {} vs {} {}",
                    if d.flagged { "FLAGGED " } else { "" },
                    d.service,
                    d.rule,
                    d.dimension,
                    d.high_group,
                    d.high.text(),
                    d.low_group,
                    d.low.text()
                );
            }
            let _ = writeln!(
                out,
                "  {} flagged (intervals do not overlap); widest gap {:.1} points",
                flagged.len(),
                widest.gap() * 100.0
            );
        }
        if !self.unsupported_searches.is_empty() {
            let _ = writeln!(
                out,
                "\nprefetch search parameters not emulated (answered as if absent):"
            );
            for (parameter, n) in &self.unsupported_searches {
                let _ = writeln!(out, "  {parameter} ({n} calls)");
            }
        }
        if !self.input_errors.is_empty() {
            let _ = writeln!(out, "\npatients skipped ({}):", self.input_errors.len());
            for e in &self.input_errors {
                let _ = writeln!(out, "  {}: {}", e.source, e.message);
            }
        }
        if !self.evaluation_errors.is_empty() {
            let _ = writeln!(
                out,
                "\nrule errors ({}; first 20):",
                self.evaluation_errors.len()
            );
            for e in self.evaluation_errors.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  {}: {} / {}: {}",
                    e.source, e.service, e.rule, e.kind
                );
            }
        }
        out
    }

    /// One self-contained page: tables and inline SVG charts, no script, no external resource.
    pub fn html(&self) -> String {
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        let _ = write!(
            out,
            "<title>Cardinal simulation: {} patients at {}</title>",
            self.patients,
            escape(&self.at)
        );
        out.push_str(
            "<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
             table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;\
             padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}\
             .flag{color:#b00020;font-weight:600}.blind{color:#8a5a00}h2{margin-top:2em}\
             svg text{font:12px system-ui,sans-serif}</style></head><body>",
        );
        let _ = write!(
            out,
            "<h1>Population simulation</h1><p>{} patients, {} calls, simulated at {}, rule set \
             <code>{}</code>, shards {}.</p>",
            self.patients,
            self.calls,
            escape(&self.at),
            escape(&self.rule_set),
            escape(&self.shards.join(", "))
        );
        out.push_str("<h2>Firing rate per rule</h2>");
        out.push_str(&self.chart());
        out.push_str(
            "<h2>Services and rules</h2><table><thead><tr><th>service / rule</th><th>hook</th>\
             <th>patients</th><th>fired</th><th>rate [95% CI]</th><th>cards / 100</th>\
             <th>errors</th><th>most often stopped by</th></tr></thead><tbody>",
        );
        for service in &self.services {
            let _ = write!(
                out,
                "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td></td><td></td><td></td></tr>",
                escape(&service.id),
                escape(&service.hook),
                service.fired.denominator,
                service.fired.numerator,
                service.fired.text()
            );
            for rule in &service.rules {
                let stop = rule
                    .top_stop
                    .as_ref()
                    .filter(|_| rule.fired.numerator < rule.fired.denominator)
                    .map(|(c, n)| format!("{} ({n})", escape(c)))
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "<tr><td>&nbsp;&nbsp;{}{}</td><td></td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
                    escape(&rule.rule_id),
                    if rule.mode == "active" {
                        String::new()
                    } else {
                        format!(" [{}]", escape(&rule.mode))
                    },
                    rule.fired.denominator,
                    rule.fired.numerator,
                    rule.fired.text(),
                    rule.cards_per_100_patients,
                    rule.errors,
                    stop
                );
                if let Some(c) = &rule.candidate {
                    let _ = write!(
                        out,
                        "<tr><td>&nbsp;&nbsp;&nbsp;&nbsp;candidate {}</td><td></td><td>{}</td><td>{}</td><td>{}</td><td></td><td></td><td>{} calls disagree</td></tr>",
                        escape(&c.version),
                        c.fired.denominator,
                        c.fired.numerator,
                        c.fired.text(),
                        c.disagreements
                    );
                }
                for spot in &rule.blind_spots {
                    let _ = write!(
                        out,
                        "<tr class=\"blind\"><td colspan=\"8\">&nbsp;&nbsp;&nbsp;&nbsp;blind: <code>{}</code> absent for {} patients ({:.0}%)</td></tr>",
                        escape(&spot.element),
                        spot.patients,
                        spot.share * 100.0
                    );
                }
            }
        }
        out.push_str("</tbody></table>");
        out.push_str("<h2>Largest disparities</h2>");
        if self.disparities.is_empty() {
            let _ = write!(
                out,
                "<p>No two groups of at least {MIN_GROUP} patients differ in any rule's firing rate.</p>"
            );
        }
        out.push_str(
            "<table><thead><tr><th>service / rule</th><th>by</th>\
             <th>highest</th><th>lowest</th><th></th></tr></thead><tbody>",
        );
        for d in self.disparities.iter().take(20) {
            let _ = write!(
                out,
                "<tr><td>{} / {}</td><td>{}</td><td>{}: {}</td><td>{}: {}</td><td{}>{}</td></tr>",
                escape(&d.service),
                escape(&d.rule),
                escape(&d.dimension),
                escape(&d.high_group),
                d.high.text(),
                escape(&d.low_group),
                d.low.text(),
                if d.flagged { " class=\"flag\"" } else { "" },
                if d.flagged {
                    "intervals do not overlap"
                } else {
                    ""
                }
            );
        }
        out.push_str("</tbody></table>");
        if !self.unsupported_searches.is_empty() {
            out.push_str("<h2>Prefetch parameters not emulated</h2><ul>");
            for (parameter, n) in &self.unsupported_searches {
                let _ = write!(
                    out,
                    "<li><code>{}</code>: {n} calls</li>",
                    escape(parameter)
                );
            }
            out.push_str("</ul>");
        }
        let _ = write!(
            out,
            "<h2>Errors</h2><p>{} patients skipped, {} rule errors.</p><ul>",
            self.input_errors.len(),
            self.evaluation_errors.len()
        );
        for e in &self.input_errors {
            let _ = write!(
                out,
                "<li>{}: {}</li>",
                escape(&e.source),
                escape(&e.message)
            );
        }
        out.push_str("</ul></body></html>\n");
        out
    }

    /// Horizontal bars: each rule's firing rate, with its interval as a whisker.
    fn chart(&self) -> String {
        let rows: Vec<(String, Rate)> = self
            .services
            .iter()
            .flat_map(|s| {
                s.rules
                    .iter()
                    .map(move |r| (format!("{} / {}", s.id, r.rule_id), r.fired))
            })
            .collect();
        // Labels are right-aligned before the bars: room for the longest at ~7 px a character.
        let longest = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let (label_width, bar_width, row) = (longest as f64 * 7.0 + 12.0, 400.0, 20.0);
        let height = row * rows.len() as f64 + 30.0;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"firing rate per rule\" \
             width=\"{}\" height=\"{height}\">",
            label_width + bar_width + 90.0
        );
        for (i, (label, rate)) in rows.iter().enumerate() {
            let y = row * i as f64 + 5.0;
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{label_width}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"#3b6ea5\"/>\
                 <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#222\"/>\
                 <text x=\"{}\" y=\"{}\">{:.1}%</text>",
                label_width - 6.0,
                y + 13.0,
                escape(label),
                rate.rate * bar_width,
                row - 6.0,
                label_width + rate.low * bar_width,
                label_width + rate.high * bar_width,
                y + (row - 6.0) / 2.0,
                y + (row - 6.0) / 2.0,
                label_width + bar_width + 6.0,
                y + 13.0,
                rate.rate * 100.0
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::Rate;

    #[test]
    fn wilson_intervals_match_published_values() {
        // Newcombe (1998), Table I: 81/263 → 0.2553–0.3662; 0/10 → 0–0.2775.
        let r = Rate::wilson(81, 263);
        assert!(
            (r.low - 0.2553).abs() < 1e-3 && (r.high - 0.3662).abs() < 1e-3,
            "{r:?}"
        );
        let r = Rate::wilson(0, 10);
        assert!(
            r.low.abs() < 1e-9 && (r.high - 0.2775).abs() < 1e-3,
            "{r:?}"
        );
        assert_eq!(Rate::wilson(0, 0).rate, 0.0);
    }
}
