//! The opioid pack's second MME table: with `mme_table: "cdc-2022"` in `lib/settings.rhai` (a copy of
//! the shipped rules, the setting switched), the cases of `tests/fixtures/mme-cdc-2022/` pass
//! (tramadol and tapentadol get the 2022 factors, fentanyl patches the same MME), and the guide's own
//! REC04/05 and REC08 cases still pass with the default table.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::path::Path;

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::rule_tests::{self, Aliases, TestCase, report};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn run(cardinal: &Cardinal, cases: &[TestCase]) -> Vec<String> {
    let aliases = Aliases::default();
    cases
        .iter()
        .map(|case| rule_tests::run_case(cardinal, case, &aliases))
        .filter(|r| !r.passed())
        .map(|r| format!("{}\n{}", report::case_line(&r), report::failure_details(&r)))
        .collect()
}

#[test]
fn the_cdc_2022_table_gives_tramadol_and_tapentadol_their_factors() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    copy_dir(&common::project_path("rules"), &rules);
    let settings = rules.join("opioid-cds/lib/settings.rhai");
    let text = std::fs::read_to_string(&settings).unwrap();
    assert!(
        text.contains("mme_table: \"guide\""),
        "the default is the guide's table"
    );
    std::fs::write(
        &settings,
        text.replace("mme_table: \"guide\"", "mme_table: \"cdc-2022\""),
    )
    .unwrap();
    let cardinal = Cardinal::load(Config {
        rules_dir: rules.clone(),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let fixtures = common::project_path("tests/fixtures/mme-cdc-2022");
    let mut cases: Vec<TestCase> = std::fs::read_dir(&fixtures)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| TestCase::read(&p).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    cases.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(cases.len(), 3);
    let failures = run(&cardinal, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same tapentadol order under the guide's table has no MME at all (its own case, in the
    // pack's tests, says so), so the 2022 table is what makes the difference.
    let shipped = Cardinal::load(Config {
        rules_dir: common::project_path("rules"),
        ..Config::default().development()
    })
    .unwrap();
    let tapentadol = cases
        .iter()
        .find(|c| c.path.ends_with("rec-04-05-tapentadol.json"))
        .unwrap();
    assert_eq!(run(&shipped, std::slice::from_ref(tapentadol)).len(), 1);
}
