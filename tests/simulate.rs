//! `cardinal simulate` on small shipped patients (`tests/fixtures/simulate/bundles/`) with two
//! fixture services (`tests/fixtures/rules-simulate/`), whose figures are computed by hand below; the
//! same patients as a Bulk FHIR NDJSON export; shards merged; a corrupt file; the HTML report in
//! headless Chromium (Debian's `chromium`, which the test requires).
//!
//! Simulated day 2026-06-01. By hand:
//! - `a1c-view` runs once for each of the 5 readable patients. Latest HbA1c on or before the day:
//!   p1 10.1 (fires), p2 6.0 (no), p3 none, p4 none (its 9.5 is dated 2026-09-01, after the day),
//!   p6 11.0 (fires; its older 7.0 is not the latest) → 2 of 5. Women p1, p3, p6 → 2 of 3; men p2,
//!   p4 → 0 of 2.
//! - `nsaid-older-adult` runs once per medication request active on the day: p1 ibuprofen (aged 76,
//!   fires), p2 ibuprofen (35, no), p4 ibuprofen (80, fires) and metformin (no ibuprofen); p6's
//!   ibuprofen is stopped → 3 patients, 4 calls, 2 of 3 patients fired, 2 cards.
//! - Wilson 95% intervals: 2/5 → [11.76%, 76.93%]; 2/3 → [20.77%, 93.85%] (Newcombe 1998, method 3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cardinal::config::Config;
use cardinal::simulate::report::Report;
use cardinal::simulate::{Options, Shard};
use serde_json::Value;

fn rules() -> PathBuf {
    common::project_path("tests/fixtures/rules-simulate")
}

fn bundles() -> PathBuf {
    common::project_path("tests/fixtures/simulate/bundles")
}

fn at() -> chrono::DateTime<chrono::Utc> {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn simulate(patients: &Path, threads: usize) -> Report {
    let options = Options {
        config: Config {
            rules_dir: rules(),
            ..Config::default()
        },
        patients: patients.to_path_buf(),
        at: at(),
        shard: Shard::ALL,
        threads,
        progress: false,
    };
    Report::from_tally(cardinal::simulate::run(&options).unwrap())
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 5e-4
}

#[test]
fn counts_rates_and_intervals_equal_the_hand_computed_figures() {
    let report = simulate(&bundles(), 2);
    assert_eq!(report.patients, 5, "five readable patients");
    assert_eq!(
        report.calls,
        5 + 4,
        "5 patient-view calls, 4 order-sign calls"
    );

    let a1c = report.services.iter().find(|s| s.id == "a1c-view").unwrap();
    assert_eq!((a1c.fired.numerator, a1c.fired.denominator), (2, 5));
    assert!(close(a1c.fired.rate, 0.4));
    assert!(
        close(a1c.fired.low, 0.1176) && close(a1c.fired.high, 0.7693),
        "{:?}",
        a1c.fired
    );
    let rule = &a1c.rules[0];
    assert_eq!(rule.rule_id, "a1c-above-9");
    assert_eq!(rule.cards.get("warning"), Some(&2));
    assert!(close(rule.cards_per_100_patients, 40.0));
    assert_eq!(
        rule.top_stop,
        Some(("an HbA1c result on record".to_owned(), 2)),
        "p3 has none, p4's is after the day"
    );
    let women = rule
        .groups
        .iter()
        .find(|g| g.dimension == "sex" && g.group == "female")
        .unwrap();
    assert_eq!((women.fired.numerator, women.fired.denominator), (2, 3));
    let men = rule
        .groups
        .iter()
        .find(|g| g.dimension == "sex" && g.group == "male")
        .unwrap();
    assert_eq!((men.fired.numerator, men.fired.denominator), (0, 2));
    let oldest = rule
        .groups
        .iter()
        .find(|g| g.dimension == "age band" && g.group == "75+")
        .unwrap();
    assert_eq!((oldest.fired.numerator, oldest.fired.denominator), (1, 2));

    let nsaid = report
        .services
        .iter()
        .find(|s| s.id == "nsaid-older-adult")
        .unwrap();
    assert_eq!((nsaid.fired.numerator, nsaid.fired.denominator), (2, 3));
    assert_eq!(nsaid.calls, 4);
    assert!(
        close(nsaid.fired.low, 0.2077) && close(nsaid.fired.high, 0.9385),
        "{:?}",
        nsaid.fired
    );
    let rule = &nsaid.rules[0];
    assert!(close(rule.cards_per_100_patients, 200.0 / 3.0));
    assert_eq!(
        report.tally.services["nsaid-older-adult"].rules["ibuprofen-65"].fired_calls,
        2
    );

    // The corrupt file is listed and skipped; nothing else failed.
    assert_eq!(report.input_errors.len(), 1, "{:?}", report.input_errors);
    assert!(report.input_errors[0].source.ends_with("p5-corrupt.json"));
    assert!(
        report.input_errors[0].message.contains("not JSON"),
        "{:?}",
        report.input_errors
    );
    assert!(
        report.evaluation_errors.is_empty(),
        "{:?}",
        report.evaluation_errors
    );
    assert!(
        report.unsupported_searches.is_empty(),
        "{:?}",
        report.unsupported_searches
    );
    let text = report.text();
    assert!(text.contains("p5-corrupt.json: not JSON"), "{text}");
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    assert_eq!(simulate(&bundles(), 1).tally, simulate(&bundles(), 4).tally);
}

/// The fixture patients as a Bulk FHIR export: one NDJSON file per resource type (one gzipped),
/// references as `Patient/{id}`, as `$export` writes them.
fn write_ndjson_export(dir: &Path) {
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(bundles())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains("corrupt"))
        .collect();
    files.sort();
    for file in files {
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for entry in bundle["entry"].as_array().unwrap() {
            let text = entry["resource"]
                .to_string()
                .replace("urn:uuid:", "Patient/");
            let ty = entry["resource"]["resourceType"]
                .as_str()
                .unwrap()
                .to_owned();
            by_type.entry(ty).or_default().push(text);
        }
    }
    for (ty, lines) in by_type {
        let body = lines.join("\n") + "\n";
        if ty == "Observation" {
            let file = std::fs::File::create(dir.join(format!("{ty}.ndjson.gz"))).unwrap();
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            gz.write_all(body.as_bytes()).unwrap();
            gz.finish().unwrap();
        } else {
            std::fs::write(dir.join(format!("{ty}.ndjson")), body).unwrap();
        }
    }
}

#[test]
fn an_ndjson_export_of_the_same_patients_gives_the_same_report() {
    let export = tempfile::tempdir().unwrap();
    write_ndjson_export(export.path());
    let from_ndjson = simulate(export.path(), 2);
    let from_bundles = simulate(&bundles(), 2);
    assert_eq!(from_ndjson.patients, from_bundles.patients);
    assert_eq!(from_ndjson.calls, from_bundles.calls);
    assert_eq!(from_ndjson.services, from_bundles.services);
    assert_eq!(from_ndjson.disparities, from_bundles.disparities);
    assert!(
        from_ndjson.input_errors.is_empty(),
        "{:?}",
        from_ndjson.input_errors
    );
}

fn cardinal(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .arg("simulate")
        .args(args)
        .current_dir(common::project_path(""))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cardinal simulate {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read_report(path: &Path) -> Report {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn shards_run_apart_and_merged_equal_one_run() {
    let out = tempfile::tempdir().unwrap();
    let path = |name: &str| out.path().join(name).to_string_lossy().into_owned();
    let rules = rules().to_string_lossy().into_owned();
    let patients = bundles().to_string_lossy().into_owned();
    let common_args = [
        "--rules",
        &rules,
        "--patients",
        &patients,
        "--at",
        "2026-06-01",
    ];
    cardinal(&[&common_args[..], &["--json", &path("whole.json")]].concat());
    for shard in ["1/3", "2/3", "3/3"] {
        let file = path(&format!("shard-{}.json", &shard[..1]));
        cardinal(&[&common_args[..], &["--shard", shard, "--json", &file]].concat());
    }
    let output = cardinal(&[
        "merge",
        &path("shard-1.json"),
        &path("shard-2.json"),
        &path("shard-3.json"),
        "--json",
        &path("merged.json"),
    ]);
    let whole = read_report(&out.path().join("whole.json"));
    let merged = read_report(&out.path().join("merged.json"));
    assert_eq!(merged.shards, ["1/3", "2/3", "3/3"]);
    assert_eq!(merged.patients, whole.patients);
    assert_eq!(merged.services, whole.services);
    assert_eq!(merged.disparities, whole.disparities);
    assert_eq!(merged.input_errors, whole.input_errors);
    let shard_patients: Vec<u64> = (1..=3)
        .map(|i| read_report(&out.path().join(format!("shard-{i}.json"))).patients)
        .collect();
    assert_eq!(shard_patients.iter().sum::<u64>(), 5, "{shard_patients:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("simulated 5 patients"));

    // A shard twice is refused.
    let twice = Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .args([
            "simulate",
            "merge",
            &path("shard-1.json"),
            &path("shard-1.json"),
        ])
        .output()
        .unwrap();
    assert!(!twice.status.success());
    assert!(
        String::from_utf8_lossy(&twice.stderr).contains("shard 1/3 is in more than one report")
    );
}

#[test]
fn a_rule_made_blind_by_an_absent_element_is_reported_as_such() {
    // The fixture patients plus one without a birth date, on ibuprofen: the rule cannot tell
    // whether they are 65 or older.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bundles()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p7", "resource": {"resourceType": "Patient", "id": "p7", "gender": "male"}},
        {"fullUrl": "urn:uuid:p7-ibu", "resource": {"resourceType": "MedicationRequest", "id": "p7-ibu",
            "status": "active", "intent": "order", "authoredOn": "2026-05-30",
            "subject": {"reference": "urn:uuid:p7"},
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "310965", "display": "Ibuprofen 200 MG Oral Tablet"}]}}}
    ]});
    std::fs::write(dir.path().join("p7-no-birth-date.json"), bundle.to_string()).unwrap();
    let report = simulate(dir.path(), 2);
    let nsaid = report
        .services
        .iter()
        .find(|s| s.id == "nsaid-older-adult")
        .unwrap();
    assert_eq!((nsaid.fired.numerator, nsaid.fired.denominator), (2, 4));
    let rule = &nsaid.rules[0];
    assert_eq!(rule.blind_spots.len(), 1, "{:?}", rule.blind_spots);
    let blind = &rule.blind_spots[0];
    assert_eq!(blind.element, "Patient.birthDate");
    assert_eq!(blind.patients, 1);
    assert!(close(blind.share, 0.25));
    assert_eq!(
        report.tally.services["nsaid-older-adult"].rules["ibuprofen-65"].stopped_by["the patient's age is known (unknown: data absent)"],
        1
    );
    assert!(
        report
            .text()
            .contains("BLIND: Patient.birthDate absent for 1 of 4 patients (25%)"),
        "{}",
        report.text()
    );
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("report.html");
    let rules = rules().to_string_lossy().into_owned();
    let patients = bundles().to_string_lossy().into_owned();
    cardinal(&[
        "--rules",
        &rules,
        "--patients",
        &patients,
        "--at",
        "2026-06-01",
        "--html",
        html.to_str().unwrap(),
    ]);
    let page = common::browser::render(&format!("file://{}", html.display()), 1200, 1600);
    for expected in [
        "Population simulation",
        "a1c-view",
        "nsaid-older-adult",
        "40.0% [11.8–76.9]",
        "<svg",
    ] {
        assert!(
            page.dom.contains(expected),
            "`{expected}` not in the rendered page:\n{}",
            page.dom
        );
    }
    assert!(
        page.png.starts_with(b"\x89PNG") && page.png.len() > 10_000,
        "{} bytes",
        page.png.len()
    );
}
