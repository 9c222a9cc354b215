//! Where cards are built: a rule's card spec becomes a spec-valid CDS Hooks card, and every card that
//! leaves Cardinal gets a fresh uuid and its explanation (machine-readable in `extension`, and a short
//! "Why" section in `detail` for the clinician). The rules' outcomes become the response here too.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::cds_hooks::response::ResponseExtension;
use crate::cds_hooks::{Diagnostic, HookResponse, Undecided};
use crate::engine::{RuleOutcome, Verdict};

use crate::cds_hooks::card::MAX_SUMMARY_CHARS;
use crate::cds_hooks::{
    Action, ActionType, Card, Coding, Explanation, Indicator, Link, LinkType, SelectionBehavior,
    Source, Suggestion,
};

type Obj = Map<String, Value>;

fn take_str(obj: &mut Obj, field: &str, path: &str) -> Result<Option<String>, String> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{path}{field}` must be a string")),
    }
}

fn take_bool(obj: &mut Obj, field: &str, path: &str) -> Result<Option<bool>, String> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(format!("`{path}{field}` must be true or false")),
    }
}

fn take_array(obj: &mut Obj, field: &str, path: &str) -> Result<Vec<Value>, String> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("`{path}{field}` must be an array")),
    }
}

fn object(value: Value, path: &str) -> Result<Obj, String> {
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(format!("`{path}` must be a map")),
    }
}

fn coding(value: Value, path: &str, display_required: bool) -> Result<Coding, String> {
    let mut obj = object(value, path)?;
    let p = format!("{path}.");
    let system = take_str(&mut obj, "system", &p)?.ok_or(format!("`{p}system` is required"))?;
    let code = take_str(&mut obj, "code", &p)?.ok_or(format!("`{p}code` is required"))?;
    let display = take_str(&mut obj, "display", &p)?;
    if display_required && display.is_none() {
        return Err(format!("`{p}display` is required"));
    }
    Ok(Coding {
        system,
        code,
        display,
    })
}

fn source(value: Value) -> Result<Source, String> {
    let mut obj = object(value, "source")?;
    Ok(Source {
        label: take_str(&mut obj, "label", "source.")?.ok_or("`source.label` is required")?,
        url: take_str(&mut obj, "url", "source.")?,
        icon: take_str(&mut obj, "icon", "source.")?,
        topic: obj
            .remove("topic")
            .map(|t| coding(t, "source.topic", false))
            .transpose()?,
    })
}

fn action(value: Value, path: &str) -> Result<Action, String> {
    let mut obj = object(value, path)?;
    let p = format!("{path}.");
    let kind = take_str(&mut obj, "type", &p)?.ok_or(format!("`{p}type` is required"))?;
    let kind =
        ActionType::parse(&kind).ok_or(format!("`{p}type` must be create, update or delete"))?;
    let resource = match obj.remove("resource") {
        None | Some(Value::Null) => None,
        Some(r)
            if r.get("resourceType")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty()) =>
        {
            Some(r)
        }
        Some(_) => {
            return Err(format!(
                "`{p}resource` must be a FHIR resource with a `resourceType`"
            ));
        }
    };
    let description =
        take_str(&mut obj, "description", &p)?.ok_or(format!("`{p}description` is required"))?;
    let resource_id = take_str(&mut obj, "resourceId", &p)?;
    match kind {
        ActionType::Create | ActionType::Update if resource.is_none() => {
            return Err(format!(
                "`{p}resource` is required for a {} action",
                kind.as_str()
            ));
        }
        ActionType::Delete if resource_id.is_none() => {
            return Err(format!("`{p}resourceId` is required for a delete action"));
        }
        _ => {}
    }
    Ok(Action {
        kind,
        description: Some(description),
        resource,
        resource_id,
    })
}

fn suggestion(value: Value, path: &str) -> Result<Suggestion, String> {
    let mut obj = object(value, path)?;
    let p = format!("{path}.");
    Ok(Suggestion {
        label: take_str(&mut obj, "label", &p)?.ok_or(format!("`{p}label` is required"))?,
        uuid: take_str(&mut obj, "uuid", &p)?,
        is_recommended: take_bool(&mut obj, "isRecommended", &p)?,
        actions: take_array(&mut obj, "actions", &p)?
            .into_iter()
            .enumerate()
            .map(|(i, a)| action(a, &format!("{p}actions[{i}]")))
            .collect::<Result<_, _>>()?,
    })
}

fn link(value: Value, path: &str) -> Result<Link, String> {
    let mut obj = object(value, path)?;
    let p = format!("{path}.");
    let kind = match take_str(&mut obj, "type", &p)?.as_deref() {
        None | Some("absolute") => LinkType::Absolute,
        Some("smart") => LinkType::Smart,
        Some(_) => return Err(format!("`{p}type` must be absolute or smart")),
    };
    let app_context = take_str(&mut obj, "appContext", &p)?;
    if app_context.is_some() && kind != LinkType::Smart {
        return Err(format!("`{p}appContext` is only allowed on smart links"));
    }
    Ok(Link {
        label: take_str(&mut obj, "label", &p)?.ok_or(format!("`{p}label` is required"))?,
        url: take_str(&mut obj, "url", &p)?.ok_or(format!("`{p}url` is required"))?,
        kind,
        app_context,
        autolaunchable: take_bool(&mut obj, "autolaunchable", &p)?,
    })
}

/// Validates what a rule passed to `system_action(...)`: an action as on a card (type, description,
/// and the resource or resource id its type needs).
pub fn system_action_from_spec(spec: Value) -> Result<Action, String> {
    action(spec, "system_action")
}

/// Validates what a rule passed to `card(...)`. Errors name the field and what is wrong.
pub fn from_rule_spec(spec: Value, default_source: &Source) -> Result<Card, String> {
    let mut obj = object(spec, "card")?;
    let summary = take_str(&mut obj, "summary", "")?.ok_or("`summary` is required")?;
    let length = summary.chars().count();
    if length > MAX_SUMMARY_CHARS {
        return Err(format!(
            "`summary` has {length} characters; CDS Hooks allows at most {MAX_SUMMARY_CHARS}"
        ));
    }
    let indicator = take_str(&mut obj, "indicator", "")?.ok_or("`indicator` is required")?;
    let indicator =
        Indicator::parse(&indicator).ok_or("`indicator` must be info, warning or critical")?;
    let source = match obj.remove("source") {
        None | Some(Value::Null) => default_source.clone(),
        Some(s) => source(s)?,
    };
    let suggestions: Vec<Suggestion> = take_array(&mut obj, "suggestions", "")?
        .into_iter()
        .enumerate()
        .map(|(i, s)| suggestion(s, &format!("suggestions[{i}]")))
        .collect::<Result<_, _>>()?;
    let selection_behavior = match take_str(&mut obj, "selectionBehavior", "")? {
        Some(s) => Some(
            SelectionBehavior::parse(&s).ok_or("`selectionBehavior` must be at-most-one or any")?,
        ),
        // Required by the spec once there are suggestions; "pick one" is the safe reading.
        None if !suggestions.is_empty() => Some(SelectionBehavior::AtMostOne),
        None => None,
    };
    // Meaningless without suggestions (a rule may build the list conditionally): left out.
    let selection_behavior = selection_behavior.filter(|_| !suggestions.is_empty());
    let override_reasons = take_array(&mut obj, "overrideReasons", "")?
        .into_iter()
        .enumerate()
        .map(|(i, c)| coding(c, &format!("overrideReasons[{i}]"), true))
        .collect::<Result<_, _>>()?;
    let links = take_array(&mut obj, "links", "")?
        .into_iter()
        .enumerate()
        .map(|(i, l)| link(l, &format!("links[{i}]")))
        .collect::<Result<_, _>>()?;
    let detail = take_str(&mut obj, "detail", "")?;
    // Cardinal's own field, not CDS Hooks': the key repeat suppression compares.
    let repeat_key = take_str(&mut obj, "repeatKey", "")?;
    if let Some(unknown) = obj.keys().next() {
        return Err(format!("unknown card field `{unknown}`"));
    }
    Ok(Card {
        uuid: None,
        summary,
        detail,
        indicator,
        source,
        suggestions,
        selection_behavior,
        override_reasons,
        links,
        extension: None,
        repeat_key,
    })
}

/// Gives a rule's card its identity and explanation, ready to leave Cardinal.
pub fn finish(mut card: Card, explanation: Explanation) -> Card {
    // Time-ordered (v7): the store keys every card by it and appends instead of scattering.
    card.uuid = Some(Uuid::now_v7().to_string());
    for suggestion in &mut card.suggestions {
        if suggestion.uuid.is_none() {
            suggestion.uuid = Some(Uuid::new_v4().to_string());
        }
    }
    // Value-set matches stay in the machine-readable explanation; the clinician reads the rule's facts.
    let why: Vec<String> = explanation
        .facts
        .iter()
        .filter(|f| f.origin.as_deref() != Some("terminology"))
        .map(|f| f.to_markdown_line())
        .collect();
    if !why.is_empty() {
        let section = format!("**Why this card**\n{}", why.join("\n"));
        card.detail = Some(match card.detail.take() {
            Some(detail) => format!("{detail}\n\n{section}"),
            None => section,
        });
    }
    let mut extension = card.extension.take().unwrap_or_default();
    extension.explanation = Some(explanation);
    card.extension = Some(extension);
    card
}

/// How much one response may carry. An EHR renders every card it gets: a rule that emits hundreds,
/// or megabytes, would bury the others and stall the clinician's screen.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    pub max_cards: usize,
    pub max_bytes: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_cards: 50,
            max_bytes: 1024 * 1024,
        }
    }
}

/// What every card and the response are stamped with.
#[derive(Debug, Clone)]
pub struct Stamp<'a> {
    pub service_id: &'a str,
    /// "Now" for the rules.
    pub evaluated_at: DateTime<Utc>,
    pub trace_id: Option<String>,
    /// The version of the rule set that produced the response.
    pub rule_set: &'a str,
}

/// The response to a call: the cards of every rule that fired, in rule order, each explained; and a
/// diagnostic for every rule that failed. A rule whose cards would take the response past `limits`
/// contributes none of them and is reported instead (kind `response-limit`); the rules before and
/// after it are answered as usual.
pub fn response(
    stamp: &Stamp<'_>,
    outcomes: &[RuleOutcome],
    limits: ResponseLimits,
) -> HookResponse {
    let service_id = stamp.service_id;
    let trace_id = stamp.trace_id.clone();
    let rule_set = stamp.rule_set.to_owned();
    let evaluated_at = stamp
        .evaluated_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut cards = Vec::new();
    let mut system_actions = Vec::new();
    let mut bytes = 0usize;
    let mut diagnostics = Vec::new();
    let mut undecided = Vec::new();
    // Silent and candidate rules are recorded elsewhere; the EHR sees only the rules in use.
    for outcome in outcomes.iter().filter(|o| o.mode.is_active()) {
        match &outcome.verdict {
            Verdict::Fired => {
                let finished: Vec<Card> = outcome
                    .cards
                    .iter()
                    .map(|card| {
                        let explanation = Explanation {
                            service_id: service_id.to_owned(),
                            rule_id: outcome.rule_id.clone(),
                            rule_version: outcome.rule_version.clone(),
                            facts: outcome.facts.clone(),
                            evaluated_at: evaluated_at.clone(),
                            trace_id: trace_id.clone(),
                            rule_set: Some(rule_set.clone()),
                        };
                        finish(card.clone(), explanation)
                    })
                    .collect();
                let size: usize = finished
                    .iter()
                    .map(|c| serde_json::to_vec(c).map_or(usize::MAX, |v| v.len()))
                    .fold(0, usize::saturating_add);
                if cards.len() + finished.len() > limits.max_cards
                    || bytes.saturating_add(size) > limits.max_bytes
                {
                    diagnostics.push(Diagnostic {
                        rule_id: outcome.rule_id.clone(),
                        kind: "response-limit".into(),
                        message: format!(
                            "the rule's {} card(s) were left out: the response may carry at most {} cards and {} bytes of cards",
                            finished.len(),
                            limits.max_cards,
                            limits.max_bytes
                        ),
                        file: None,
                        line: None,
                        column: None,
                    });
                    continue;
                }
                bytes = bytes.saturating_add(size);
                cards.extend(finished);
                system_actions.extend(outcome.system_actions.iter().cloned());
            }
            Verdict::NotFired => {
                if let Some(c) = outcome.undecided() {
                    undecided.push(Undecided {
                        rule_id: outcome.rule_id.clone(),
                        condition: c.name.clone(),
                        absent: c.unknown.clone(),
                    });
                }
            }
            Verdict::Error(err) => diagnostics.push(Diagnostic {
                rule_id: outcome.rule_id.clone(),
                kind: err.kind.as_str().to_owned(),
                message: err.message.clone(),
                file: err.file.clone(),
                line: err.line,
                column: err.column,
            }),
        }
    }
    HookResponse {
        cards,
        system_actions,
        extension: ResponseExtension {
            diagnostics,
            trace_id,
            rule_set: Some(rule_set),
            undecided,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src() -> Source {
        Source {
            label: "Cardinal".into(),
            ..Source::default()
        }
    }

    #[test]
    fn minimal_card_takes_default_source() {
        let card = from_rule_spec(json!({"summary": "Hi", "indicator": "info"}), &src());
        let card = card.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(card.source.label, "Cardinal");
        let text = serde_json::to_string(&card).unwrap_or_default();
        assert!(!text.contains("null") && !text.contains("[]"), "{text}");
    }

    #[test]
    fn rejects_long_summary_bad_indicator_and_unknown_fields() {
        let long = "x".repeat(140);
        let err = from_rule_spec(json!({"summary": long, "indicator": "info"}), &src());
        assert!(err.unwrap_err().contains("140 characters"));
        let err = from_rule_spec(json!({"summary": "a", "indicator": "urgent"}), &src());
        assert!(err.unwrap_err().contains("indicator"));
        let err = from_rule_spec(
            json!({"summary": "a", "indicator": "info", "sumary": 1}),
            &src(),
        );
        assert!(err.unwrap_err().contains("sumary"));
    }

    #[test]
    fn suggestions_get_selection_behavior_and_validated_actions() {
        let spec = json!({"summary": "a", "indicator": "warning",
            "suggestions": [{"label": "Cancel", "actions": [{"type": "delete", "description": "x", "resourceId": "MedicationRequest/1"}]}]});
        let card = from_rule_spec(spec, &src()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(card.selection_behavior, Some(SelectionBehavior::AtMostOne));
        let spec = json!({"summary": "a", "indicator": "warning",
            "suggestions": [{"label": "Cancel", "actions": [{"type": "delete", "description": "x"}]}]});
        assert!(
            from_rule_spec(spec, &src())
                .unwrap_err()
                .contains("resourceId")
        );
    }
}
