#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]
//! Property tests of the authoring tools' input paths, which take whatever an author types: the
//! linter on any rule text (the playground runs it on every keystroke), compact test cases with any
//! JSON in their context, resources and prefetch, and the analytics' `since`. Each gives findings or
//! a clear error, never a panic.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::rule_tests::CompactCase;
use cardinal::store::Window;
use common::project_path;
use proptest::prelude::*;
use serde_json::{Value, json};

fn cardinal() -> &'static Cardinal {
    static CARDINAL: OnceLock<Cardinal> = OnceLock::new();
    CARDINAL.get_or_init(|| {
        Cardinal::load(Config {
            rules_dir: project_path("rules"),
            ..Config::default()
        })
        .expect("the shipped rules load")
    })
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("Patient"),
            Just("Observation"),
            Just("MedicationRequest"),
            Just("Bundle"),
            Just("pat-1"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("resourceType".to_owned()),
                    Just("id".to_owned()),
                    Just("entry".to_owned()),
                    Just("resource".to_owned()),
                    Just("subject".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn shipped_case() -> Value {
    let path = project_path("rules/hyperkalemia/tests/k-6.1-lisinopril-warns.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A compact case with anything in its context, resources and prefetch expands or says why.
    #[test]
    fn any_compact_case_expands_or_is_refused(
        context_key in prop_oneof![Just("patientId"), Just("userId"), Just("draftOrders"), Just("encounterId")],
        context_value in json_value(),
        resource_type in prop_oneof![Just("Patient"), Just("Observation"), Just("MedicationRequest"), Just("Xyz")],
        resources in prop::collection::vec(json_value(), 0..3),
        prefetch_key in prop_oneof![Just("patient"), Just("potassium"), Just("unknown")],
        prefetch_value in json_value(),
        not_sent in prop::collection::vec(prop_oneof![Just("patient"), Just("potassium"), Just("nope")], 0..2),
    ) {
        let mut case = shipped_case();
        case["context"][context_key] = context_value;
        case["resources"][resource_type] = Value::Array(resources);
        case["prefetch"] = json!({ prefetch_key: prefetch_value });
        case["not_sent"] = json!(not_sent);
        let Ok(case) = serde_json::from_value::<CompactCase>(case) else {
            return Ok(());
        };
        let service = cardinal().service("hyperkalemia").unwrap();
        if let Err(e) = case.expand(&service) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// The linter on a shipped rule with any run of characters inserted anywhere.
    #[test]
    fn the_linter_reads_any_edit_of_a_rule(
        at in 0.0f64..1.0,
        cut in 0usize..40,
        insert in prop_oneof![
            ".{0,16}",
            Just("latest_observaton(".to_owned()),
            Just("#{summary: ".to_owned()),
            Just(".valeu.".to_owned()),
            Just("\"".to_owned()),
            Just("`${".to_owned()),
            Just("fn f(".to_owned()),
        ],
    ) {
        let dir = project_path("rules/hyperkalemia");
        let path = dir.join("ace-arb-potassium.rhai");
        let text = std::fs::read_to_string(&path).unwrap();
        let chars: Vec<char> = text.chars().collect();
        let start = ((chars.len() as f64) * at) as usize;
        let end = (start + cut).min(chars.len());
        let edited: String = chars[..start]
            .iter()
            .chain(insert.chars().collect::<Vec<_>>().iter())
            .chain(chars[end..].iter())
            .collect();
        for finding in cardinal::lint::rule_source_findings(&dir.join("service.toml"), &path, &edited) {
            prop_assert!(finding.line >= 1, "{finding}");
        }
    }

    /// The linter on text that is not a rule at all.
    #[test]
    fn the_linter_reads_any_text(text in ".{0,200}") {
        let dir = project_path("rules/hyperkalemia");
        let _ = cardinal::lint::rule_source_findings(
            &dir.join("service.toml"),
            Path::new("rules/hyperkalemia/scratch.rhai"),
            &text,
        );
    }

    /// `since` of the analytics, as any caller may write it.
    #[test]
    fn any_since_is_read_or_refused(since in ".{0,24}", days in any::<i64>()) {
        let _ = Window::parse_since(&since);
        if let Some(window) = Window::parse_since(&format!("{days}d")) {
            prop_assert!(window.since <= window.until);
        }
    }
}
