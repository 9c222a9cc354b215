//! Between the CDS Hooks model and the protobuf messages. Incoming messages are rebuilt as the JSON
//! the HTTP transport would have received and validated by the same code, so both transports accept
//! and refuse exactly the same requests. A typed context becomes the JSON context it stands for; FHIR
//! resources (prefetch, draft orders) are read from their JSON text by the same readers as HTTP's.

use serde_json::{Map, Value};

use crate::cds_hooks::request::json_field;
use crate::cds_hooks::{
    Action, Card, Coding, Discovery, Explanation, Fact, FeedbackRequest, HookRequest, HookResponse,
    Indicator, Prefetch, PrefetchValue, RequestError, SelectionBehavior, excerpt,
};
use crate::evaluator::{CallOptions, parse_evaluation_time};
use crate::fhir::{MAX_JSON_DEPTH, Origin, ReadError, TooDeep, nests_deeper_than};
use crate::proto;

fn non_empty(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| Value::String(s.to_owned()))
}

/// Like [`non_empty`], taking the string.
fn non_empty_owned(s: String) -> Option<Value> {
    (!s.is_empty()).then_some(Value::String(s))
}

pub fn hook_request(
    msg: proto::CallHookRequest,
) -> Result<(HookRequest, CallOptions), RequestError> {
    let mut obj = Map::new();
    if let Some(v) = non_empty(&msg.hook) {
        obj.insert("hook".into(), v);
    }
    if let Some(v) = non_empty(&msg.hook_instance) {
        obj.insert("hookInstance".into(), v);
    }
    if let Some(v) = non_empty(&msg.fhir_server) {
        obj.insert("fhirServer".into(), v);
    }
    if let Some(auth) = msg.fhir_authorization {
        let mut a = Map::new();
        a.insert("access_token".into(), Value::String(auth.access_token));
        a.insert("token_type".into(), Value::String(auth.token_type));
        a.insert("expires_in".into(), Value::from(auth.expires_in));
        a.insert("scope".into(), Value::String(auth.scope));
        a.insert("subject".into(), Value::String(auth.subject));
        if let Some(p) = non_empty(&auth.patient) {
            a.insert("patient".into(), p);
        }
        obj.insert("fhirAuthorization".into(), Value::Object(a));
    }
    match (msg.typed_context, msg.context_json.is_empty()) {
        (Some(_), false) => {
            return Err(RequestError::Invalid(
                "send the context as `context_json` or as a typed context, not both".into(),
            ));
        }
        (Some(typed), true) => {
            let (hook, context) = typed_context(typed)?;
            // A typed context names its hook; a request for another hook is refused here, before
            // the context is checked against the wrong hook's fields.
            if !msg.hook.is_empty() && msg.hook != hook {
                return Err(RequestError::Invalid(format!(
                    "the typed context is the context of hook `{hook}`, and `hook` names another"
                )));
            }
            obj.insert("context".into(), Value::Object(context));
        }
        (None, false) => {
            obj.insert(
                "context".into(),
                json_field("context_json", &msg.context_json)?,
            );
        }
        (None, true) => {}
    }
    if !msg.extension_json.is_empty() {
        obj.insert(
            "extension".into(),
            json_field("extension_json", &msg.extension_json)?,
        );
    }
    let mut prefetch = Prefetch::new();
    for (key, text) in &msg.prefetch_json {
        let value = prefetch_value("prefetch_json", key, text)?;
        prefetch.insert(key.clone(), value);
    }
    for (key, bytes) in msg.prefetch {
        // The key is the caller's: a message quotes only a bounded, printable prefix of it.
        if prefetch.contains_key(&key) {
            return Err(RequestError::Invalid(format!(
                "prefetch key `{}` is in both `prefetch_json` and `prefetch`",
                excerpt(&key)
            )));
        }
        let text = utf8(&format!("prefetch[{}]", excerpt(&key)), &bytes)?;
        let value = prefetch_value("prefetch", &key, text)?;
        prefetch.insert(key, value);
    }
    let request = HookRequest::from_parts(obj, prefetch)?;
    let evaluation_time = if msg.evaluation_time.is_empty() {
        None
    } else {
        Some(parse_evaluation_time(&msg.evaluation_time).ok_or_else(|| {
            RequestError::Invalid(
                "`evaluation_time` must be an RFC 3339 date-time or a date".into(),
            )
        })?)
    };
    Ok((
        request,
        CallOptions {
            evaluation_time,
            ..CallOptions::default()
        },
    ))
}

/// One prefetch answer, read by the same one-pass FHIR reader as the HTTP body's `prefetch`.
fn prefetch_value(map: &str, key: &str, text: &str) -> Result<PrefetchValue, RequestError> {
    // The key is the caller's: a message quotes only a bounded, printable prefix of it.
    PrefetchValue::from_json(text, Origin::Prefetch).map_err(|e| match e {
        ReadError::TooDeep(why) => RequestError::TooDeep {
            field: format!("{map}[{}]", excerpt(key)),
            why,
        },
        ReadError::Invalid { line, column } => RequestError::Invalid(format!(
            "`{map}[{}]` must be a FHIR resource, a Bundle or null (line {line}, column {column})",
            excerpt(key)
        )),
    })
}

/// The text of a `bytes` field that carries JSON, checked once here (prost does not check bytes).
fn utf8<'a>(field: &str, bytes: &'a [u8]) -> Result<&'a str, RequestError> {
    std::str::from_utf8(bytes).map_err(|e| {
        RequestError::Invalid(format!(
            "`{field}` is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })
}

/// The JSON context a typed context stands for, and the hook it belongs to. Empty strings, lists and
/// bytes are absent fields; [`crate::cds_hooks::context::validate`] then checks the context exactly
/// as it checks an HTTP request's.
fn typed_context(
    typed: proto::call_hook_request::TypedContext,
) -> Result<(&'static str, Map<String, Value>), RequestError> {
    use proto::call_hook_request::TypedContext;
    let mut context = Map::new();
    let mut ids = |user_id: String, patient_id: String, encounter_id: String| {
        for (name, value) in [
            ("userId", user_id),
            ("patientId", patient_id),
            ("encounterId", encounter_id),
        ] {
            if let Some(v) = non_empty_owned(value) {
                context.insert(name.into(), v);
            }
        }
    };
    let (hook, bundle) = match typed {
        TypedContext::PatientView(c) => {
            ids(c.user_id, c.patient_id, c.encounter_id);
            ("patient-view", None)
        }
        TypedContext::OrderSelect(c) => {
            ids(c.user_id, c.patient_id, c.encounter_id);
            if !c.selections.is_empty() {
                let selections = c.selections.into_iter().map(Value::String).collect();
                context.insert("selections".into(), Value::Array(selections));
            }
            (
                "order-select",
                Some(("draftOrders", "order_select.draft_orders", c.draft_orders)),
            )
        }
        TypedContext::OrderSign(c) => {
            ids(c.user_id, c.patient_id, c.encounter_id);
            (
                "order-sign",
                Some(("draftOrders", "order_sign.draft_orders", c.draft_orders)),
            )
        }
        TypedContext::EncounterStart(c) => {
            ids(c.user_id, c.patient_id, c.encounter_id);
            ("encounter-start", None)
        }
        TypedContext::EncounterDischarge(c) => {
            ids(c.user_id, c.patient_id, c.encounter_id);
            ("encounter-discharge", None)
        }
        TypedContext::AppointmentBook(c) => {
            ids(c.user_id, c.patient_id, c.encounter_id);
            (
                "appointment-book",
                Some((
                    "appointments",
                    "appointment_book.appointments",
                    c.appointments,
                )),
            )
        }
    };
    if let Some((name, field, bytes)) = bundle
        && !bytes.is_empty()
    {
        let text = utf8(field, &bytes)?;
        // The depth limit is the JSON context's, which counts the context object itself: the same
        // Bundle is refused, with the same words, over both transports.
        if nests_deeper_than(text, MAX_JSON_DEPTH - 1) {
            return Err(RequestError::TooDeep {
                field: "context".into(),
                why: TooDeep::Json,
            });
        }
        context.insert(name.into(), json_field(field, text)?);
    }
    Ok((hook, context))
}

pub fn discovery(d: &Discovery) -> proto::DiscoverResponse {
    proto::DiscoverResponse {
        services: d
            .services
            .iter()
            .map(|s| proto::ServiceDescriptor {
                id: s.id.clone(),
                hook: s.hook.clone(),
                title: s.title.clone().unwrap_or_default(),
                description: s.description.clone(),
                prefetch: s.prefetch.clone().into_iter().collect(),
                usage_requirements: s.usage_requirements.clone().unwrap_or_default(),
                version: s
                    .extension
                    .get(crate::cds_hooks::EXTENSION_SERVICE)
                    .and_then(|m| m.get("version"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect(),
    }
}

fn coding(c: &Coding) -> proto::Coding {
    proto::Coding {
        system: c.system.clone(),
        code: c.code.clone(),
        display: c.display.clone().unwrap_or_default(),
    }
}

fn action(a: &Action) -> proto::Action {
    proto::Action {
        r#type: a.kind.as_str().to_owned(),
        description: a.description.clone().unwrap_or_default(),
        resource_json: a
            .resource
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default(),
        resource_id: a.resource_id.clone().unwrap_or_default(),
    }
}

fn fact(f: &Fact) -> proto::Fact {
    proto::Fact {
        name: f.name.clone(),
        value: f.value.clone().unwrap_or_default(),
        unit: f.unit.clone().unwrap_or_default(),
        date: f.date.clone().unwrap_or_default(),
        reference: f.reference.clone().unwrap_or_default(),
        note: f.note.clone().unwrap_or_default(),
        origin: f.origin.clone().unwrap_or_default(),
    }
}

fn explanation(e: &Explanation) -> proto::Explanation {
    proto::Explanation {
        service_id: e.service_id.clone(),
        rule_id: e.rule_id.clone(),
        rule_version: e.rule_version.clone(),
        facts: e.facts.iter().map(fact).collect(),
        evaluated_at: e.evaluated_at.clone(),
        trace_id: e.trace_id.clone().unwrap_or_default(),
        rule_set: e.rule_set.clone().unwrap_or_default(),
    }
}

fn card(c: &Card) -> proto::Card {
    let indicator = match c.indicator {
        Indicator::Info => proto::Indicator::Info,
        Indicator::Warning => proto::Indicator::Warning,
        Indicator::Critical => proto::Indicator::Critical,
    };
    let selection_behavior = match c.selection_behavior {
        None => proto::SelectionBehavior::Unspecified,
        Some(SelectionBehavior::AtMostOne) => proto::SelectionBehavior::AtMostOne,
        Some(SelectionBehavior::Any) => proto::SelectionBehavior::Any,
    };
    proto::Card {
        uuid: c.uuid.clone().unwrap_or_default(),
        summary: c.summary.clone(),
        detail: c.detail.clone().unwrap_or_default(),
        indicator: indicator as i32,
        source: Some(proto::Source {
            label: c.source.label.clone(),
            url: c.source.url.clone().unwrap_or_default(),
            icon: c.source.icon.clone().unwrap_or_default(),
            topic: c.source.topic.as_ref().map(coding),
        }),
        suggestions: c
            .suggestions
            .iter()
            .map(|s| proto::Suggestion {
                label: s.label.clone(),
                uuid: s.uuid.clone().unwrap_or_default(),
                is_recommended: s.is_recommended.unwrap_or(false),
                actions: s.actions.iter().map(action).collect(),
            })
            .collect(),
        selection_behavior: selection_behavior as i32,
        override_reasons: c.override_reasons.iter().map(coding).collect(),
        links: c
            .links
            .iter()
            .map(|l| proto::Link {
                label: l.label.clone(),
                url: l.url.clone(),
                r#type: l.kind.as_str().to_owned(),
                app_context: l.app_context.clone().unwrap_or_default(),
                autolaunchable: l.autolaunchable.unwrap_or(false),
            })
            .collect(),
        explanation: c.explanation().map(explanation),
    }
}

pub fn hook_response(r: &HookResponse) -> proto::CallHookResponse {
    proto::CallHookResponse {
        cards: r.cards.iter().map(card).collect(),
        system_actions: r.system_actions.iter().map(action).collect(),
        diagnostics: r
            .extension
            .diagnostics
            .iter()
            .map(|d| proto::Diagnostic {
                rule_id: d.rule_id.clone(),
                kind: d.kind.clone(),
                message: d.message.clone(),
                line: d.line.unwrap_or(0),
                column: d.column.unwrap_or(0),
                file: d.file.clone().unwrap_or_default(),
            })
            .collect(),
        trace_id: r.extension.trace_id.clone().unwrap_or_default(),
        rule_set: r.extension.rule_set.clone().unwrap_or_default(),
        undecided: r
            .extension
            .undecided
            .iter()
            .map(|u| proto::Undecided {
                rule_id: u.rule_id.clone(),
                condition: u.condition.clone(),
                absent: u.absent.clone(),
            })
            .collect(),
    }
}

pub fn feedback(msg: &proto::SubmitFeedbackRequest) -> Result<FeedbackRequest, RequestError> {
    let items: Vec<Value> = msg
        .feedback
        .iter()
        .map(|f| {
            let mut obj = Map::new();
            for (key, value) in [
                ("card", &f.card),
                ("outcome", &f.outcome),
                ("outcomeTimestamp", &f.outcome_timestamp),
            ] {
                if let Some(v) = non_empty(value) {
                    obj.insert(key.into(), v);
                }
            }
            if !f.accepted_suggestions.is_empty() {
                let ids = f
                    .accepted_suggestions
                    .iter()
                    .map(|s| serde_json::json!({"id": s.id}))
                    .collect();
                obj.insert("acceptedSuggestions".into(), Value::Array(ids));
            }
            if let Some(reason) = &f.override_reason {
                let mut r = Map::new();
                if let Some(c) = &reason.reason {
                    let mut coding = Map::new();
                    coding.insert("system".into(), Value::String(c.system.clone()));
                    coding.insert("code".into(), Value::String(c.code.clone()));
                    if !c.display.is_empty() {
                        coding.insert("display".into(), Value::String(c.display.clone()));
                    }
                    r.insert("reason".into(), Value::Object(coding));
                }
                if let Some(comment) = non_empty(&reason.user_comment) {
                    r.insert("userComment".into(), comment);
                }
                obj.insert("overrideReason".into(), Value::Object(r));
            }
            Value::Object(obj)
        })
        .collect();
    FeedbackRequest::from_value(&serde_json::json!({"feedback": items}))
}

use crate::explain::RuleVerdict;

/// The explain report (`Explain`), from the same report the HTTP endpoint and the CLI give.
pub fn explain_response(
    report: &crate::explain::ExplainReport,
    response: &HookResponse,
) -> proto::ExplainResponse {
    proto::ExplainResponse {
        service_id: report.service_id.clone(),
        hook: report.hook.clone(),
        evaluated_at: report.evaluated_at.clone(),
        duration_us: report.duration_us,
        rules: report
            .rules
            .iter()
            .map(|r| proto::RuleReport {
                rule_id: r.rule_id.clone(),
                rule_version: r.rule_version.clone(),
                file: r.file.clone().unwrap_or_default(),
                verdict: match r.verdict {
                    RuleVerdict::Fired => "fired",
                    RuleVerdict::NotFired => "not-fired",
                    RuleVerdict::Error => "error",
                }
                .to_owned(),
                failed_condition: r.failed_condition.clone().unwrap_or_default(),
                error: r.error.as_ref().map(|e| proto::Diagnostic {
                    rule_id: r.rule_id.clone(),
                    kind: e.kind.clone(),
                    message: e.message.clone(),
                    line: e.line.unwrap_or_default(),
                    column: e.column.unwrap_or_default(),
                    file: r.file.clone().unwrap_or_default(),
                }),
                conditions: r
                    .conditions
                    .iter()
                    .map(|c| proto::Condition {
                        name: c.name.clone(),
                        met: c.met,
                        unknown: c.unknown.clone(),
                        compared: c.compared.as_ref().map(|v| proto::ComparedValues {
                            left: v.left.clone(),
                            op: v.op.clone(),
                            right: v.right.clone(),
                        }),
                    })
                    .collect(),
                facts: r.facts.iter().map(fact).collect(),
                prints: r.prints.clone(),
                duration_us: r.duration_us,
                operations: r.operations,
                mode: r.mode.as_str().to_owned(),
            })
            .collect(),
        response: Some(hook_response(response)),
        rule_set: report.rule_set.clone(),
        disagreements: report
            .disagreements
            .iter()
            .map(|d| proto::Disagreement {
                rule_id: d.rule_id.clone(),
                active_version: d.active_version.clone(),
                candidate_version: d.candidate_version.clone(),
                active_verdict: d.active_verdict.clone(),
                candidate_verdict: d.candidate_verdict.clone(),
                differences: d.differences.clone(),
            })
            .collect(),
    }
}

/// A reload's report as `RuleSetAdmin.Reload` answers it.
pub fn reload_response(report: &crate::rule_set::ReloadReport) -> proto::ReloadResponse {
    use crate::rule_set::ReloadResult;
    let mut response = proto::ReloadResponse {
        result: report.result.as_str().to_owned(),
        duration_ms: report.duration_ms,
        test_cases: u32::try_from(report.test_cases).unwrap_or(u32::MAX),
        ..proto::ReloadResponse::default()
    };
    match &report.result {
        ReloadResult::Swapped { from, to } => {
            response.serving = to.clone();
            response.previous = from.clone();
        }
        ReloadResult::Unchanged { version } => response.serving = version.clone(),
        ReloadResult::Rejected {
            serving,
            errors,
            affected_services,
        } => {
            response.serving = serving.clone();
            response.errors = errors.clone();
            response.affected_services = affected_services.clone();
        }
    }
    response
}

/// The store's figures as `Analytics.RuleAnalytics` answers them.
pub fn rule_analytics_response(
    analytics: &crate::store::Analytics,
) -> proto::RuleAnalyticsResponse {
    let rfc3339 =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    proto::RuleAnalyticsResponse {
        since: rfc3339(&analytics.window.since),
        until: rfc3339(&analytics.window.until),
        database: analytics.database.to_owned(),
        calls: analytics.calls.clone().into_iter().collect(),
        rules: analytics
            .rules
            .iter()
            .map(|r| proto::RuleFigures {
                service_id: r.service_id.clone(),
                rule_id: r.rule_id.clone(),
                rule_version: r.rule_version.clone(),
                mode: r.mode.clone(),
                shown: r.shown,
                accepted: r.accepted,
                overridden: r.overridden,
                no_feedback: r.no_feedback,
                override_rate: r.override_rate,
                suggestions_accepted: r.suggestions_accepted,
                patients: r.patients,
                repeats: r.repeats,
                cards_per_patient: r.cards_per_patient,
                calls: r.calls,
                firings_per_1000_calls: r.firings_per_1000_calls,
                indicators: r.indicators.clone().into_iter().collect(),
                override_reasons: r
                    .override_reasons
                    .iter()
                    .map(|o| proto::RankedOverrideReason {
                        system: o.system.clone(),
                        code: o.code.clone(),
                        display: o.display.clone(),
                        count: o.count,
                    })
                    .collect(),
            })
            .collect(),
        daily: analytics
            .daily
            .iter()
            .map(|d| proto::DailyFiring {
                day: d.day.clone(),
                service_id: d.service_id.clone(),
                rule_id: d.rule_id.clone(),
                mode: d.mode.clone(),
                cards: d.cards,
                calls: d.calls,
            })
            .collect(),
        drift: analytics
            .drift
            .iter()
            .map(|d| proto::RuleDrift {
                service_id: d.service_id.clone(),
                rule_id: d.rule_id.clone(),
                today_rate: d.today_rate,
                today_calls: d.today_calls,
                baseline_rate: d.baseline_rate,
                baseline_calls: d.baseline_calls,
                ratio: d.ratio,
                flagged: d.flagged,
                direction: d.direction.to_owned(),
            })
            .collect(),
        drift_factor: analytics.drift_factor,
        drift_baseline_days: analytics.drift_baseline_days,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::cds_hooks::context;
    use crate::proto::call_hook_request::TypedContext;

    /// Stands for patient data: no refusal may quote it.
    const SECRET: &str = "SECRET-PATIENT-4711";

    /// JSON-ish bytes: arbitrary bytes, truncated or deep JSON, resources, Bundles, other values, all
    /// carrying [`SECRET`].
    fn json_bytes() -> BoxedStrategy<Vec<u8>> {
        let bundle = format!(
            r#"{{"resourceType": "Bundle", "entry": [{{"resource": {{"resourceType": "MedicationRequest", "id": "{SECRET}"}}}}]}}"#
        );
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            Just(bundle.clone().into_bytes()),
            (0..bundle.len()).prop_map(move |cut| bundle.as_bytes()[..cut].to_vec()),
            (0usize..300).prop_map(|depth| format!(
                "{}\"{SECRET}\"{}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
            .into_bytes()),
            Just(format!(r#"{{"resourceType": "Bundle", "entry": "{SECRET}"}}"#).into_bytes()),
            Just(format!(r#"{{"resourceType": "Patient", "id": "{SECRET}"}}"#).into_bytes()),
            Just(b"null".to_vec()),
            Just(format!("\"{SECRET}\"").into_bytes()),
            Just(vec![b'{', 0xff, 0xfe, b'}']),
        ]
        .boxed()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(SECRET.to_owned()),
            Just(format!("Patient/{SECRET}")),
            Just(format!("{SECRET}/")),
            ".{0,12}",
        ]
        .boxed()
    }

    fn ids() -> impl Strategy<Value = (String, String, String)> {
        (text(), text(), text())
    }

    fn typed_context() -> BoxedStrategy<TypedContext> {
        prop_oneof![
            ids().prop_map(|(user_id, patient_id, encounter_id)| {
                TypedContext::PatientView(proto::PatientViewContext {
                    user_id,
                    patient_id,
                    encounter_id,
                })
            }),
            (ids(), proptest::collection::vec(text(), 0..3), json_bytes()).prop_map(
                |((user_id, patient_id, encounter_id), selections, draft_orders)| {
                    TypedContext::OrderSelect(proto::OrderSelectContext {
                        user_id,
                        patient_id,
                        encounter_id,
                        selections,
                        draft_orders,
                    })
                }
            ),
            (ids(), json_bytes()).prop_map(
                |((user_id, patient_id, encounter_id), draft_orders)| {
                    TypedContext::OrderSign(proto::OrderSignContext {
                        user_id,
                        patient_id,
                        encounter_id,
                        draft_orders,
                    })
                }
            ),
            ids().prop_map(|(user_id, patient_id, encounter_id)| {
                TypedContext::EncounterStart(proto::EncounterContext {
                    user_id,
                    patient_id,
                    encounter_id,
                })
            }),
            ids().prop_map(|(user_id, patient_id, encounter_id)| {
                TypedContext::EncounterDischarge(proto::EncounterContext {
                    user_id,
                    patient_id,
                    encounter_id,
                })
            }),
            (ids(), json_bytes()).prop_map(
                |((user_id, patient_id, encounter_id), appointments)| {
                    TypedContext::AppointmentBook(proto::AppointmentBookContext {
                        user_id,
                        patient_id,
                        encounter_id,
                        appointments,
                    })
                }
            ),
        ]
        .boxed()
    }

    fn hook() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(context::STANDARD_HOOKS).prop_map(str::to_owned),
            Just(String::new()),
            Just(SECRET.to_owned()),
        ]
    }

    proptest! {
        // Any typed context, any prefetch bytes, any hook: a request or a refusal that quotes
        // nothing of the input, never a panic; an accepted context then passes or fails the hook's
        // check, again without a panic.
        #[test]
        fn any_typed_input_is_read_or_refused_cleanly(
            hook in hook(),
            typed in proptest::option::of(typed_context()),
            context_json in prop_oneof![Just(String::new()), Just(format!(r#"{{"patientId": "{SECRET}"}}"#))],
            prefetch in proptest::collection::hash_map("[a-z]{1,6}", json_bytes(), 0..3),
            prefetch_json in proptest::collection::hash_map("[a-z]{1,6}", Just(format!(r#"{{"resourceType": "Patient", "id": "{SECRET}"}}"#)), 0..2),
        ) {
            let message = proto::CallHookRequest {
                service_id: "svc".into(),
                hook,
                hook_instance: "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea".into(),
                context_json,
                typed_context: typed,
                prefetch,
                prefetch_json,
                ..proto::CallHookRequest::default()
            };
            match hook_request(message) {
                Ok((request, _)) => {
                    if let Err(e) = context::validate(&request.hook, &request.context) {
                        prop_assert!(!e.to_string().contains(SECRET), "{e}");
                    }
                }
                Err(e) => prop_assert!(!e.to_string().contains(SECRET), "{e}"),
            }
        }

        // A typed context reads as exactly the request its JSON reads as over HTTP.
        #[test]
        fn a_typed_context_is_the_json_context(
            typed in typed_context(),
            prefetch in proptest::collection::btree_map("[a-z]{1,6}", json_bytes(), 0..3),
        ) {
            let Some((hook, json_context)) = equivalent_json(&typed) else {
                // A Bundle that is not JSON: the HTTP body would not be JSON either.
                let message = proto::CallHookRequest {
                    hook: "order-sign".into(),
                    hook_instance: "h".into(),
                    typed_context: Some(typed),
                    ..proto::CallHookRequest::default()
                };
                prop_assert!(hook_request(message).is_err());
                return Ok(());
            };
            let body = json!({
                "hook": hook,
                "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": json_context,
            });
            let mut body_text = serde_json::to_string(&body).unwrap();
            // The prefetch as an EHR would send it: the same bytes, inside the body.
            if prefetch.values().all(|v| std::str::from_utf8(v).is_ok()) {
                let entries: Vec<String> = prefetch
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": {}", String::from_utf8_lossy(v)))
                    .collect();
                body_text.pop();
                body_text.push_str(&format!(", \"prefetch\": {{{}}}}}", entries.join(", ")));
            } else {
                return Ok(());
            }
            let over_http = HookRequest::from_json_bytes(body_text.as_bytes());
            let message = proto::CallHookRequest {
                hook: hook.to_owned(),
                hook_instance: "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea".into(),
                typed_context: Some(typed),
                prefetch: prefetch.into_iter().collect(),
                ..proto::CallHookRequest::default()
            };
            let over_grpc = hook_request(message).map(|(request, _)| request);
            match (over_http, over_grpc) {
                (Ok(http), Ok(grpc)) => {
                    prop_assert_eq!(&http.hook, &grpc.hook);
                    prop_assert_eq!(&http.context, &grpc.context);
                    prop_assert_eq!(prefetch_texts(&http.prefetch), prefetch_texts(&grpc.prefetch));
                    prop_assert_eq!(
                        context::validate(&http.hook, &http.context),
                        context::validate(&grpc.hook, &grpc.context)
                    );
                }
                // Each transport names the field its own way; both refuse.
                (Err(_), Err(_)) => {}
                (http, grpc) => prop_assert!(false, "HTTP {:?} vs gRPC {:?}", http.err(), grpc.err()),
            }
        }
    }

    /// The hook and JSON context a typed context stands for (empty = absent); `None` when its
    /// Bundle is not JSON.
    fn equivalent_json(typed: &TypedContext) -> Option<(&'static str, Value)> {
        let mut context = serde_json::Map::new();
        let mut ids = |u: &str, p: &str, e: &str| {
            for (k, v) in [("userId", u), ("patientId", p), ("encounterId", e)] {
                if !v.is_empty() {
                    context.insert(k.into(), Value::String(v.to_owned()));
                }
            }
        };
        let (hook, bundle) = match typed {
            TypedContext::PatientView(c) => {
                ids(&c.user_id, &c.patient_id, &c.encounter_id);
                ("patient-view", None)
            }
            TypedContext::EncounterStart(c) => {
                ids(&c.user_id, &c.patient_id, &c.encounter_id);
                ("encounter-start", None)
            }
            TypedContext::EncounterDischarge(c) => {
                ids(&c.user_id, &c.patient_id, &c.encounter_id);
                ("encounter-discharge", None)
            }
            TypedContext::OrderSelect(c) => {
                ids(&c.user_id, &c.patient_id, &c.encounter_id);
                if !c.selections.is_empty() {
                    context.insert("selections".into(), json!(c.selections));
                }
                ("order-select", Some(("draftOrders", &c.draft_orders)))
            }
            TypedContext::OrderSign(c) => {
                ids(&c.user_id, &c.patient_id, &c.encounter_id);
                ("order-sign", Some(("draftOrders", &c.draft_orders)))
            }
            TypedContext::AppointmentBook(c) => {
                ids(&c.user_id, &c.patient_id, &c.encounter_id);
                ("appointment-book", Some(("appointments", &c.appointments)))
            }
        };
        if let Some((name, bytes)) = bundle
            && !bytes.is_empty()
        {
            context.insert(name.into(), serde_json::from_slice::<Value>(bytes).ok()?);
        }
        Some((hook, Value::Object(context)))
    }

    fn prefetch_texts(prefetch: &Prefetch) -> Vec<(String, Vec<String>)> {
        prefetch
            .iter()
            .map(|(key, value)| {
                let texts = match value {
                    PrefetchValue::Null => vec!["null".to_owned()],
                    PrefetchValue::Resource(r) => vec![r.text().to_owned()],
                    PrefetchValue::Bundle(entries) => {
                        entries.iter().map(|r| r.text().to_owned()).collect()
                    }
                };
                (key.clone(), texts)
            })
            .collect()
    }
}
