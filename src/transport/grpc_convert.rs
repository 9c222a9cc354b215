//! Between the CDS Hooks model and the protobuf messages. Incoming messages are rebuilt as the JSON
//! the HTTP transport would have received and validated by the same code, so both transports accept
//! and refuse exactly the same requests.

use serde_json::{Map, Value};

use crate::cds_hooks::request::json_field;
use crate::cds_hooks::{
    Action, Card, Coding, Discovery, Explanation, Fact, FeedbackRequest, HookRequest, HookResponse,
    Indicator, Prefetch, PrefetchValue, RequestError, SelectionBehavior, excerpt,
};
use crate::evaluator::{CallOptions, parse_evaluation_time};
use crate::fhir::{Origin, ReadError};
use crate::proto;

fn non_empty(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| Value::String(s.to_owned()))
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
    if !msg.context_json.is_empty() {
        obj.insert(
            "context".into(),
            json_field("context_json", &msg.context_json)?,
        );
    }
    if !msg.extension_json.is_empty() {
        obj.insert(
            "extension".into(),
            json_field("extension_json", &msg.extension_json)?,
        );
    }
    let mut prefetch = Prefetch::new();
    for (key, text) in &msg.prefetch_json {
        // The key is the caller's: a message quotes only a bounded, printable prefix of it.
        let value = PrefetchValue::from_json(text, Origin::Prefetch).map_err(|e| match e {
            ReadError::TooDeep(why) => RequestError::TooDeep {
                field: format!("prefetch_json[{}]", excerpt(key)),
                why,
            },
            ReadError::Invalid { line, column } => RequestError::Invalid(format!(
                "`prefetch_json[{}]` must be a FHIR resource, a Bundle or null (line {line}, column {column})",
                excerpt(key)
            )),
        })?;
        prefetch.insert(key.clone(), value);
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
