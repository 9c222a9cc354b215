//! CDS Hooks 2.0 conformance: Cardinal's wire model against the JSON examples of the spec and its
//! docs (copied into `tests/fixtures/cds-hooks-examples/`, see the README there), and the responses
//! Cardinal itself produces against the spec's rules for cards.
//!
//! Every example file is classified in [`EXAMPLES`]; a test fails if a file is added or removed
//! without being classified, so no example is skipped silently. Examples that deviate from the spec
//! (fragments, a card without `indicator`, a string prefetch value) carry the expected deviation in
//! their classification and the tests assert exactly that deviation.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cardinal::cds_hooks::context::{STANDARD_HOOKS, primitive_fields, validate};
use cardinal::cds_hooks::{
    Action, Card, Coding, Discovery, FeedbackOutcome, FeedbackRequest, HookRequest, HookResponse,
    PrefetchValue, RequestError, ServiceDescriptor, Source,
};
use cardinal::config::Config;
use cardinal::evaluator::{CallError, CallOptions, Cardinal, parse_evaluation_time};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// The example files and what each one is.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A complete hook request (`hook`, `hookInstance`, `context`). `missing`: the context field
    /// `validate` must report, for examples whose context is incomplete.
    Req {
        missing: Option<&'static str>,
    },
    /// Only a `context` object. `hook`: the hook it belongs to (from the hook library file name, or
    /// the hook the docs illustrate); `missing`: the field `validate` must report, if incomplete.
    Ctx {
        hook: &'static str,
        missing: Option<&'static str>,
    },
    /// A discovery `prefetch` object: key → FHIR query template.
    PrefetchTemplates,
    /// A request `prefetch` object with data. `wrong_type`: the key Cardinal must refuse.
    PrefetchData {
        wrong_type: Option<&'static str>,
    },
    /// A `fhirAuthorization` object.
    FhirAuth,
    /// A response (`cards`, `systemActions`). `missing`: a required card field the example omits.
    Resp {
        missing: Option<&'static str>,
    },
    /// A lone card. `missing`: a required card field the example omits.
    LoneCard {
        missing: Option<&'static str>,
    },
    /// A lone card `source`.
    LoneSource,
    /// A lone suggestion/system action.
    LoneAction,
    /// A card's `overrideReasons`.
    OverrideReasons,
    Services,
    Feedbacks,
    /// Security section: JWT header, JWT claims, JWK Set, private JWK. Not CDS Hooks messages.
    Jwt,
}

use Kind::*;

const fn req(missing: Option<&'static str>) -> Kind {
    Req { missing }
}

const fn ctx(hook: &'static str, missing: Option<&'static str>) -> Kind {
    Ctx { hook, missing }
}

const fn prefetch_data(wrong_type: Option<&'static str>) -> Kind {
    PrefetchData { wrong_type }
}

const fn resp(missing: Option<&'static str>) -> Kind {
    Resp { missing }
}

const fn lone_card(missing: Option<&'static str>) -> Kind {
    LoneCard { missing }
}

const EXAMPLES: &[(&str, Kind)] = &[
    // Hook library pages: `context` examples. Apart from order-select and order-sign, these hooks
    // are retired or proposed, so Cardinal treats them as custom hooks.
    (
        "allergyintolerance-create-00.json",
        ctx("allergyintolerance-create", None),
    ),
    (
        "allergyintolerance-create-01.json",
        ctx("allergyintolerance-create", None),
    ),
    (
        "allergyintolerance-create-02.json",
        ctx("allergyintolerance-create", None),
    ),
    (
        "medication-prescribe-00.json",
        ctx("medication-prescribe", None),
    ),
    (
        "medication-prescribe-01.json",
        ctx("medication-prescribe", None),
    ),
    ("medication-refill-00.json", ctx("medication-refill", None)),
    ("medication-refill-01.json", ctx("medication-refill", None)),
    ("order-review-00.json", ctx("order-review", None)),
    ("order-select-00.json", ctx("order-select", None)),
    ("order-select-01.json", ctx("order-select", None)),
    ("order-sign-00.json", ctx("order-sign", None)),
    ("order-sign-01.json", ctx("order-sign", None)),
    (
        "problem-list-item-create-00.json",
        ctx("problem-list-item-create", None),
    ),
    (
        "problem-list-item-create-01.json",
        ctx("problem-list-item-create", None),
    ),
    (
        "problem-list-item-create-02.json",
        ctx("problem-list-item-create", None),
    ),
    // The docs site.
    ("current-00.json", Services),
    ("current-01.json", req(None)),
    ("current-02.json", PrefetchTemplates),
    // Context fragments from the docs' prefetch sections: a patient-view context with only
    // `patientId`, and order-sign-like contexts without `userId` and `patientId`.
    (
        "current-03.json",
        ctx("patient-view", Some("context.userId")),
    ),
    ("current-04.json", ctx("order-sign", Some("context.userId"))),
    ("current-05.json", ctx("order-sign", Some("context.userId"))),
    ("current-06.json", PrefetchTemplates),
    // `"user": "123"`: a prefetch value must be a resource or null.
    ("current-07.json", prefetch_data(Some("prefetch.user"))),
    ("current-08.json", FhirAuth),
    ("current-09.json", resp(None)),
    ("current-10.json", LoneSource),
    ("current-11.json", LoneAction),
    ("current-12.json", LoneAction),
    ("current-13.json", LoneAction),
    ("current-14.json", OverrideReasons),
    ("current-15.json", resp(None)),
    ("current-16.json", resp(None)),
    // The spec's own "autolaunchable" example card has no `indicator` (required since 1.0).
    ("current-17.json", resp(Some("indicator"))),
    // The extension example: a patient-view request whose context only has `userId`.
    ("current-22.json", req(Some("context.patientId"))),
    ("current-23.json", Services),
    // Further documentation examples (CDS Hooks 1.0 era).
    // order-sign in the 1.0 shape: `context.medications` instead of `draftOrders`.
    ("examples-00.json", req(Some("context.draftOrders"))),
    // A card as shown in the docs, without its (required) `source`.
    ("examples-01.json", lone_card(Some("source"))),
    ("examples-02.json", req(None)),
    ("examples-03.json", resp(None)),
    // The HL7 2.0/3.0 spec text.
    ("hl7-index-00.json", Services),
    ("hl7-index-01.json", req(None)),
    ("hl7-index-02.json", PrefetchTemplates),
    ("hl7-index-03.json", req(None)),
    ("hl7-index-04.json", PrefetchTemplates),
    ("hl7-index-05.json", PrefetchTemplates),
    ("hl7-index-06.json", PrefetchTemplates),
    (
        "hl7-index-08.json",
        ctx("patient-view", Some("context.userId")),
    ),
    ("hl7-index-09.json", PrefetchTemplates),
    ("hl7-index-10.json", prefetch_data(None)),
    ("hl7-index-11.json", FhirAuth),
    ("hl7-index-12.json", resp(None)),
    ("hl7-index-13.json", LoneSource),
    ("hl7-index-14.json", LoneAction),
    ("hl7-index-15.json", LoneAction),
    ("hl7-index-16.json", LoneAction),
    ("hl7-index-17.json", OverrideReasons),
    ("hl7-index-18.json", resp(None)),
    ("hl7-index-19.json", resp(None)),
    ("hl7-index-20.json", resp(Some("indicator"))),
    ("hl7-index-21.json", Feedbacks),
    ("hl7-index-22.json", Feedbacks),
    ("hl7-index-23.json", Feedbacks),
    ("hl7-index-24.json", Jwt),
    ("hl7-index-25.json", Jwt),
    ("hl7-index-26.json", Jwt),
    ("hl7-index-27.json", Jwt),
    ("hl7-index-28.json", req(Some("context.patientId"))),
    ("hl7-index-29.json", Services),
];

fn project_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn examples_dir() -> PathBuf {
    project_path("tests/fixtures/cds-hooks-examples")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example(name: &str) -> Value {
    read_json(&examples_dir().join(name))
}

/// The examples of one kind, with their content.
fn examples_where(pick: impl Fn(&Kind) -> bool) -> Vec<(&'static str, Kind, Value)> {
    let picked: Vec<_> = EXAMPLES
        .iter()
        .filter(|(_, kind)| pick(kind))
        .map(|&(name, kind)| (name, kind, example(name)))
        .collect();
    assert!(
        !picked.is_empty(),
        "no examples of this kind: the table is wrong"
    );
    picked
}

fn object(value: &Value, what: &str) -> Map<String, Value> {
    value
        .as_object()
        .cloned()
        .unwrap_or_else(|| panic!("{what}: not a JSON object"))
}

// ---------------------------------------------------------------------------------------------
// The spec's "no empty optional fields" rule, as a reusable checker.

/// Every place in `value` that breaks the CDS Hooks rule "optional fields without a value are
/// omitted": `null`, `""`, `[]` and `{}`, anywhere, except the top-level `"cards": []` (which means
/// "no advice"). Each entry is a JSON path and what was found there.
fn spec_violations(value: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, top_level_cards: bool, out: &mut Vec<String>) {
        match value {
            Value::Null => out.push(format!("{path}: null")),
            Value::String(s) if s.is_empty() => out.push(format!("{path}: \"\"")),
            Value::Array(items) => {
                if items.is_empty() && !top_level_cards {
                    out.push(format!("{path}: []"));
                }
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), false, out);
                }
            }
            Value::Object(fields) => {
                if fields.is_empty() {
                    out.push(format!("{path}: {{}}"));
                }
                for (key, field) in fields {
                    let top_level_cards = path == "$" && key == "cards";
                    walk(field, &format!("{path}.{key}"), top_level_cards, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "$", false, &mut out);
    out
}

/// Fails, listing every offending path, when `value` carries a null or empty optional field.
fn assert_spec_clean(value: &Value) {
    let violations = spec_violations(value);
    assert!(
        violations.is_empty(),
        "null or empty optional fields (the spec says: omit them):\n  {}\nin {value:#}",
        violations.join("\n  ")
    );
}

#[test]
fn checker_finds_every_kind_of_empty_value_and_allows_only_top_level_empty_cards() {
    assert!(spec_violations(&json!({"cards": []})).is_empty());
    assert!(
        spec_violations(
            &json!({"cards": [{"summary": "a", "indicator": "info"}], "n": 0, "b": false})
        )
        .is_empty()
    );
    let bad = json!({
        "cards": [{"summary": "", "detail": null, "links": [], "extension": {}, "source": {"label": "x"}}],
        "systemActions": [],
        "nested": {"cards": []},
    });
    let mut found = spec_violations(&bad);
    found.sort();
    assert_eq!(
        found,
        [
            "$.cards[0].detail: null",
            "$.cards[0].extension: {}",
            "$.cards[0].links: []",
            "$.cards[0].summary: \"\"",
            "$.nested.cards: []",
            "$.systemActions: []",
        ]
    );
    assert_eq!(spec_violations(&Value::Null), ["$: null"]);
    assert_eq!(spec_violations(&json!([[]])), ["$[0]: []"]);
    let panicked = std::panic::catch_unwind(|| assert_spec_clean(&json!({"cards": [], "x": ""})));
    assert!(
        panicked.is_err(),
        "assert_spec_clean must fail on an empty string"
    );
}

// ---------------------------------------------------------------------------------------------
// The classification table is complete and agrees with the content.

#[test]
fn every_example_file_is_classified() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(examples_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", examples_dir().display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    let classified: BTreeSet<String> = EXAMPLES.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        classified.len(),
        EXAMPLES.len(),
        "a file is classified twice"
    );
    let unclassified: Vec<_> = on_disk.difference(&classified).collect();
    let absent: Vec<_> = classified.difference(&on_disk).collect();
    assert!(
        unclassified.is_empty() && absent.is_empty(),
        "unclassified example files: {unclassified:?}; classified but absent: {absent:?}"
    );
}

#[test]
fn classification_matches_the_shape_of_each_example() {
    for &(name, kind) in EXAMPLES {
        let value = example(name);
        let has = |key: &str| value.get(key).is_some();
        let expected = match kind {
            Req { .. } => has("hook") && has("hookInstance") && has("context"),
            Ctx { .. } => !has("hook") && has("context"),
            PrefetchTemplates => {
                has("prefetch")
                    && value["prefetch"]
                        .as_object()
                        .is_some_and(|p| p.values().all(Value::is_string))
            }
            PrefetchData { .. } => {
                has("prefetch")
                    && value["prefetch"]
                        .as_object()
                        .is_some_and(|p| p.values().any(Value::is_object))
            }
            FhirAuth => has("fhirAuthorization") && !has("hook"),
            Resp { .. } => has("cards"),
            LoneCard { .. } => has("summary"),
            LoneSource => has("source"),
            LoneAction => has("type"),
            OverrideReasons => has("overrideReasons"),
            Services => has("services"),
            Feedbacks => has("feedback"),
            Jwt => has("alg") || has("iss") || has("keys") || has("kty"),
        };
        assert!(
            expected,
            "{name} is classified as {kind:?} but does not look like one: {value}"
        );
        // A hook request anywhere must be classified as one: nothing with `hook` + `context` escapes.
        if has("hook") && has("context") {
            assert!(matches!(kind, Req { .. }), "{name} is a hook request");
        }
        if has("cards") {
            assert!(matches!(kind, Resp { .. }), "{name} is a card response");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (1) Hook requests and contexts.

#[test]
fn hook_request_examples_parse_and_standard_contexts_validate() {
    for (name, kind, value) in examples_where(|k| matches!(k, Req { .. })) {
        let Req { missing } = kind else {
            unreachable!()
        };
        let request = HookRequest::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{name}: HookRequest::from_value failed: {e}"));
        assert!(
            STANDARD_HOOKS.contains(&request.hook.as_str()),
            "{name}: every request example uses a standard hook, got {}",
            request.hook
        );
        // Parsing loses nothing a rule reads: the context, and every prefetch key with its resources.
        assert_eq!(request.hook_instance, value["hookInstance"], "{name}");
        assert_eq!(
            Value::Object(request.context.clone()),
            value["context"],
            "{name}"
        );
        assert_prefetch_kept(name, &request, &value);
        match (validate(&request.hook, &request.context), missing) {
            (Ok(()), None) => {}
            (Err(RequestError::MissingField(field)), Some(expected)) => {
                assert_eq!(field, expected, "{name}: wrong missing field reported");
            }
            (result, expected) => {
                panic!("{name}: validate gave {result:?}, expected missing {expected:?}")
            }
        }
    }
}

/// Every prefetch key of `value` is in `request`, with the same resources (Bundles by their entries).
fn assert_prefetch_kept(name: &str, request: &HookRequest, value: &Value) {
    let empty = serde_json::Map::new();
    let sent = value["prefetch"].as_object().unwrap_or(&empty);
    assert_eq!(
        request.prefetch.keys().collect::<Vec<_>>(),
        sent.keys().collect::<Vec<_>>(),
        "{name}: prefetch keys"
    );
    for (key, answer) in &request.prefetch {
        // CDS Hooks 1.0 wrapped answers as `{response, resource}`; Cardinal keeps the resource.
        let original = match sent[key].get("resourceType") {
            None if sent[key].get("resource").is_some() => &sent[key]["resource"],
            _ => &sent[key],
        };
        match answer {
            PrefetchValue::Null => assert!(original.is_null(), "{name}: {key}"),
            PrefetchValue::Resource(resource) => {
                assert_eq!(resource.json(), original, "{name}: {key}")
            }
            PrefetchValue::Bundle(resources) => {
                let entries: Vec<Value> = original["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("resource").cloned())
                    .collect();
                let kept: Vec<Value> = resources.iter().map(|r| r.json().clone()).collect();
                assert_eq!(kept, entries, "{name}: {key}");
            }
        }
    }
}

#[test]
fn incomplete_request_examples_are_exactly_the_known_fragments() {
    let incomplete: BTreeMap<&str, &str> = EXAMPLES
        .iter()
        .filter_map(|(name, kind)| match kind {
            Req {
                missing: Some(field),
            } => Some((*name, *field)),
            _ => None,
        })
        .collect();
    assert_eq!(
        incomplete,
        BTreeMap::from([
            ("current-22.json", "context.patientId"),
            ("examples-00.json", "context.draftOrders"),
            ("hl7-index-28.json", "context.patientId"),
        ])
    );
    // current-22 (the extension example) has only a userId: once a patientId is added, it is a
    // complete patient-view request.
    let mut value = example("current-22.json");
    value["context"]["patientId"] = json!("1288992");
    let request = HookRequest::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(validate(&request.hook, &request.context), Ok(()));
    assert!(
        request.extension.as_ref().is_some_and(|e| e.len() == 2),
        "extension kept"
    );
}

#[test]
fn context_examples_validate_against_their_hook() {
    for (name, kind, value) in examples_where(|k| matches!(k, Ctx { .. })) {
        let Ctx { hook, missing } = kind else {
            unreachable!()
        };
        let context = object(&value["context"], name);
        // Wrapped into a request, the context parses.
        let request = HookRequest::from_value(json!({
            "hook": hook,
            "hookInstance": "5b1b6f0e-6a43-4e6b-9a53-3f5f0c9d8e21",
            "context": context,
        }))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = validate(&request.hook, &request.context);
        match missing {
            None => assert_eq!(result, Ok(()), "{name} ({hook})"),
            Some(field) => assert_eq!(
                result,
                Err(RequestError::MissingField(field.to_owned())),
                "{name} ({hook}) is an incomplete fragment"
            ),
        }
    }
}

#[test]
fn hook_library_contexts_of_standard_hooks_are_complete_and_others_pass_as_custom() {
    let mut standard = 0;
    for (name, kind, value) in examples_where(|k| matches!(k, Ctx { missing: None, .. })) {
        let Ctx { hook, .. } = kind else {
            unreachable!()
        };
        let context = object(&value["context"], name);
        if STANDARD_HOOKS.contains(&hook) {
            standard += 1;
            // Complete: removing any required field is noticed.
            for field in ["userId", "patientId", "draftOrders"] {
                let mut without = context.clone();
                without.remove(field);
                assert_eq!(
                    validate(hook, &without),
                    Err(RequestError::MissingField(format!("context.{field}"))),
                    "{name}: removing `{field}`"
                );
            }
        } else {
            // A custom hook passes even with an empty context: its shape is not Cardinal's to check.
            assert_eq!(
                validate(hook, &Map::new()),
                Ok(()),
                "{name}: {hook} is custom"
            );
        }
    }
    assert_eq!(standard, 4, "order-select-00/01 and order-sign-00/01");
}

#[test]
fn context_fragments_are_listed_explicitly() {
    let fragments: BTreeMap<&str, (&str, &str)> = EXAMPLES
        .iter()
        .filter_map(|(name, kind)| match kind {
            Ctx {
                hook,
                missing: Some(field),
            } => Some((*name, (*hook, *field))),
            _ => None,
        })
        .collect();
    assert_eq!(
        fragments,
        BTreeMap::from([
            ("current-03.json", ("patient-view", "context.userId")),
            ("current-04.json", ("order-sign", "context.userId")),
            ("current-05.json", ("order-sign", "context.userId")),
            ("hl7-index-08.json", ("patient-view", "context.userId")),
        ])
    );
    // Past the first missing field, the fragments lack more: current-04 has no patientId either.
    let mut context = object(&example("current-04.json")["context"], "current-04");
    context.insert("userId".into(), json!("Practitioner/example"));
    assert_eq!(
        validate("order-sign", &context),
        Err(RequestError::MissingField("context.patientId".into()))
    );
    context.insert("patientId".into(), json!("1288992"));
    assert_eq!(validate("order-sign", &context), Ok(()));
}

#[test]
fn prefetch_data_examples_parse_except_a_string_value() {
    for (name, kind, value) in examples_where(|k| matches!(k, PrefetchData { .. })) {
        let PrefetchData { wrong_type } = kind else {
            unreachable!()
        };
        let request = json!({
            "hook": "patient-view",
            "hookInstance": "5b1b6f0e-6a43-4e6b-9a53-3f5f0c9d8e21",
            "context": {"userId": "Practitioner/123", "patientId": "1288992"},
            "prefetch": value["prefetch"],
        });
        match (HookRequest::from_value(request), wrong_type) {
            (Ok(parsed), None) => assert_eq!(parsed.prefetch.len(), 3, "{name}"),
            (Err(RequestError::Invalid(message)), Some(expected)) => {
                assert!(
                    message.contains(&format!("`{expected}`")),
                    "{name}: {message}"
                )
            }
            (result, expected) => {
                panic!("{name}: got {result:?}, expected wrong type {expected:?}")
            }
        }
    }
}

#[test]
fn fhir_authorization_examples_parse_require_fhir_server_and_never_print_the_token() {
    for (name, _, value) in examples_where(|k| *k == FhirAuth) {
        let token = value["fhirAuthorization"]["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no access_token"))
            .to_owned();
        let mut request = json!({
            "hook": "patient-view",
            "hookInstance": "5b1b6f0e-6a43-4e6b-9a53-3f5f0c9d8e21",
            "context": {"userId": "Practitioner/123", "patientId": "1288992"},
            "fhirAuthorization": value["fhirAuthorization"],
        });
        assert_eq!(
            HookRequest::from_value(request.clone()).err(),
            Some(RequestError::FhirServerRequired),
            "{name}: fhirAuthorization without fhirServer"
        );
        request["fhirServer"] = json!("https://ehr.example.org/fhir");
        let parsed = HookRequest::from_value(request).unwrap_or_else(|e| panic!("{name}: {e}"));
        let auth = parsed
            .fhir_authorization
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: authorization lost"));
        assert_eq!(auth.access_token, token);
        assert_eq!(auth.expires_in, 300);
        let printed = format!("{parsed:?} {auth:?}");
        assert!(
            !printed.contains(&token),
            "{name}: the token leaks into Debug: {printed}"
        );
    }
}

#[test]
fn prefetch_template_examples_fit_a_service_descriptor() {
    for (name, _, value) in examples_where(|k| *k == PrefetchTemplates) {
        let descriptor: ServiceDescriptor = serde_json::from_value(json!({
            "hook": "patient-view",
            "description": "templates from the spec",
            "id": "templates",
            "prefetch": value["prefetch"],
        }))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!descriptor.prefetch.is_empty(), "{name}");
        assert!(
            descriptor.prefetch.values().all(|t| t.contains("{{")),
            "{name}: every template uses a token"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (2) Card responses and their parts.

#[test]
fn response_examples_deserialise_and_reserialise_clean() {
    for (name, kind, value) in examples_where(|k| matches!(k, Resp { .. })) {
        let Resp { missing } = kind else {
            unreachable!()
        };
        let parsed = serde_json::from_value::<HookResponse>(value.clone());
        match (parsed, missing) {
            (Ok(response), None) => {
                let back =
                    serde_json::to_value(&response).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_spec_clean(&back);
                assert_eq!(back, value, "{name}: HookResponse does not round-trip");
            }
            (Err(e), Some(field)) => {
                assert!(
                    e.to_string().contains(&format!("missing field `{field}`")),
                    "{name}: expected a missing `{field}`, got: {e}"
                );
                // That is the example's only deviation: with the field supplied it is clean.
                let mut fixed = value.clone();
                for card in fixed["cards"].as_array_mut().into_iter().flatten() {
                    if let Some(card) = card.as_object_mut() {
                        card.entry(field).or_insert(json!("info"));
                    }
                }
                let response: HookResponse = serde_json::from_value(fixed.clone())
                    .unwrap_or_else(|e| panic!("{name} fixed: {e}"));
                let back =
                    serde_json::to_value(&response).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_spec_clean(&back);
                assert_eq!(back, fixed, "{name}: fixed example does not round-trip");
            }
            (Ok(_), Some(field)) => panic!("{name}: lacks `{field}` and should not deserialise"),
            (Err(e), None) => panic!("{name}: HookResponse failed: {e}"),
        }
    }
}

#[test]
fn card_example_without_source_is_refused_and_otherwise_clean() {
    for (name, kind, value) in examples_where(|k| matches!(k, LoneCard { .. })) {
        let LoneCard {
            missing: Some(field),
        } = kind
        else {
            panic!("{name}: every lone card example lacks a field")
        };
        let err = serde_json::from_value::<Card>(value.clone())
            .err()
            .unwrap_or_else(|| panic!("{name}: lacks `{field}` and should not deserialise"));
        assert!(
            err.to_string()
                .contains(&format!("missing field `{field}`")),
            "{name}: {err}"
        );
        let mut fixed = value.clone();
        fixed["source"] = json!({"label": "CDC opioid prescribing guideline"});
        let card: Card =
            serde_json::from_value(fixed.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = serde_json::to_value(&card).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_spec_clean(&back);
        assert_eq!(back, fixed, "{name}: Card does not round-trip");
    }
}

#[test]
fn source_action_and_override_reason_examples_round_trip_clean() {
    for (name, _, value) in examples_where(|k| *k == LoneSource) {
        let source: Source = serde_json::from_value(value["source"].clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(source.topic.is_some(), "{name}: topic kept");
        let back = serde_json::to_value(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_spec_clean(&back);
        assert_eq!(back, value["source"], "{name}");
    }
    for (name, _, value) in examples_where(|k| *k == LoneAction) {
        let action: Action =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = serde_json::to_value(&action).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_spec_clean(&back);
        assert_eq!(back, value, "{name}");
    }
    for (name, _, value) in examples_where(|k| *k == OverrideReasons) {
        let reasons: Vec<Coding> = serde_json::from_value(value["overrideReasons"].clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            reasons.iter().all(|r| r.display.is_some()),
            "{name}: override reasons need a display"
        );
        let back = serde_json::to_value(&reasons).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, value["overrideReasons"], "{name}");
    }
}

#[test]
fn invalid_enum_values_are_refused() {
    let card = |patch: Value| {
        let mut card = json!({"summary": "s", "indicator": "info", "source": {"label": "l"}});
        for (k, v) in patch.as_object().into_iter().flatten() {
            card[k] = v.clone();
        }
        serde_json::from_value::<Card>(card)
    };
    assert!(card(json!({})).is_ok());
    assert!(
        card(json!({"indicator": "Info"})).is_err(),
        "enums are lower-case"
    );
    assert!(card(json!({"indicator": "hard-stop"})).is_err());
    assert!(card(json!({"selectionBehavior": "all"})).is_err());
    assert!(card(json!({"links": [{"label": "l", "url": "u", "type": "relative"}]})).is_err());
    assert!(
        serde_json::from_value::<Action>(json!({"type": "replace", "description": "d"})).is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// (3) Discovery and (4) feedback.

#[test]
fn discovery_examples_deserialise_and_round_trip_clean() {
    for (name, _, value) in examples_where(|k| *k == Services) {
        let discovery: Discovery =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!discovery.services.is_empty(), "{name}");
        let back = serde_json::to_value(&discovery).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_spec_clean(&back);
        assert_eq!(back, value, "{name}: Discovery does not round-trip");
    }
}

#[test]
fn feedback_examples_parse() {
    let mut outcomes = Vec::new();
    for (name, _, value) in examples_where(|k| *k == Feedbacks) {
        let feedback =
            FeedbackRequest::from_value(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(feedback.feedback.len(), 1, "{name}");
        let entry = &feedback.feedback[0];
        assert_eq!(
            Some(entry.card.as_str()),
            value["feedback"][0]["card"].as_str(),
            "{name}"
        );
        outcomes.push((name, entry.outcome, entry.override_reason.is_some()));
        let back = serde_json::to_value(&feedback).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_spec_clean(&back);
        assert_eq!(back, value, "{name}: FeedbackRequest does not round-trip");
    }
    assert_eq!(
        outcomes,
        [
            ("hl7-index-21.json", FeedbackOutcome::Accepted, false),
            ("hl7-index-22.json", FeedbackOutcome::Overridden, false),
            ("hl7-index-23.json", FeedbackOutcome::Overridden, true),
        ]
    );
}

#[test]
fn jwt_examples_are_the_security_section() {
    let header = example("hl7-index-24.json");
    assert_eq!(header["alg"], "ES384");
    assert_eq!(header["typ"], "JWT");
    let claims = example("hl7-index-25.json");
    for claim in ["iss", "aud", "exp", "iat", "jti"] {
        assert!(claims.get(claim).is_some(), "required JWT claim `{claim}`");
    }
    assert_eq!(
        example("hl7-index-26.json")["keys"][0]["kid"],
        header["kid"]
    );
    assert_eq!(example("hl7-index-27.json")["crv"], "P-384");
}

// ---------------------------------------------------------------------------------------------
// (5) What Cardinal itself produces.

const EVALUATION_TIME: &str = "2026-11-20T12:00:00Z";

fn cardinal() -> &'static Cardinal {
    static CARDINAL: OnceLock<Cardinal> = OnceLock::new();
    CARDINAL.get_or_init(|| {
        Cardinal::load(Config {
            rules_dir: project_path("rules"),
            ..Config::default().development()
        })
        .unwrap_or_else(|e| panic!("shipped rules failed to load:\n{e}"))
    })
}

fn request_fixture(name: &str) -> Value {
    read_json(&project_path(&format!(
        "tests/fixtures/requests/{name}.json"
    )))
}

/// Evaluates `request` with the pinned time; the response as sent on the wire.
fn try_evaluate(service: &str, request: Value) -> Result<Value, CallError> {
    let request = HookRequest::from_value(request)?;
    let options = CallOptions {
        evaluation_time: parse_evaluation_time(EVALUATION_TIME),
        ..CallOptions::default()
    };
    let evaluation = cardinal().evaluate(service, request, options)?;
    Ok(serde_json::to_value(&evaluation.response).unwrap_or_else(|e| panic!("{service}: {e}")))
}

fn evaluate(service: &str, request: Value) -> Value {
    try_evaluate(service, request).unwrap_or_else(|e| panic!("{service}: {e}"))
}

fn str_of<'a>(value: &'a Value, field: &str, at: &str) -> &'a str {
    value[field]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| panic!("{at}.{field} must be a non-empty string: {value}"))
}

/// Checks a response Cardinal produced against the spec's card rules, and collects card and
/// suggestion uuids into `uuids` (failing on a repeat).
fn check_cardinal_response(label: &str, response: &Value, uuids: &mut HashSet<String>) {
    assert_spec_clean(response);
    let top = object(response, label);
    for key in top.keys() {
        assert!(
            ["cards", "systemActions", "extension"].contains(&key.as_str()),
            "{label}: unexpected top-level field `{key}`"
        );
    }
    let cards = response["cards"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: `cards` must always be an array"));
    let mut unique = |uuid: &str, at: &str| {
        assert!(
            uuid::Uuid::parse_str(uuid).is_ok(),
            "{at}: uuid `{uuid}` is not a UUID"
        );
        assert!(
            uuids.insert(uuid.to_owned()),
            "{at}: uuid `{uuid}` is not unique"
        );
    };
    for (i, card) in cards.iter().enumerate() {
        let at = format!("{label}.cards[{i}]");
        unique(str_of(card, "uuid", &at), &at);
        let summary = str_of(card, "summary", &at);
        assert!(
            summary.chars().count() < 140,
            "{at}: summary has 140+ characters: {summary}"
        );
        assert!(
            ["info", "warning", "critical"].contains(&str_of(card, "indicator", &at)),
            "{at}: bad indicator"
        );
        str_of(&card["source"], "label", &format!("{at}.source"));
        let suggestions = card["suggestions"].as_array();
        let selection = card.get("selectionBehavior");
        assert_eq!(
            suggestions.is_some(),
            selection.is_some(),
            "{at}: selectionBehavior must be present exactly when there are suggestions"
        );
        if let Some(selection) = selection {
            assert!(
                ["at-most-one", "any"].contains(&selection.as_str().unwrap_or_default()),
                "{at}: bad selectionBehavior {selection}"
            );
        }
        for (j, suggestion) in suggestions.into_iter().flatten().enumerate() {
            let at = format!("{at}.suggestions[{j}]");
            str_of(suggestion, "label", &at);
            unique(str_of(suggestion, "uuid", &at), &at);
            for (k, action) in suggestion["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("{at}.actions[{k}]");
                let kind = str_of(action, "type", &at);
                assert!(
                    ["create", "update", "delete"].contains(&kind),
                    "{at}: bad type {kind}"
                );
                str_of(action, "description", &at);
                if kind == "delete" {
                    str_of(action, "resourceId", &at);
                } else {
                    assert!(
                        action["resource"].is_object(),
                        "{at}: {kind} needs a resource"
                    );
                }
            }
        }
        for (j, link) in card["links"].as_array().into_iter().flatten().enumerate() {
            let at = format!("{at}.links[{j}]");
            str_of(link, "label", &at);
            str_of(link, "url", &at);
            let kind = str_of(link, "type", &at);
            assert!(
                ["absolute", "smart"].contains(&kind),
                "{at}: bad link type {kind}"
            );
            if link.get("appContext").is_some() {
                assert_eq!(kind, "smart", "{at}: appContext is for smart links only");
            }
        }
        for (j, reason) in card["overrideReasons"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.overrideReasons[{j}]");
            for field in ["system", "code", "display"] {
                str_of(reason, field, &at);
            }
        }
        // Cardinal's own addition: the explanation, under its reverse-domain key.
        let explanation = &card["extension"]["org.cardinalcds.explanation"];
        str_of(explanation, "ruleId", &at);
        assert_eq!(
            explanation["evaluatedAt"], EVALUATION_TIME,
            "{at}: the pinned time is reported"
        );
        // A card must deserialise back into Cardinal's own model.
        serde_json::from_value::<Card>(card.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
    }
}

/// An order-sign request: ibuprofen ordered for a patient on warfarin.
fn warfarin_nsaid_request() -> Value {
    json!({
        "hook": "order-sign",
        "hookInstance": "7d3c1b2a-9e8f-4a6b-8c5d-4e3f2a1b0c9d",
        "context": {
            "userId": "Practitioner/pract-1",
            "patientId": "pat-3",
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
                "resourceType": "MedicationRequest", "id": "draft-ibuprofen", "status": "draft", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "197806", "display": "ibuprofen 600 MG Oral Tablet"}]},
                "subject": {"reference": "Patient/pat-3"}, "authoredOn": "2026-11-20"}}]}
        },
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "pat-3", "gender": "female", "birthDate": "1949-09-02"},
            "medications": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
                "resourceType": "MedicationRequest", "id": "rx-warfarin", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "855332", "display": "warfarin sodium 5 MG Oral Tablet"}]},
                "subject": {"reference": "Patient/pat-3"}, "authoredOn": "2026-06-01"}}]}
        }
    })
}

fn cards_of(response: &Value) -> Vec<Value> {
    response["cards"].as_array().cloned().unwrap_or_default()
}

#[test]
fn cardinal_responses_to_every_request_fixture_follow_the_card_rules() {
    let dir = project_path("tests/fixtures/requests");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures
            .iter()
            .any(|p| p.ends_with("metformin-egfr-low.json")),
        "the request fixtures are missing"
    );
    let mut uuids = HashSet::new();
    let mut cards = 0;
    let mut suggestions = 0;
    for path in &fixtures {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let request = read_json(path);
        let hook = request["hook"].as_str().unwrap_or_default().to_owned();
        let mut answered = Vec::new();
        // Every shipped service of the fixture's hook; a fixture written for another service of the
        // same hook may lack this one's declared prefetch, which Cardinal answers with 412.
        for service in cardinal()
            .rule_set()
            .registry()
            .services()
            .filter(|s| s.hook() == hook)
        {
            let label = format!("{name} → {}", service.id());
            match try_evaluate(service.id(), request.clone()) {
                Ok(response) => {
                    check_cardinal_response(&label, &response, &mut uuids);
                    let these = cards_of(&response);
                    if these.is_empty() {
                        assert_no_advice(&response, &label);
                    }
                    cards += these.len();
                    suggestions += these
                        .iter()
                        .filter(|c| c.get("suggestions").is_some())
                        .count();
                    answered.push(service.id().to_owned());
                }
                Err(CallError::PrefetchUnavailable(_)) => {}
                Err(e) => panic!("{label}: {e}"),
            }
        }
        assert!(
            !answered.is_empty(),
            "{name}: no shipped service could answer it"
        );
    }
    // The checks ran over real cards (and suggestions), not only over empty responses.
    assert!(
        cards >= 3 && suggestions >= 1,
        "only {cards} cards, {suggestions} with suggestions"
    );
    // The one outcome this test relies on: a low eGFR with a metformin order is a critical card.
    let response = evaluate("metformin-renal", request_fixture("metformin-egfr-low"));
    let indicators: Vec<&str> = response["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["indicator"].as_str())
        .collect();
    assert_eq!(indicators, ["critical"]);
}

/// `request` with its prefetch key `from` renamed to `to`.
fn rename_prefetch(mut request: Value, from: &str, to: &str) -> Value {
    let prefetch = request["prefetch"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("no prefetch"));
    let value = prefetch
        .remove(from)
        .unwrap_or_else(|| panic!("no prefetch key {from}"));
    prefetch.insert(to.to_owned(), value);
    request
}

#[test]
fn cardinal_answers_the_spec_request_examples_cleanly() {
    let mut uuids = HashSet::new();
    // current-01 was written for the spec's `static-patient-greeter`, whose prefetch key is
    // `patientToGreet`; patient-greeting declares `patient`, so as it stands the call gets 412.
    match try_evaluate("patient-greeting", example("current-01.json")) {
        Err(CallError::PrefetchUnavailable(message)) => {
            assert!(message.contains("patient"), "{message}")
        }
        other => panic!("current-01 as is: expected 412, got {other:?}"),
    }
    let request = rename_prefetch(example("current-01.json"), "patientToGreet", "patient");
    let response = evaluate("patient-greeting", request);
    check_cardinal_response("current-01 → patient-greeting", &response, &mut uuids);
    assert_eq!(
        response["cards"][0]["summary"], "Now seeing: the patient",
        "the Patient has no name"
    );
    // hl7-index-03: order-sign with a paged searchset of medications under `orders`. As
    // warfarin-nsaid's `medications`, with `patient: null` ("no such resource"): no advice.
    let mut request = rename_prefetch(example("hl7-index-03.json"), "orders", "medications");
    request["prefetch"]["patient"] = Value::Null;
    let response = evaluate("warfarin-nsaid", request);
    check_cardinal_response("hl7-index-03 → warfarin-nsaid", &response, &mut uuids);
    assert_no_advice(&response, "hl7-index-03 → warfarin-nsaid");
}

/// "No advice" is `{"cards": []}` plus only the version of the rule set that answered: no
/// diagnostics, nothing else.
fn assert_no_advice(response: &Value, label: &str) {
    let version = cardinal().rule_set().version().to_owned();
    assert_eq!(
        response,
        &json!({"cards": [], "extension": {"org.cardinalcds.ruleSet": version}}),
        "{label}"
    );
}

#[test]
fn cards_with_suggestions_get_a_selection_behavior_and_fresh_uuids_per_call() {
    let mut uuids = HashSet::new();
    // The same request twice: every card and suggestion gets a new uuid each time.
    for call in 0..2 {
        let response = evaluate("metformin-renal", request_fixture("metformin-egfr-low"));
        check_cardinal_response(&format!("metformin call {call}"), &response, &mut uuids);
        let card = &response["cards"][0];
        assert_eq!(card["selectionBehavior"], "at-most-one");
        assert_eq!(card["suggestions"][0]["actions"][0]["type"], "delete");
        assert_eq!(
            card["suggestions"][0]["actions"][0]["resourceId"],
            "MedicationRequest/medrx-metformin"
        );
        assert_eq!(card["links"][0]["type"], "absolute");
        assert_eq!(card["overrideReasons"].as_array().map(Vec::len), Some(2));
        // warfarin-nsaid's rule gives no selectionBehavior: Cardinal supplies the safe default.
        let response = evaluate("warfarin-nsaid", warfarin_nsaid_request());
        check_cardinal_response(&format!("warfarin call {call}"), &response, &mut uuids);
        assert_eq!(response["cards"][0]["selectionBehavior"], "at-most-one");
    }
    assert_eq!(uuids.len(), 8, "2 calls × 2 services × (card + suggestion)");
}

#[test]
fn cardinal_discovery_is_spec_clean_and_its_prefetch_uses_context_tokens() {
    let discovery = serde_json::to_value(cardinal().discovery()).unwrap_or_else(|e| panic!("{e}"));
    assert_spec_clean(&discovery);
    let services = discovery["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(services.len() >= 3, "the shipped services: {discovery}");
    for service in &services {
        let id = str_of(service, "id", "services[]");
        let hook = str_of(service, "hook", id);
        str_of(service, "description", id);
        let allowed = primitive_fields(hook).unwrap_or_default();
        for (key, template) in service["prefetch"].as_object().into_iter().flatten() {
            let template = template
                .as_str()
                .unwrap_or_else(|| panic!("{id}.prefetch.{key}: not a string"));
            // Every `{{token}}` is a first-level primitive context field of the hook, or a user token.
            for token in template
                .split("{{")
                .skip(1)
                .filter_map(|rest| rest.split_once("}}").map(|(t, _)| t))
            {
                let ok = match token.strip_prefix("context.") {
                    Some(field) => allowed.contains(&field),
                    None => [
                        "userPractitionerId",
                        "userPractitionerRoleId",
                        "userPatientId",
                        "userRelatedPersonId",
                    ]
                    .contains(&token),
                };
                assert!(
                    ok,
                    "{id}.prefetch.{key}: token `{{{{{token}}}}}` is not valid for {hook}"
                );
            }
        }
    }
    let back: Discovery =
        serde_json::from_value(discovery.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serde_json::to_value(&back).ok(), Some(discovery));
}

#[test]
fn response_checker_rejects_each_card_rule_violation() {
    let good = evaluate("metformin-renal", request_fixture("metformin-egfr-low"));
    check_cardinal_response("good", &good, &mut HashSet::new());
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 9] = [
        ("no selectionBehavior", |r| {
            if let Some(card) = r["cards"][0].as_object_mut() {
                card.remove("selectionBehavior");
            }
        }),
        ("selectionBehavior all", |r| {
            r["cards"][0]["selectionBehavior"] = json!("all")
        }),
        ("140-character summary", |r| {
            r["cards"][0]["summary"] = json!("x".repeat(140))
        }),
        ("indicator Critical", |r| {
            r["cards"][0]["indicator"] = json!("Critical")
        }),
        ("action type replace", |r| {
            r["cards"][0]["suggestions"][0]["actions"][0]["type"] = json!("replace")
        }),
        ("link type relative", |r| {
            r["cards"][0]["links"][0]["type"] = json!("relative")
        }),
        ("no source label", |r| {
            r["cards"][0]["source"] = json!({"url": "https://example.org"})
        }),
        ("empty detail", |r| r["cards"][0]["detail"] = json!("")),
        ("null uuid", |r| r["cards"][0]["uuid"] = Value::Null),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        let caught =
            std::panic::catch_unwind(|| check_cardinal_response(what, &bad, &mut HashSet::new()));
        assert!(
            caught.is_err(),
            "the checker accepted a response with {what}"
        );
    }
    // The same card twice: its uuid is no longer unique.
    let mut uuids = HashSet::new();
    check_cardinal_response("first", &good, &mut uuids);
    let caught =
        std::panic::catch_unwind(move || check_cardinal_response("again", &good, &mut uuids));
    assert!(caught.is_err(), "the checker accepted a repeated uuid");
}

/// A Cardinal serving one patient-view service `edge` made of `rules` (id, source), in a temp dir.
fn edge_service(rules: &[(&str, &str)]) -> (tempfile::TempDir, Cardinal) {
    let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let service = dir.path().join("edge");
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(&service).unwrap_or_else(|e| panic!("{e}"));
    write(
        service.join("service.toml"),
        "id = \"edge\"\nhook = \"patient-view\"\ndescription = \"Edge cases of rule-built cards\"\nversion = \"1.0.0\"\n",
    );
    for (id, source) in rules {
        write(service.join(format!("{id}.rhai")), source);
    }
    let cardinal = Cardinal::load(Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("edge rules failed to load:\n{e}"));
    (dir, cardinal)
}

/// Runs the `edge` service; the response on the wire and the ids of the rules that failed.
fn run_edge(cardinal: &Cardinal) -> (Value, BTreeSet<String>) {
    let request = HookRequest::from_value(json!({
        "hook": "patient-view",
        "hookInstance": "3e0f5a8c-1d2b-4c6e-9f7a-8b9c0d1e2f3a",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let options = CallOptions {
        evaluation_time: parse_evaluation_time(EVALUATION_TIME),
        ..CallOptions::default()
    };
    let evaluation = cardinal
        .evaluate("edge", request, options)
        .unwrap_or_else(|e| panic!("{e}"));
    let failed = evaluation
        .response
        .extension
        .diagnostics
        .iter()
        .map(|d| d.rule_id.clone())
        .collect();
    let response = serde_json::to_value(&evaluation.response).unwrap_or_else(|e| panic!("{e}"));
    (response, failed)
}

fn fired_rules(response: &Value) -> BTreeSet<String> {
    cards_of(response)
        .iter()
        .filter_map(|c| c["extension"]["org.cardinalcds.explanation"]["ruleId"].as_str())
        .map(str::to_owned)
        .collect()
}

#[test]
fn cards_built_by_rules_drop_empty_optional_fields_and_refuse_invalid_ones() {
    let (_dir, cardinal) = edge_service(&[
        (
            "empty-optionals",
            r#"card(#{ summary: "Empty optionals", indicator: "info", detail: "", links: [],
                suggestions: [], overrideReasons: [],
                source: #{ label: "Source", url: "", icon: "  ", topic: #{ system: "urn:t", code: "t", display: "" } } });"#,
        ),
        (
            "default-selection",
            r#"card(#{ summary: "Default selection", indicator: "warning",
                suggestions: [#{ label: "Cancel", actions: [#{ type: "delete", description: "Cancel it", resourceId: "ServiceRequest/1" }] }] });"#,
        ),
        (
            "any-selection",
            r#"card(#{ summary: "Any selection", indicator: "critical", selectionBehavior: "any",
                suggestions: [#{ label: "Order", isRecommended: false, actions: [#{ type: "create", description: "Order it",
                    resource: #{ resourceType: "ServiceRequest", status: "draft", intent: "order" } }] }] });"#,
        ),
        (
            "default-link-type",
            r#"card(#{ summary: "Link", indicator: "info", links: [#{ label: "Guideline", url: "https://example.org" }] });"#,
        ),
        (
            "blank-summary",
            r#"card(#{ summary: "   ", indicator: "info" });"#,
        ),
        (
            "long-summary",
            &format!(
                r#"card(#{{ summary: "{}", indicator: "info" }});"#,
                "x".repeat(140)
            ),
        ),
        (
            "capital-indicator",
            r#"card(#{ summary: "Capital", indicator: "Warning" });"#,
        ),
        (
            "app-context-on-absolute-link",
            r#"card(#{ summary: "App", indicator: "info", links: [#{ label: "App", url: "https://example.org", type: "absolute", appContext: "x" }] });"#,
        ),
        (
            "override-without-display",
            r#"card(#{ summary: "Override", indicator: "info", overrideReasons: [#{ system: "urn:r", code: "r" }] });"#,
        ),
        (
            "unknown-field",
            r#"card(#{ summary: "Unknown", indicator: "info", sumary: "typo" });"#,
        ),
    ]);
    let (response, failed) = run_edge(&cardinal);
    check_cardinal_response("edge", &response, &mut HashSet::new());
    assert_eq!(
        fired_rules(&response),
        BTreeSet::from(
            [
                "any-selection",
                "default-link-type",
                "default-selection",
                "empty-optionals"
            ]
            .map(String::from)
        )
    );
    assert_eq!(
        failed,
        BTreeSet::from(
            [
                "app-context-on-absolute-link",
                "blank-summary",
                "capital-indicator",
                "long-summary",
                "override-without-display",
                "unknown-field",
            ]
            .map(String::from)
        )
    );
    let card = |rule: &str| {
        cards_of(&response)
            .into_iter()
            .find(|c| c["extension"]["org.cardinalcds.explanation"]["ruleId"] == rule)
            .unwrap_or_else(|| panic!("no card from {rule}"))
    };
    assert_eq!(
        card("empty-optionals")["source"],
        json!({"label": "Source", "topic": {"system": "urn:t", "code": "t"}})
    );
    assert_eq!(
        card("default-selection")["selectionBehavior"],
        "at-most-one"
    );
    assert_eq!(card("any-selection")["selectionBehavior"], "any");
    assert_eq!(
        card("any-selection")["suggestions"][0]["isRecommended"],
        false
    );
    assert_eq!(card("default-link-type")["links"][0]["type"], "absolute");
}

/// Rule input that still reaches the wire in a non-conformant shape. Each case is a bug in `src/`
/// (reported with the test suite); run with `cargo test -- --ignored` once they are fixed.
#[test]

fn rule_input_that_should_not_reach_the_wire() {
    let (_dir, cardinal) = edge_service(&[
        // `because` with empty strings: `"value": ""`, `"name": ""`, `"note": ""` in the explanation.
        (
            "empty-fact",
            r#"because("eGFR", ""); because("", 5); because("Age", 70, ""); card(#{ summary: "Facts", indicator: "info" });"#,
        ),
        // selectionBehavior kept on a card without suggestions.
        (
            "selection-without-suggestions",
            r#"card(#{ summary: "Selection", indicator: "info", selectionBehavior: "any" });"#,
        ),
        // A create action whose resource is `{}`: not a FHIR resource.
        (
            "empty-resource",
            r#"card(#{ summary: "Create", indicator: "info", suggestions: [#{ label: "Create",
                actions: [#{ type: "create", description: "Create it", resource: #{} }] }] });"#,
        ),
        // Action.description is required by CDS Hooks 2.0.
        (
            "action-without-description",
            r#"card(#{ summary: "Delete", indicator: "info", suggestions: [#{ label: "Delete",
                actions: [#{ type: "delete", resourceId: "ServiceRequest/1" }] }] });"#,
        ),
    ]);
    let (response, _failed) = run_edge(&cardinal);
    // Either the rule is refused with a diagnostic, or its card is conformant.
    check_cardinal_response("edge", &response, &mut HashSet::new());
}
