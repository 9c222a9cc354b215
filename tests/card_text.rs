//! What a clinician reads: every card the shipped rule packs produce on their own test cases,
//! rendered as an EHR renders `detail` (CommonMark with GitHub tables), must show no literal escape
//! sequences and no raw HTML; tables must render as tables; every override reason must be a code of
//! a CodeSystem shipped with the rules, and no two reasons of a card may share a code. And no two
//! shipped services may answer the same hook with the same rule (the clinician would see its card
//! twice).
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cardinal::cds_hooks::Card;
use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::rule_tests;
use pulldown_cmark::{Event, Options, Parser, Tag};
use serde_json::Value;

/// Literal escape sequences a rule can leave in text (a backtick string does not translate them).
const ESCAPES: &[&str] = &["\\n", "\\t", "\\r", "\\\"", "\\u", "\\x"];

fn load() -> Cardinal {
    Cardinal::load(Config {
        rules_dir: common::project_path("rules"),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("rules: {e}"))
}

/// Every card the packs return on their test cases, with the case it came from.
fn cards_of_test_cases(cardinal: &Cardinal) -> Vec<(String, Card)> {
    let suites = rule_tests::discover(&common::project_path("rules")).unwrap();
    let mut cards = Vec::new();
    for suite in &suites {
        for case in &suite.cases {
            let (actual, _) = rule_tests::evaluate_case(cardinal, case);
            let name = case
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            for card in actual.response.map(|r| r.cards).unwrap_or_default() {
                cards.push((name.clone(), card));
            }
        }
    }
    cards
}

/// Problems of one card's Markdown `detail`, as an EHR would render it.
fn markdown_problems(detail: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut tables = 0;
    for event in Parser::new_ext(detail, options) {
        match event {
            Event::Html(html) | Event::InlineHtml(html) => {
                problems.push(format!("raw HTML: {:?}", html.trim()));
            }
            Event::Text(text) | Event::Code(text) => {
                for escape in ESCAPES {
                    if text.contains(escape) {
                        problems.push(format!("literal {escape} in {:?}", text.as_ref()));
                    }
                }
            }
            Event::Start(Tag::Table(_)) => tables += 1,
            _ => {}
        }
    }
    let table_lines = detail
        .lines()
        .filter(|l| l.trim_start().starts_with("|---") || l.trim_start().starts_with("| ---"))
        .count();
    if table_lines != tables {
        problems.push(format!(
            "{table_lines} table header rule(s) but {tables} rendered table(s)"
        ));
    }
    problems
}

/// Problems of a plain-text field (summary, labels, displays): no escapes, no tags.
fn text_problems(field: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for escape in ESCAPES {
        if text.contains(escape) {
            problems.push(format!("{field}: literal {escape} in {text:?}"));
        }
    }
    if text.contains("</") || text.contains("<br") || text.contains("<p>") {
        problems.push(format!("{field}: HTML in {text:?}"));
    }
    problems
}

/// (system, code) of every concept of every CodeSystem shipped below `rules/`.
fn shipped_codes(dir: &Path, out: &mut BTreeSet<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            shipped_codes(&path, out);
        } else if path.extension().is_some_and(|x| x == "json")
            && path.parent().is_some_and(|p| p.ends_with("codesystems"))
        {
            let cs: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let url = cs["url"].as_str().unwrap().to_owned();
            fn concepts(list: &Value, url: &str, out: &mut BTreeSet<(String, String)>) {
                for c in list.as_array().into_iter().flatten() {
                    out.insert((url.to_owned(), c["code"].as_str().unwrap().to_owned()));
                    concepts(&c["concept"], url, out);
                }
            }
            concepts(&cs["concept"], &url, out);
        }
    }
}

#[test]
fn every_card_of_the_packs_reads_as_markdown_without_escapes_or_html() {
    let cardinal = load();
    let cards = cards_of_test_cases(&cardinal);
    assert!(
        cards.len() >= 30,
        "only {} cards from the test cases",
        cards.len()
    );
    let mut problems = Vec::new();
    let mut per_rule: BTreeMap<String, usize> = BTreeMap::new();
    for (case, card) in &cards {
        let rule = card.explanation().map(|e| e.rule_id.clone()).unwrap();
        *per_rule.entry(rule.clone()).or_default() += 1;
        let mut found = markdown_problems(card.detail.as_deref().unwrap_or_default());
        found.extend(text_problems("summary", &card.summary));
        for s in &card.suggestions {
            found.extend(text_problems("suggestion label", &s.label));
            for a in &s.actions {
                found.extend(text_problems(
                    "action description",
                    a.description.as_deref().unwrap_or_default(),
                ));
            }
        }
        for r in &card.override_reasons {
            found.extend(text_problems(
                "override reason",
                r.display.as_deref().unwrap_or_default(),
            ));
        }
        for l in &card.links {
            found.extend(text_problems("link label", &l.label));
        }
        problems.extend(found.into_iter().map(|p| format!("{case} ({rule}): {p}")));
    }
    // Every rule with test cases that fire is covered, the opioid report table included.
    for rule in [
        "rec10-urine-drug-testing",
        "rec08-naloxone-risk-mitigation",
        "metformin-egfr",
    ] {
        assert!(
            per_rule.contains_key(rule),
            "no card of {rule}: {per_rule:?}"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_unexpected_results_report_is_a_markdown_table() {
    // The guard itself: the HTML report this replaced, and a backtick string's `\n\n`, are caught.
    let html = "<style>.uds td{border:1px}</style>\n<table><tr><td>pos</td></tr></table>";
    assert!(
        markdown_problems(html)
            .iter()
            .any(|p| p.starts_with("raw HTML"))
    );
    assert!(markdown_problems("**Total: 180 MME/day**.\\n\\nWhen opioids").len() == 1);
    assert!(markdown_problems("| a | b |\n|---|---|\n| 1 | 2 |\n").is_empty());
    let cardinal = load();
    let cards = cards_of_test_cases(&cardinal);
    let report = cards
        .iter()
        .find(|(_, c)| c.summary == "Patient May Have Unexpected Toxicology Test Results")
        .map(|(_, c)| c.detail.clone().unwrap())
        .expect("a card B among the REC10 cases");
    assert!(report.contains("| Substance |"), "{report}");
    assert!(report.contains("31 days before the test") || !report.contains("\\*"));
    assert!(!report.contains("30 days"), "{report}");
}

#[test]
fn override_reasons_are_shipped_codes_and_distinct_on_each_card() {
    let mut codes = BTreeSet::new();
    shipped_codes(&common::project_path("rules"), &mut codes);
    let cardinal = load();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (case, card) in cards_of_test_cases(&cardinal) {
        let mut seen = BTreeSet::new();
        for r in &card.override_reasons {
            checked += 1;
            if !codes.contains(&(r.system.clone(), r.code.clone())) {
                problems.push(format!(
                    "{case} \"{}\": {}|{} is in no shipped CodeSystem",
                    card.summary, r.system, r.code
                ));
            }
            if !seen.insert((r.system.clone(), r.code.clone())) {
                problems.push(format!(
                    "{case} \"{}\": code {} used twice",
                    card.summary, r.code
                ));
            }
        }
    }
    assert!(checked > 50, "only {checked} override reasons checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_two_services_answer_the_same_hook_with_the_same_rule() {
    let cardinal = load();
    let duplicates = cardinal::lint::duplicate_rules(cardinal.rule_set().registry());
    let lines: Vec<String> = duplicates.iter().map(ToString::to_string).collect();
    assert!(lines.is_empty(), "{}", lines.join("\n"));
    // The check itself: the same rule file registered twice on one hook is found.
    let dir = tempfile::tempdir().unwrap();
    for id in ["a", "b"] {
        let d = dir.path().join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("service.toml"),
            format!(
                "id = \"{id}\"\nhook = \"patient-view\"\ndescription = \"d\"\nversion = \"1\"\nrule_files = [\"../shared.rhai\"]\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("shared.rhai"),
        "card(#{summary: \"hi\", indicator: \"info\"});",
    )
    .unwrap();
    let twice = Cardinal::load(Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default().development()
    })
    .unwrap();
    assert_eq!(
        cardinal::lint::duplicate_rules(twice.rule_set().registry()).len(),
        1
    );
}

#[test]
fn cardinal_check_warns_on_the_shipped_rules_about_nothing() {
    let cardinal = load();
    let warnings = cardinal::lint::lint(
        &common::project_path("rules"),
        cardinal.rule_set().registry(),
    );
    let lines: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(lines.is_empty(), "{}", lines.join("\n"));
}

#[test]
fn the_naloxone_card_suggests_ordering_naloxone_instead_of_calling_it_an_override() {
    let cardinal = load();
    let cards = cards_of_test_cases(&cardinal);
    let rec08: Vec<&Card> = cards
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.summary == "Incorporate Risk Mitigation Strategies Into Opioid Therapy")
        .collect();
    assert!(rec08.len() >= 3, "REC08 cards: {}", rec08.len());
    let naloxone: Value = serde_json::from_str(
        &std::fs::read_to_string(common::project_path(
            "rules/opioid-cds/valuesets/naloxone-medications.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let in_value_set = |code: &str| {
        naloxone["expansion"]["contains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == code)
    };
    for card in rec08 {
        let action = &card.suggestions[0].actions[0];
        let resource = action.resource.as_ref().unwrap();
        assert_eq!(resource["resourceType"], "MedicationRequest");
        assert_eq!(resource["status"], "draft");
        let code = resource["medicationCodeableConcept"]["coding"][0]["code"]
            .as_str()
            .unwrap();
        assert!(in_value_set(code), "{code} is not in naloxone-medications");
        assert!(
            card.override_reasons.iter().all(|r| !r
                .display
                .as_deref()
                .unwrap_or_default()
                .contains("Naloxone ordered")),
            "{:?}",
            card.override_reasons
        );
    }
}
